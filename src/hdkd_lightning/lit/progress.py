"""Progress output that suits where it goes: a rich bar on a terminal, one plain line per epoch in a
batch job's log (SLURM, nohup, CI), where a live bar leaves only control characters.

:func:`progress_bar` (the ``callbacks.rich_progress_bar`` config) picks one when the run starts:
``RichProgressBar`` when stdout is a terminal, :class:`EpochLines` otherwise. A line reads::

    epoch 3/30 | train/loss 0.8123 | val/loss 0.7012 | val/balanced_accuracy 0.7331 | 21.4 s | ETA 9.6 min
"""

from __future__ import annotations

import sys
import time
from typing import List, Optional

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

__all__ = ["EpochLines", "progress_bar"]

_SHOWN = ("train/loss_epoch", "val/loss", "val/balanced_accuracy", "val/accuracy", "val/f1_macro", "val/auroc_macro")


class EpochLines(ProgressBar):
    """One line per finished training epoch on stdout (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started: Optional[float] = None
        self._durations: List[float] = []

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._enabled or not trainer.is_global_zero or self._started is None:
            return
        seconds = time.perf_counter() - self._started
        self._durations.append(seconds)
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        parts = [f"epoch {epoch}/{total}" if total and total > 0 else f"epoch {epoch}"]
        metrics = trainer.callback_metrics
        for key in _SHOWN:
            if key in metrics:
                parts.append(f"{key.replace('_epoch', '')} {float(metrics[key]):.4f}")
        parts.append(f"{seconds:.1f} s")
        if total and total > 0 and epoch < total:
            recent = self._durations[-5:]
            parts.append(f"ETA {(total - epoch) * sum(recent) / len(recent) / 60:.1f} min")
        print(" | ".join(parts), file=sys.stdout, flush=True)


def progress_bar(**rich_kwargs) -> ProgressBar:
    """``RichProgressBar`` on a terminal, :class:`EpochLines` when stdout is redirected."""
    return RichProgressBar(**rich_kwargs) if sys.stdout.isatty() else EpochLines()
