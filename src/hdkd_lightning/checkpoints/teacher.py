"""Find and load the teacher of a distillation run, and refuse one that does not fit the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from hdkd_lightning.checkpoints import (
    checkpoint_val_score,
    is_project_checkpoint,
    network_from_checkpoint,
    read_checkpoint,
)
from hdkd_lightning.checkpoints.runs import find_latest_completed_run, iter_run_dirs
from hdkd_lightning.config import ConfigError

__all__ = ["TeacherSpec", "resolve_teacher_path", "load_teacher"]


@dataclass
class TeacherSpec:
    path: Path
    arch: str
    net_kwargs: Dict
    state_dict: Dict[str, torch.Tensor]
    class_names: Optional[List[str]]  # None for original-code files (they carry no names)
    image_size: Optional[int]
    val_balanced_accuracy: Optional[float] = None  # of these weights, when the checkpoint records it

    def summary(self) -> Dict[str, Any]:
        """What a distillation run records about its teacher (printed and stored in its config)."""
        return {"path": str(Path(self.path).resolve()), "arch": self.arch,
                "val_balanced_accuracy": self.val_balanced_accuracy}


def resolve_teacher_path(ckpt_path: Optional[str], experiment: Optional[str], log_dir: Path) -> Path:
    """``model.teacher.ckpt_path`` if given, else the best checkpoint of the latest *completed*
    run of the teacher experiment (unfinished, failed and debug runs are never picked)."""
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.teacher.ckpt_path={ckpt_path}: no such file; give the path of a teacher "
                              f"checkpoint (…/checkpoints/best.ckpt) or an original-code weights file")
        return path
    if not experiment:
        raise ConfigError("no teacher: set model.teacher.ckpt_path=<teacher checkpoint> or "
                          "model.teacher.experiment=<teacher experiment name>")
    found = find_latest_completed_run(log_dir, experiment)
    if found is None:
        unfinished = sum(1 for _ in iter_run_dirs(log_dir, experiment))
        extra = (f" ({unfinished} run(s) there are unfinished or failed: finish one with "
                 f"hdkd-train experiment={experiment} ckpt_path=last)" if unfinished else "")
        raise ConfigError(
            f"no completed teacher run found for experiment '{experiment}' under {Path(log_dir) / experiment}"
            f"{extra}: train it first (hdkd-train experiment={experiment}) or set "
            f"model.teacher.ckpt_path=<checkpoint>"
        )
    return found.run_dir / "checkpoints" / "best.ckpt"


def load_teacher(path: Path) -> TeacherSpec:
    """A project checkpoint (its deployable network) or a weights file of the original code."""
    ckpt = read_checkpoint(path)
    if is_project_checkpoint(ckpt):
        net, meta = network_from_checkpoint(path)
        return TeacherSpec(path, meta["arch"], dict(meta["net_kwargs"]), net.state_dict(),
                           list(meta["class_names"]), meta.get("image_size"),
                           checkpoint_val_score(ckpt, "val/balanced_accuracy"))
    from hdkd_lightning.models import load_original_checkpoint

    net = load_original_checkpoint(path, "hdkd_teacher")
    kwargs = dict(num_classes=net.num_classes, in_chans=net.in_chans)
    return TeacherSpec(path, "hdkd_teacher", kwargs, net.state_dict(), None, None)


def check_teacher_fits(teacher: TeacherSpec, class_names: List[str], image_size: int, data_name: str) -> None:
    """Classes, class names and image size of the teacher must equal the data's."""
    fix = "train a teacher on this data or set model.teacher.ckpt_path to a matching one"
    n_teacher = teacher.net_kwargs.get("num_classes")
    if n_teacher != len(class_names):
        raise ConfigError(f"teacher {teacher.path} has {n_teacher} classes but data={data_name} has "
                          f"{len(class_names)} ({class_names}); {fix}")
    if teacher.class_names is not None and list(teacher.class_names) != list(class_names):
        raise ConfigError(f"teacher {teacher.path} classes {teacher.class_names} differ from data={data_name} "
                          f"classes {list(class_names)}; {fix}")
    if teacher.image_size is not None and int(teacher.image_size) != int(image_size):
        raise ConfigError(f"teacher {teacher.path} was trained at image size {teacher.image_size} but "
                          f"data.image_size={image_size}; set data.image_size={teacher.image_size} or {fix}")
