"""TestArtefacts: score a whole test split once and write its artefacts, as a Lightning callback.

The module's ``test_step`` returns ``{"path", "label", "probs"}`` per batch; this callback keeps
the rows, gathers them from every process under DDP, counts each image once (a distributed
sampler pads the split with repeats), and then, on global rank 0, writes ``metrics.json``,
``per_class.csv``, ``predictions.csv`` and ``confusion_matrix.png`` to ``output_dir``
(:func:`hdkd_lightning.evaluation.artefacts.write_evaluation_artefacts`), logs the ``test/*``
scalars and sends the confusion matrix to image-capable loggers. Every process ends with the same
numbers in :attr:`results`, so metrics under DDP equal a one-process evaluation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import lightning.pytorch as pl
import torch

from hdkd_lightning.evaluation.artefacts import write_evaluation_artefacts
from hdkd_lightning.evaluation.uploads import log_artefacts
from hdkd_lightning.lit.metrics import compute_metrics

__all__ = ["TestArtefacts"]


class TestArtefacts(pl.Callback):
    """See the module docstring. ``results`` holds the content of ``metrics.json`` after a test
    (empty when the split was empty)."""

    def __init__(self, output_dir: Union[str, Path]) -> None:
        self.output_dir = Path(output_dir)
        self.results: Dict[str, Any] = {}
        self._rows: List[Tuple[str, int, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []
        self.results = {}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        for path, label, probs in zip(outputs["path"], outputs["label"].tolist(), outputs["probs"]):
            self._rows.append((path, int(label), probs))

    def _all_rows(self, trainer: pl.Trainer) -> List[Tuple[str, int, torch.Tensor]]:
        rows = self._rows
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: List[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        unique = {}
        for r in rows:  # a distributed sampler pads with repeated samples: count each image once
            unique.setdefault(r[0], r)
        return [unique[p] for p in sorted(unique)]

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = self._all_rows(trainer)
        if not rows:
            pl_module.print("WARNING: the test split is empty; no test metrics or artefacts were written")
            return
        class_names = pl_module.class_names
        paths = [r[0] for r in rows]
        labels = torch.tensor([r[1] for r in rows], dtype=torch.long)
        probs = torch.stack([r[2] for r in rows])
        extra = {"kind": pl_module.kind, "model": pl_module.hparams.get("arch_name", ""),
                 "params": sum(p.numel() for p in pl_module.deploy_net.parameters())}
        if trainer.is_global_zero:  # every process holds every row: same numbers, files written once
            self.results = write_evaluation_artefacts(self.output_dir, class_names, paths, labels, probs, extra)
        else:
            self.results = dict(compute_metrics(class_names, labels, probs), **extra)
        scalars = {f"test/{k}": float(v) for k, v in self.results.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "params" and math.isfinite(float(v))}
        pl_module.log_dict(scalars, rank_zero_only=True)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                log_artefacts(logger, self.results, self.output_dir, log_scalars=False)
