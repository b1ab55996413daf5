"""Evaluation results sent to Lightning loggers: scalars to every logger, the confusion matrix
image (and the per-class table) to Weights & Biases and TensorBoard."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from hdkd_lightning.evaluation.artefacts import CONFUSION_PNG
from hdkd_lightning.evaluation.figures import png_bytes, render_confusion_matrix
from hdkd_lightning.evaluation.metrics import PER_CLASS_KEYS

__all__ = ["log_artefacts"]


def _flatten_scalars(metrics: Mapping[str, Any], prefix: str) -> Dict[str, float]:
    def number(v: Any) -> Optional[float]:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            return None
        v = float(v)
        return v if math.isfinite(v) else None

    sep = "/" if prefix else ""
    flat: Dict[str, float] = {}
    for key, value in metrics.items():
        v = number(value)
        if v is not None:
            flat[f"{prefix}{sep}{key}"] = v
    for name, row in (metrics.get("per_class") or {}).items():
        for key, value in row.items():
            v = number(value)
            if v is not None:
                flat[f"{prefix}{sep}per_class/{name}/{key}"] = v
    return flat


def log_artefacts(logger: Any, metrics: Mapping[str, Any], output_dir: Union[str, Path], *,
                  prefix: str = "test", log_scalars: bool = True, step: Optional[int] = None) -> None:
    """Send evaluation results to a Lightning logger (or a list of them; None does nothing).

    * every logger: the finite numeric scalars, flattened (``test/balanced_accuracy``,
      ``test/per_class/<class>/f1``, ...) via ``logger.log_metrics`` (skip with ``log_scalars=False``
      when ``LightningModule.log_dict`` already logged them);
    * ``WandbLogger``: the confusion-matrix image (``wandb.Image``) and the per-class table
      (``wandb.Table``);
    * ``TensorBoardLogger``: the confusion-matrix image (``add_image``).

    The image is ``output_dir/confusion_matrix.png`` (rendered from ``metrics`` if absent). A
    failure to upload media is reported as a warning: the files on disk are the record.
    """
    if logger is None:
        return
    if isinstance(logger, (list, tuple)):
        for one in logger:
            log_artefacts(one, metrics, output_dir, prefix=prefix, log_scalars=log_scalars, step=step)
        return
    if log_scalars:
        flat = _flatten_scalars(metrics, prefix)
        if flat:
            logger.log_metrics(flat, step=step)

    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if not isinstance(logger, (WandbLogger, TensorBoardLogger)) or "confusion_matrix" not in metrics:
        if log_scalars:
            logger.save()
        return
    sep = "/" if prefix else ""
    try:
        from PIL import Image

        png = Path(output_dir) / CONFUSION_PNG
        if png.is_file():
            image = Image.open(png)
            image.load()
        else:
            names = metrics.get("class_names") or list((metrics.get("per_class") or {}).keys())
            image = Image.open(io.BytesIO(png_bytes(render_confusion_matrix(metrics["confusion_matrix"], names))))
        image = image.convert("RGB")
        if isinstance(logger, WandbLogger):
            import wandb

            columns = ["class", *PER_CLASS_KEYS]
            rows = [[name, *[row.get(k) for k in PER_CLASS_KEYS]] for name, row in (metrics.get("per_class") or {}).items()]
            rows = [[None if isinstance(v, float) and not math.isfinite(v) else v for v in r] for r in rows]
            logger.experiment.log({f"{prefix}{sep}confusion_matrix": wandb.Image(image),
                                   f"{prefix}{sep}per_class": wandb.Table(columns=columns, data=rows)})
        else:
            logger.experiment.add_image(f"{prefix}{sep}confusion_matrix", np.asarray(image),
                                        global_step=step or 0, dataformats="HWC")
    except Exception as err:  # noqa: BLE001 - media upload is best effort, the files are on disk
        warnings.warn(f"could not log the confusion matrix to {type(logger).__name__}: {err!r}", UserWarning,
                      stacklevel=2)
    logger.save()
