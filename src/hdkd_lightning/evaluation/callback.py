"""TestArtefacts: score a whole test split once and write its artefacts, as a Lightning callback.

The module under test (a ``lit`` classifier; this module reads it by these names and never imports
``lit``) has ``class_names``, ``kind``, ``hparams["arch_name"]``, ``temperature``, ``deploy_net``
and ``inference_recipe()``, and its ``test_step`` returns ``{"path", "label", "probs"}`` per batch.
This callback keeps the rows, gathers them from every process under DDP, counts each image once
(a distributed sampler pads the split with repeats; :mod:`hdkd_lightning.evaluation.gather`), and
then, on global rank 0, writes every evaluation artefact to ``output_dir``
(:func:`hdkd_lightning.evaluation.artefacts.write_evaluation_artefacts`: metrics.json with
intervals and calibration, the CSVs, the figures and report.html with Grad-CAM examples kept
while the batches streamed past), logs the ``test/*`` scalars and sends the
confusion matrix to image-capable loggers. Every process ends with the same numbers in
:attr:`results`, so metrics under DDP equal a one-process evaluation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import lightning.pytorch as pl
import torch

from hdkd_lightning.evaluation.artefacts import EvaluationOptions, write_evaluation_artefacts
from hdkd_lightning.evaluation.explain import ExampleReservoir
from hdkd_lightning.evaluation.gather import gather_each_image_once
from hdkd_lightning.evaluation.metrics import collapse_warning, compute_metrics
from hdkd_lightning.evaluation.uploads import log_artefacts

__all__ = ["TestArtefacts"]


class TestArtefacts(pl.Callback):
    """See the module docstring. ``results`` holds the content of ``metrics.json`` after a test
    (empty when the split was empty)."""

    def __init__(self, output_dir: Union[str, Path], options: Optional[EvaluationOptions] = None,
                 extra: Optional[Dict[str, Any]] = None,
                 metadata: Optional[Mapping[str, Mapping[str, str]]] = None) -> None:
        self.output_dir = Path(output_dir)
        self.options = options or EvaluationOptions()
        self.extra = dict(extra or {})  # run information for metrics.json (data, split, checkpoint, ...)
        self.metadata = metadata or {}  # path -> subgroup attributes (sex, age band, ...), where the data have them
        self.results: Dict[str, Any] = {}
        self._rows: List[Tuple[str, int, torch.Tensor]] = []
        self._examples: Optional[ExampleReservoir] = None

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []
        self.results = {}
        self._examples = ExampleReservoir(len(pl_module.class_names), self.options.gradcam_per_class
                                          if self.options.html else 0)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        labels = outputs["label"].tolist()
        for path, label, probs in zip(outputs["path"], labels, outputs["probs"]):
            self._rows.append((path, int(label), probs))
        if trainer.is_global_zero:
            self._examples.offer(batch["image"], labels, outputs["probs"].numpy(), outputs["path"])

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = self._rows
        class_names = pl_module.class_names
        probs = torch.stack([r[2] for r in rows]) if rows else torch.zeros(0, len(class_names))
        paths, labels, probs = gather_each_image_once(trainer.world_size, [r[0] for r in rows],
                                                      torch.tensor([r[1] for r in rows], dtype=torch.long), probs)
        if not paths:
            pl_module.print("WARNING: the test split is empty; no test metrics or artefacts were written")
            return
        extra = {"kind": pl_module.kind, "model": pl_module.hparams.get("arch_name", ""),
                 "params": sum(p.numel() for p in pl_module.deploy_net.parameters()),
                 "temperature": pl_module.temperature, **self.extra}
        if not extra.get("checkpoint") and trainer.ckpt_path:  # a training run tests its best checkpoint
            extra["checkpoint"] = str(trainer.ckpt_path)
        if trainer.is_global_zero:  # every process holds every row: same numbers, files written once
            self.results = write_evaluation_artefacts(self.output_dir, class_names, paths, labels, probs, extra,
                                                      self.options, self._gradcam(pl_module),
                                                      subgroups=self._attributes(paths))
        else:
            self.results = dict(compute_metrics(class_names, labels, probs), **extra)
            # rank 0's caveats too: every rank writes run.json (pipeline/train.py), the last one wins
            self.results["warnings"] = [text for text in [collapse_warning(class_names, probs)] if text]
        scalars = {f"test/{k}": float(v) for k, v in self.results.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "params" and math.isfinite(float(v))}
        pl_module.log_dict(scalars, rank_zero_only=True)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                log_artefacts(logger, self.results, self.output_dir, log_scalars=False)

    def _attributes(self, paths: List[str]) -> Dict[str, List[Optional[str]]]:
        """attribute -> value of each scored image, in ``paths`` order (None: the image has no value)."""
        names = sorted({a for p in paths for a in self.metadata.get(p, {})})
        return {a: [self.metadata.get(p, {}).get(a) for p in paths] for a in names}

    def _gradcam(self, pl_module: pl.LightningModule) -> List[Dict[str, Any]]:
        kept = self._examples.items() if self._examples is not None else None
        if kept is None:
            return []
        from hdkd_lightning.evaluation.explain import explain_examples

        images, labels, probs, paths = kept
        net = pl_module.deploy_net
        images = images.to(next(net.parameters()).device)
        mean, std = pl_module.inference_recipe().normalization()
        return explain_examples(net, images, labels, probs, paths, pl_module.class_names, mean, std)
