"""EvalModule: a trained network read from a checkpoint, for test runs (``hdkd-eval``)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from hdkd_lightning.lit.base import ClassifierModuleBase

__all__ = ["EvalModule"]


class EvalModule(ClassifierModuleBase):
    """Tests ``net`` as stored; its probabilities use the checkpoint's temperature, if calibrated.

    ``label_map`` (data class index -> model class index, -1 for a class the model does not know;
    :mod:`hdkd_lightning.evaluation.class_map`) turns the data's labels into the model's classes.
    """

    kind = "eval"

    def __init__(self, net: nn.Module, meta: Dict[str, Any], label_map: Optional[Sequence[int]] = None) -> None:
        super().__init__(meta["class_names"])
        self.net = net.eval()
        self.meta = dict(meta)
        self.hparams["arch_name"] = meta["arch"]
        self.temperature = meta.get("temperature")
        self.label_map = None if label_map is None else torch.tensor(list(label_map), dtype=torch.long)

    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> Dict[str, Any]:
        out = super().test_step(batch, batch_idx)
        if self.label_map is not None:
            labels = out["label"]
            out["label"] = torch.where(labels >= 0, self.label_map[labels.clamp(min=0)], labels)
        return out

    def checkpoint_meta(self) -> Dict[str, Any]:
        return self.meta
