"""DistillModule: the HDKD student learning from labels, teacher logits and teacher feature maps."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import timm
import torch

import hdkd_lightning.models  # noqa: F401  (registers the architectures)
from hdkd_lightning.distillation import distill_forward
from hdkd_lightning.lit.base import ClassifierModuleBase, plain
from hdkd_lightning.losses import FeatureDistillationLoss, HdkdLoss, LogitDistillationLoss

__all__ = ["DistillModule"]


def build_loss(loss: Dict[str, Any], class_weights: Optional[List[float]] = None) -> HdkdLoss:
    """HdkdLoss from the ``model.loss`` config (one name per option, as in the docs)."""
    return HdkdLoss(
        LogitDistillationLoss(kind=loss.get("kind", "soft"), alpha=loss.get("alpha", 0.5), tau=loss.get("tau", 1.0),
                              normalization=loss.get("normalization", "numel"),
                              label_smoothing=loss.get("label_smoothing", 0.0), class_weights=class_weights),
        FeatureDistillationLoss(exponent=loss.get("feature_exponent", 1.0), weights=loss.get("feature_weights")),
        lambda_feat=loss.get("lambda_feat", 10.0),
    )


class DistillModule(ClassifierModuleBase):
    """HDKD training: frozen teacher (eval mode, no gradients, not in the optimizer) + student.

    Each step runs the teacher once (logits + stage outputs, inference only) and the student
    once (class/distillation logits + stage outputs); the loss components are logged under
    ``train/``. Prediction is the mean of the two heads.

    Args:
        student: ``{"arch", "kwargs"}`` of the student (``hdkd_student_distilled`` for HDKD).
        teacher: ``{"arch", "kwargs", "source"}`` of the teacher; its weights are loaded with
            :meth:`load_teacher_state` (or restored from this module's checkpoint).
        loss: ``kind``, ``alpha``, ``tau``, ``normalization``, ``lambda_feat``,
            ``feature_exponent``, ``feature_weights``, ``label_smoothing``.
        teacher_dtype: ``null`` (same as the student) or ``bfloat16`` to run the frozen teacher in bf16.
    """

    kind = "distill"
    net_prefix = "student."

    def __init__(self, student: Dict[str, Any], teacher: Dict[str, Any], class_names: List[str],
                 optimizer: Dict[str, Any], scheduler: Optional[Dict[str, Any]] = None,
                 loss: Optional[Dict[str, Any]] = None, class_weights: Optional[List[float]] = None,
                 channels_last: bool = True, compile: bool = False, teacher_dtype: Optional[str] = None,
                 nonfinite_loss: str = "error", data_name: str = "") -> None:
        student, teacher, optimizer, scheduler, loss = map(plain, (student, teacher, optimizer, scheduler, loss or {}))
        super().__init__(class_names)
        self.save_hyperparameters({"student": student, "teacher": teacher, "class_names": list(class_names),
                                   "optimizer": optimizer, "scheduler": scheduler, "loss": loss,
                                   "class_weights": plain(class_weights), "channels_last": channels_last,
                                   "compile": compile, "teacher_dtype": teacher_dtype,
                                   "nonfinite_loss": nonfinite_loss, "data_name": data_name,
                                   "arch_name": student["arch"]})
        self.student = timm.create_model(student["arch"], **student.get("kwargs", {}))
        self.teacher = timm.create_model(teacher["arch"], **teacher.get("kwargs", {}))
        for name, net in (("student", self.student), ("teacher", self.teacher)):
            if net.num_classes != len(class_names):
                raise ValueError(f"{name} has {net.num_classes} classes but the data has {len(class_names)}")
        self.teacher.requires_grad_(False).eval()
        if channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
            self.teacher = self.teacher.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(loss, class_weights)
        self._train_student = torch.compile(self.student) if compile else self.student

    @property
    def net(self) -> torch.nn.Module:
        return self.student

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    def load_teacher_state(self, state_dict: Dict[str, torch.Tensor]) -> None:
        self.teacher.load_state_dict(state_dict, strict=True)
        self.teacher.requires_grad_(False).eval()

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.teacher_dtype in ("bfloat16", "bf16"):
            self.teacher.to(torch.bfloat16)

    def trainable_parameters(self):
        return self.student.parameters()

    def training_step(self, batch: Dict[str, Any], batch_idx: int):
        images, labels = batch["image"], batch["label"]
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        teacher_images = images.to(torch.bfloat16) if self.hparams.teacher_dtype in ("bfloat16", "bf16") else None
        self.teacher.eval()
        loss, parts, _ = distill_forward(self._train_student, self.teacher, self.loss_fn, images, labels, teacher_images)
        loss = self._check_loss(loss, parts)
        if loss is None:
            return None
        n = len(labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in parts.items() if k != "loss"}, on_step=False, on_epoch=True,
                      batch_size=n)
        return loss

    def checkpoint_meta(self) -> Dict[str, Any]:
        s_kwargs = dict(self.hparams.student.get("kwargs", {}))
        return {"kind": "distill", "arch": self.hparams.student["arch"], "net_kwargs": s_kwargs,
                "prefix": self.net_prefix, "class_names": list(self.class_names),
                "image_size": s_kwargs.get("img_size"), "data": self.hparams.data_name,
                "networks": {"teacher.": {"arch": self.hparams.teacher["arch"],
                                          "net_kwargs": dict(self.hparams.teacher.get("kwargs", {}))}}}
