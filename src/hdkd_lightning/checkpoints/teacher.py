"""Find and load the teacher of a distillation run, and refuse one that does not fit the data.

A teacher fits when its classes and image size are the data's, and when none of the student's
validation or test images was a training image of the teacher (its data record,
:mod:`hdkd_lightning.data.provenance`): a teacher that saw them would pass their labels to the
student through its logits and feature maps, and every score of the student would be inflated.
Weights without a record (the original code's files, checkpoints of earlier versions) cannot be
checked; they are accepted with a warning.

A resumed distillation run keeps the teacher it started with: the teacher's weights and record
are read back from the run's own checkpoint (:func:`teacher_from_run_checkpoint`), never looked
up again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from hdkd_lightning.checkpoints import (
    checkpoint_val_score,
    is_project_checkpoint,
    network_from_checkpoint,
    read_checkpoint,
)
from hdkd_lightning.checkpoints.runs import find_latest_completed_run, iter_run_dirs
from hdkd_lightning.errors import ConfigError

log = logging.getLogger("hdkd_lightning")

__all__ = ["TeacherSpec", "teacher_experiment_for", "resolve_teacher_path", "load_teacher", "check_teacher_fits",
           "check_teacher_data", "teacher_from_run_checkpoint"]


@dataclass
class TeacherSpec:
    path: Path
    arch: str
    net_kwargs: Dict
    state_dict: Dict[str, torch.Tensor]
    class_names: Optional[List[str]]  # None for original-code files (they carry no names)
    image_size: Optional[int]
    val_balanced_accuracy: Optional[float] = None  # of these weights, when the checkpoint records it
    record: Optional[Dict[str, Any]] = None  # the teacher's data record (None: weights without one)
    sha256: Optional[str] = None  # of the file the weights came from
    entry: Optional[Dict[str, Any]] = None  # the record entry of a resumed run's teacher, kept as it was

    def summary(self) -> Dict[str, Any]:
        """What a distillation run records about its teacher (printed, stored in its config and in its
        data record as ``teacher``)."""
        if self.entry is not None:
            return dict(self.entry)
        from hdkd_lightning.data.provenance import record_summary

        data = record_summary(self.record)
        return {"path": str(Path(self.path).resolve()), "sha256": self.sha256, "arch": self.arch,
                "val_balanced_accuracy": self.val_balanced_accuracy,
                "data_record": None if data is None else {k: data[k] for k in ("data", "split", "subset") if k in data}}


#: data config -> the experiment that trains its teacher, where the names differ (conf/experiment/teacher_*.yaml)
_TEACHER_EXPERIMENT_OF_DATA = {"isic2018": "teacher_isic", "brain_tumor": "teacher_brain"}


def teacher_experiment_for(data_name: str) -> str:
    """The teacher experiment of ``data=<data_name>`` (``model.teacher.experiment: null``)."""
    return _TEACHER_EXPERIMENT_OF_DATA.get(data_name, f"teacher_{data_name}")


def resolve_teacher_path(ckpt_path: Optional[str], experiment: Optional[str], log_dir: Path,
                         data_name: Optional[str] = None) -> Path:
    """``model.teacher.ckpt_path`` if given, else the best checkpoint of the latest *completed*
    run of the teacher experiment (unfinished, failed and debug runs are never picked); with no
    experiment given, the one of the data (:func:`teacher_experiment_for`)."""
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.teacher.ckpt_path={ckpt_path}: no such file; give the path of a teacher "
                              f"checkpoint (…/checkpoints/best.ckpt) or an original-code weights file")
        return path
    if not experiment and data_name:
        experiment = teacher_experiment_for(data_name)
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
    from hdkd_lightning.files import sha256_file

    ckpt = read_checkpoint(path)
    digest = sha256_file(path)
    if is_project_checkpoint(ckpt):
        net, meta = network_from_checkpoint(path)
        return TeacherSpec(path, meta["arch"], dict(meta["net_kwargs"]), net.state_dict(),
                           list(meta["class_names"]), meta.get("image_size"),
                           checkpoint_val_score(ckpt, "val/balanced_accuracy"), meta.get("provenance"), digest)
    from hdkd_lightning.models import load_original_checkpoint

    net = load_original_checkpoint(path, "hdkd_teacher")
    kwargs = dict(num_classes=net.num_classes, in_chans=net.in_chans)
    return TeacherSpec(path, "hdkd_teacher", kwargs, net.state_dict(), None, None, sha256=digest)


def teacher_from_run_checkpoint(path: Path) -> Optional[TeacherSpec]:
    """The teacher a distillation checkpoint was trained with (to resume it): its weights from the
    checkpoint itself, its record entry as the run first wrote it. ``None`` for other checkpoints."""
    ckpt = read_checkpoint(path)
    if not is_project_checkpoint(ckpt) or "teacher." not in (ckpt["hdkd"].get("networks") or {}):
        return None
    net, meta = network_from_checkpoint(path, prefix="teacher.")
    entry = (meta.get("provenance") or {}).get("teacher")
    if entry is None:  # a checkpoint of an earlier version: the teacher file named in its hyperparameters
        source = ((ckpt.get("hyper_parameters") or {}).get("teacher") or {}).get("source")
        entry = {"path": source, "sha256": None, "arch": meta["arch"], "val_balanced_accuracy": None,
                 "data_record": None, "note": "recorded before data records existed"}
    return TeacherSpec(Path(entry.get("path") or path), meta["arch"], dict(meta["net_kwargs"]), net.state_dict(),
                       list(meta["class_names"]), meta.get("image_size"), entry.get("val_balanced_accuracy"),
                       None, entry.get("sha256"), entry=dict(entry))


def check_teacher_data(teacher: TeacherSpec, eval_keys: Mapping[str, Sequence[Sequence[str]]],
                       data_name: str) -> Dict[str, Any]:
    """Refuse a teacher that trained on any of the student's validation or test images.

    ``eval_keys`` maps ``val`` / ``test`` to the identity keys of each of the student's images of that
    split. Returns what was checked (kept in the student's record).
    """
    from hdkd_lightning.data.provenance import count_seen, key_set

    if teacher.record is None:
        log.warning("teacher %s has no data record (original-code weights or an older checkpoint): whether it "
                    "trained on this run's validation or test images cannot be checked", teacher.path)
        return {"leak_check": "not possible: the teacher has no data record"}
    known = key_set(teacher.record, "train")
    seen = {split: count_seen(keys, known) for split, keys in eval_keys.items()}
    total = sum(len(keys) for keys in eval_keys.values())
    if any(seen.values()):
        t_data = teacher.record.get("data") or {}
        t_split = teacher.record.get("split") or {}
        raise ConfigError(
            f"teacher {teacher.path} trained on {sum(seen.values())} of this run's {total} validation/test images "
            f"({', '.join(f'{n} {s}' for s, n in seen.items() if n)}; it was trained on data={t_data.get('name')} "
            f"with data.split_seed={t_split.get('seed')}, this run uses data={data_name}): the student's scores "
            f"would be inflated. Use a teacher trained on this dataset with the same split (same data.split_seed "
            f"or data.split_file=<the teacher's splits.csv>), e.g. model.teacher.ckpt_path=<that best.ckpt>")
    return {"leak_check": f"passed: none of the {total} validation/test images is a training image of the teacher"}


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
