"""EvalModule: a trained network read from a checkpoint, for test runs (``hdkd-eval``)."""

from __future__ import annotations

from typing import Any, Dict

from torch import nn

from hdkd_lightning.lit.base import ClassifierModuleBase

__all__ = ["EvalModule"]


class EvalModule(ClassifierModuleBase):
    """Tests ``net`` as stored; its probabilities use the checkpoint's temperature, if calibrated."""

    kind = "eval"

    def __init__(self, net: nn.Module, meta: Dict[str, Any]) -> None:
        super().__init__(meta["class_names"])
        self.net = net.eval()
        self.meta = dict(meta)
        self.hparams["arch_name"] = meta["arch"]
        self.temperature = meta.get("temperature")

    def checkpoint_meta(self) -> Dict[str, Any]:
        return self.meta
