"""TeacherModule: trains one network with labels (the CNN teacher, or the student baseline)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import timm
import torch
import torch.nn.functional as F

import hdkd_lightning.models  # noqa: F401  (registers the architectures)
from hdkd_lightning.checkpoints.format import build_meta
from hdkd_lightning.files import to_plain
from hdkd_lightning.lit.base import ClassifierModuleBase

__all__ = ["TeacherModule"]


class TeacherModule(ClassifierModuleBase):
    """Cross-entropy training of ``net.arch`` (``hdkd_teacher``, ``hdkd_student``, ...).

    Args:
        net: ``{"arch": timm name, "kwargs": {...}}``; ``num_classes``/``img_size`` are filled
            from the data by the training command.
        class_names: class names in label order (travel inside the checkpoint).
        optimizer / scheduler: Hydra ``_partial_`` specs (scheduler may be ``None``; an extra
            ``interval`` key says ``epoch`` or ``step``).
        label_smoothing: cross-entropy label smoothing.
        class_weights: optional per-class weights of the cross-entropy (from the data).
        channels_last: ``auto`` (channels-last on CUDA, NCHW on the CPU), ``true`` or ``false``.
        compile: wrap the network with ``torch.compile``.
        nonfinite_loss: ``error`` stops on a NaN/Inf loss, ``skip`` skips that step.
    """

    kind = "teacher"
    net_prefix = "net."

    def __init__(self, net: Dict[str, Any], class_names: List[str], optimizer: Dict[str, Any],
                 scheduler: Optional[Dict[str, Any]] = None, label_smoothing: float = 0.0,
                 class_weights: Optional[List[float]] = None, channels_last: Any = "auto", compile: bool = False,
                 nonfinite_loss: str = "error", data_name: str = "") -> None:
        net, optimizer, scheduler = to_plain(net), to_plain(optimizer), to_plain(scheduler)
        super().__init__(class_names, channels_last=channels_last, compile=compile, nonfinite_loss=nonfinite_loss)
        self.save_hyperparameters({"net": net, "class_names": list(class_names), "optimizer": optimizer,
                                   "scheduler": scheduler, "label_smoothing": label_smoothing,
                                   "class_weights": to_plain(class_weights), "channels_last": channels_last,
                                   "compile": compile, "nonfinite_loss": nonfinite_loss, "data_name": data_name,
                                   "arch_name": net["arch"]})
        self.net = timm.create_model(net["arch"], **net.get("kwargs", {}))
        if self.net.num_classes != len(class_names):
            raise ValueError(f"model num_classes={self.net.num_classes} but the data has {len(class_names)} classes")
        self.register_buffer("ce_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32))

    def training_step(self, batch: Dict[str, Any], batch_idx: int):
        images, labels = self.channels_last.images(batch["image"]), batch["label"]
        out = self.compiled(self.net)(images)
        if isinstance(out, tuple):  # a distilled student trained on labels only: both heads learn the labels
            loss = sum(F.cross_entropy(o, labels, weight=self.ce_weights, label_smoothing=self.hparams.label_smoothing)
                       for o in out) / len(out)
        else:
            loss = F.cross_entropy(out, labels, weight=self.ce_weights, label_smoothing=self.hparams.label_smoothing)
        loss = self.nonfinite.check(loss, {"loss_ce": loss}, self)
        if loss is None:
            return None
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def checkpoint_meta(self) -> Dict[str, Any]:
        kwargs = dict(self.hparams.net.get("kwargs", {}))
        return build_meta("teacher" if self.hparams.net["arch"] == "hdkd_teacher" else "student",
                          self.hparams.net["arch"], kwargs, self.class_names, kwargs.get("img_size"),
                          self.hparams.data_name, prefix=self.net_prefix)
