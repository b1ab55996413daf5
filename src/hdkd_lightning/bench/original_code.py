"""The authors' real training step, imported at run time from a user's clone of their repository.

``hdkd-bench --original-code <dir>`` points at a checkout of the original HDKD code (its
``models/``, ``losses.py``, ``blocks.py``, ``DFLT_module.py``; it needs ``einops``). Nothing of
it is part of this package: the folder is put on ``sys.path`` and its modules are imported in
the bench process only.

:class:`OriginalCodeStep` builds the original teacher (``TeacherModel``) and HDKD student
(``StudentModel(use_distillation=True)``) at the bench's image size, gives them the weights of
this project's networks for the same case (mapped with
:func:`hdkd_lightning.models.checkpoint_filter_fn`, so both sides compute with identical weights
and their losses must agree), and runs one step as the original ``engine.train_one_epoch`` does:
``outputs = model(x)``, ``TotalDistillationLoss(x, outputs, y)`` (logit loss with its own teacher
call, feature loss re-running the network prefixes), ``backward``, AdamW step (the original's
default optimizer settings via timm: lr 5e-5, weight decay 0.05, eps 1e-8), ``zero_grad``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from hdkd_lightning.models.original import checkpoint_filter_fn

__all__ = ["OriginalCodeError", "load_original_code", "OriginalCodeStep"]

# the original's architecture (models/teacher_model.py, models/student_model.py)
_TEACHER = dict(in_channel=3, num_blocks=[6, 6, 9], channels=[64, 96, 192])
_STUDENT = dict(in_channel=3, num_blocks=[2, 2, 3, 3], channels=[64, 96, 192, 256], patch_size=(2, 2))


class OriginalCodeError(RuntimeError):
    """The folder given as the original code cannot be imported or used."""


def load_original_code(folder: str | Path) -> Dict[str, Any]:
    """Import the original code's network classes and ``losses`` module from ``folder``."""
    folder = Path(folder).expanduser().resolve()
    missing = [n for n in ("models/__init__.py", "losses.py", "blocks.py") if not (folder / n).is_file()]
    if missing:
        raise OriginalCodeError(f"--original-code {folder}: not a clone of the original HDKD code (missing "
                                f"{', '.join(missing)}); clone the authors' repository and pass its folder")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        # the classes live in the submodules (timm's register_model limits the package's star-import)
        teacher = importlib.import_module("models.teacher_model")
        student = importlib.import_module("models.student_model")
        losses = importlib.import_module("losses")
    except ImportError as exc:
        raise OriginalCodeError(f"--original-code {folder}: importing it failed ({exc}); the original code "
                                f"needs einops (pip install einops)") from exc
    for module, name in ((teacher, "TeacherModel"), (student, "StudentModel"),
                         (losses, "TotalDistillationLoss")):
        if not hasattr(module, name):
            raise OriginalCodeError(f"--original-code {folder}: {module.__name__} has no {name}")
    return {"folder": str(folder), "TeacherModel": teacher.TeacherModel, "StudentModel": student.StudentModel,
            "losses": losses}


class OriginalCodeStep:
    """One training step of the original code on the weights of ``teacher`` / ``student`` (ours)."""

    def __init__(self, code: Dict[str, Any], teacher: nn.Module, student: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor, alpha: float = 0.5, tau: float = 1.0, lambda_feat: float = 10.0,
                 feature_exponent: float = 1.0) -> None:
        losses = code["losses"]
        size = (images.shape[-2], images.shape[-1])
        classes = teacher.num_classes
        self.teacher = code["TeacherModel"](size, num_classes=classes, **_TEACHER)
        self.model = code["StudentModel"](size, num_classes=classes, use_distillation=True, **_STUDENT)
        _copy_weights(teacher, self.teacher)
        _copy_weights(student, self.model)
        self.teacher.eval().requires_grad_(False)
        self.model.train()
        logit = losses.LogitDistillationLoss(nn.CrossEntropyLoss(), self.teacher, "soft", alpha, tau)
        feature = losses.FeatureDistillationLoss(self.teacher, self.model, feature_exponent, [1, 2, 3], [1, 2, 3])
        self.criterion = losses.TotalDistillationLoss(logit, feature, lambda_feat)
        self.images, self.labels = images, labels
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=5e-5, weight_decay=0.05, eps=1e-8)

    def forward(self) -> torch.Tensor:
        return self.criterion(self.images, self.model(self.images), self.labels)

    def __call__(self) -> torch.Tensor:
        loss = self.forward()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def loss_value(self) -> float:
        """The batch's loss without changing the step's state."""
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        with torch.no_grad():
            value = float(self.forward())
        self.model.load_state_dict(saved)  # BatchNorm running statistics moved; put them back
        return value


def _copy_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Give the original-code network ``theirs`` exactly the weights of ``ours``."""
    own = {k: v for k, v in theirs.state_dict().items()}
    mapped = checkpoint_filter_fn(own)  # their key -> our key, in the same order
    ours_sd = ours.state_dict()
    mismatch = [k for k in mapped if k not in ours_sd or ours_sd[k].shape != mapped[k].shape]
    if mismatch or len(mapped) != len(ours_sd):
        raise OriginalCodeError(f"the original code's {type(theirs).__name__} does not match "
                                f"{type(ours).__name__} ({len(mismatch)} differing key(s), e.g. {mismatch[:3]})")
    with torch.no_grad():
        for their_key, our_key in zip(own, mapped):
            own[their_key].copy_(ours_sd[our_key])
