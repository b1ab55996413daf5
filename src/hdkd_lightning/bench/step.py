"""One distillation training step as the benchmark runs it, the models and batch it runs on.

:class:`DistillStep` is exactly :func:`hdkd_lightning.distillation.distill_forward` (what
``DistillModule`` runs) followed by ``backward``, an AdamW step (the original's optimizer
settings) and ``zero_grad``; with ``pattern="original"`` the forward is the original code's pass
pattern (:mod:`hdkd_lightning.bench.original`) on the same networks.
"""

from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from hdkd_lightning.bench.original import original_pattern_forward
from hdkd_lightning.deploy import prepare_teacher
from hdkd_lightning.distillation import distill_forward
from hdkd_lightning.losses import HdkdLoss

__all__ = ["NUM_CLASSES", "LOSS_RTOL", "LossMismatchError", "native_bf16", "sync", "build_models", "make_batch",
           "DistillStep", "check_losses"]

NUM_CLASSES = 7
LOSS_RTOL = 1e-4  # fp32: single pass vs original pattern, folded channels-last teacher included


class LossMismatchError(AssertionError):
    """This project's step and the original pattern disagree on the loss of the same batch."""


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 matmuls/convolutions run on native instructions (else they are emulated, ~100x slower)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_models(image_size: int, seed: int = 0, num_classes: int = NUM_CLASSES) -> Tuple[nn.Module, nn.Module]:
    """A frozen eval teacher (with non-trivial BatchNorm statistics) and a fresh HDKD student."""
    import timm

    import hdkd_lightning  # noqa: F401  (registers the models)

    torch.manual_seed(seed)
    teacher = timm.create_model("hdkd_teacher", num_classes=num_classes, img_size=image_size)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained teacher has non-identity BatchNorm; make the folds do something
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
    teacher.eval().requires_grad_(False)
    student = timm.create_model("hdkd_student_distilled", num_classes=num_classes, img_size=image_size)
    return teacher, student.train()


def make_batch(image_size: int, batch_size: int, seed: int = 0, num_classes: int = NUM_CLASSES):
    gen = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
    labels = torch.randint(0, num_classes, (batch_size,), generator=gen)
    return images, labels


class DistillStep:
    """One training step on its own copy of the student and optimizer.

    ``pattern``: ``"ours"`` (:func:`distill_forward`) or ``"original"`` (the authors' pattern).
    ``channels_last`` applies to the student and the images; ``fold_teacher`` uses
    :func:`prepare_teacher`; ``amp`` runs the student under autocast in that dtype and
    ``teacher_dtype`` puts the prepared teacher (and its images) in that dtype.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 pattern: str = "ours", channels_last: bool = False, fold_teacher: bool = False,
                 amp: Optional[torch.dtype] = None, teacher_dtype: Optional[torch.dtype] = None,
                 device: str = "cpu", compile_student: bool = False) -> None:
        if pattern not in ("ours", "original"):
            raise ValueError(f"pattern must be 'ours' or 'original', got {pattern!r}")
        self.pattern, self.amp, self.device = pattern, amp, device
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.student = copy.deepcopy(student).to(device=device, memory_format=fmt).train()
        if fold_teacher or teacher_dtype is not None:
            self.teacher = prepare_teacher(teacher, channels_last=channels_last, dtype=teacher_dtype).to(device)
        else:
            self.teacher = teacher.to(device)
        self.images = images.to(device).contiguous(memory_format=fmt)
        self.teacher_images = None if teacher_dtype is None else self.images.to(teacher_dtype)
        self.labels = labels.to(device)
        self.loss_fn = HdkdLoss()
        self.model = torch.compile(self.student) if compile_student else self.student
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=5e-5, weight_decay=0.05, eps=1e-8)

    def forward(self) -> Tuple[torch.Tensor, dict]:
        with torch.autocast(self.device.split(":")[0], dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            if self.pattern == "ours":
                loss, parts, _ = distill_forward(self.model, self.teacher, self.loss_fn, self.images, self.labels,
                                                 self.teacher_images)
            else:
                loss, parts = original_pattern_forward(self.model, self.teacher, self.loss_fn, self.images,
                                                       self.labels)
        return loss, parts

    def __call__(self) -> torch.Tensor:
        loss, _ = self.forward()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync(self.device)
        return loss.detach()  # no .item(): no host-device synchronisation in the step itself

    def loss_value(self) -> float:
        """Loss of the batch without changing the step's state (on a copy of the student)."""
        saved = copy.deepcopy(self.student.state_dict())
        with torch.no_grad():
            loss, _ = self.forward()
        self.student.load_state_dict(saved)  # BatchNorm running statistics moved; put them back
        return float(loss)


def check_losses(steps: Dict[str, DistillStep], reference: str = "original", rtol: float = LOSS_RTOL) -> Dict[str, float]:
    """Loss of every fp32 step on its batch; raises :class:`LossMismatchError` when any differs."""
    values = {name: step.loss_value() for name, step in steps.items()}
    ref = values[reference]
    for name, value in values.items():
        if abs(value - ref) > rtol * max(abs(ref), 1e-12):
            raise LossMismatchError(f"loss of '{name}' ({value!r}) differs from '{reference}' ({ref!r}) "
                                    f"by more than rtol={rtol}")
    return values
