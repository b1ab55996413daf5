"""DistillModule: the HDKD student learning from labels, teacher logits and teacher feature maps."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import timm
import torch

import hdkd_lightning.models  # noqa: F401  (registers the architectures)
from hdkd_lightning.checkpoints.format import build_meta
from hdkd_lightning.deploy import prepare_teacher
from hdkd_lightning.distillation import distill_forward
from hdkd_lightning.files import to_plain
from hdkd_lightning.lit.base import ClassifierModuleBase
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
        teacher_fold_bn: compute the teacher's targets with a copy whose BatchNorms are folded into
            the neighbouring convolutions (:func:`hdkd_lightning.deploy.prepare_teacher`): the same
            function, fewer passes over memory. Off = the original's unfolded teacher.

    The registered ``teacher`` keeps its original, unfolded fp32 form: it is what checkpoints
    store and what ``load_teacher_state`` fills. The folded or bf16 copy that runs in the step
    lives outside the module tree (never saved, never in the optimizer) and is rebuilt from the
    teacher whenever its weights or device change.
    """

    kind = "distill"
    net_prefix = "student."

    def __init__(self, student: Dict[str, Any], teacher: Dict[str, Any], class_names: List[str],
                 optimizer: Dict[str, Any], scheduler: Optional[Dict[str, Any]] = None,
                 loss: Optional[Dict[str, Any]] = None, class_weights: Optional[List[float]] = None,
                 channels_last: Any = "auto", compile: bool = False, teacher_dtype: Optional[str] = None,
                 nonfinite_loss: str = "error", data_name: str = "", teacher_fold_bn: bool = True) -> None:
        student, teacher, optimizer, scheduler, loss = map(to_plain, (student, teacher, optimizer, scheduler, loss or {}))
        super().__init__(class_names, channels_last=channels_last, compile=compile, nonfinite_loss=nonfinite_loss)
        self.save_hyperparameters({"student": student, "teacher": teacher, "class_names": list(class_names),
                                   "optimizer": optimizer, "scheduler": scheduler, "loss": loss,
                                   "class_weights": to_plain(class_weights), "channels_last": channels_last,
                                   "compile": compile, "teacher_dtype": teacher_dtype,
                                   "teacher_fold_bn": teacher_fold_bn,
                                   "nonfinite_loss": nonfinite_loss, "data_name": data_name,
                                   "arch_name": student["arch"]})
        self.student = timm.create_model(student["arch"], **student.get("kwargs", {}))
        self.teacher = timm.create_model(teacher["arch"], **teacher.get("kwargs", {}))
        for name, net in (("student", self.student), ("teacher", self.teacher)):
            if net.num_classes != len(class_names):
                raise ValueError(f"{name} has {net.num_classes} classes but the data has {len(class_names)}")
        self.teacher.requires_grad_(False).eval()
        self.loss_fn = build_loss(loss, class_weights)

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
        self._drop_step_teacher()

    def load_state_dict(self, state_dict, *args, **kwargs):
        self._drop_step_teacher()  # resume / restore: the step's copy must follow the new weights
        return super().load_state_dict(state_dict, *args, **kwargs)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._drop_step_teacher()

    @property
    def _teacher_dtype(self) -> Optional[torch.dtype]:
        return torch.bfloat16 if self.hparams.teacher_dtype in ("bfloat16", "bf16") else None

    def _drop_step_teacher(self) -> None:
        self.__dict__.pop("_step_teacher", None)

    def step_teacher(self) -> torch.nn.Module:
        """The network that computes the teacher's targets in a training step.

        ``self.teacher`` itself when neither folding nor a teacher dtype is asked for; otherwise a
        frozen copy from :func:`prepare_teacher`, cached outside the module tree.
        """
        fold, dtype = self.hparams.get("teacher_fold_bn", True), self._teacher_dtype
        if not fold and dtype is None:
            return self.teacher
        cached = self.__dict__.get("_step_teacher")
        device = next(self.teacher.parameters()).device
        if cached is None or next(cached.parameters()).device != device:
            cached = prepare_teacher(self.teacher, channels_last=self.channels_last.on(device), dtype=dtype, fold=fold)
            object.__setattr__(self, "_step_teacher", cached)  # plain attribute: not a submodule
        return cached

    def _layout_networks(self):
        return [self.student, self.teacher]

    def trainable_parameters(self):
        return self.student.parameters()

    def training_step(self, batch: Dict[str, Any], batch_idx: int):
        images, labels = self.channels_last.images(batch["image"]), batch["label"]
        teacher_images = images.to(self._teacher_dtype) if self._teacher_dtype is not None else None
        self.teacher.eval()
        loss, parts, _ = distill_forward(self.compiled(self.net), self.step_teacher(), self.loss_fn, images, labels,
                                         teacher_images)
        loss = self.nonfinite.check(loss, parts, self)
        if loss is None:
            return None
        n = len(labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in parts.items() if k != "loss"}, on_step=False, on_epoch=True,
                      batch_size=n)
        return loss

    def checkpoint_meta(self) -> Dict[str, Any]:
        s_kwargs = dict(self.hparams.student.get("kwargs", {}))
        teacher = {"arch": self.hparams.teacher["arch"], "net_kwargs": dict(self.hparams.teacher.get("kwargs", {}))}
        return build_meta("distill", self.hparams.student["arch"], s_kwargs, self.class_names,
                          s_kwargs.get("img_size"), self.hparams.data_name, prefix=self.net_prefix,
                          networks={"teacher.": teacher})
