"""What a training step does with a NaN or infinite loss (``model.nonfinite_loss``).

``error`` stops the run, naming the loss components; ``skip`` drops that step. On the CPU the check
is free and runs every step. On an accelerator, reading the loss on the host would stall the device
every step, so with ``error`` the step only counts non-finite losses on the device; the module reads
the count (:meth:`NonFiniteLossGuard.raise_if_seen`) every ``trainer.log_every_n_steps`` steps, at the
end of each epoch and before any checkpoint is written, so a diverged run still stops and never
overwrites a good checkpoint. ``skip`` has to decide within the step and reads the loss every step.
"""

from __future__ import annotations

from typing import Dict, Optional

import lightning.pytorch as pl
import torch

__all__ = ["NonFiniteLossGuard"]


class NonFiniteLossGuard:
    """The non-finite-loss check of one LightningModule (see the module docstring).

    The module holds it as a plain attribute and calls :meth:`check` in its training step,
    :meth:`raise_if_seen` from its batch-end, epoch-end and checkpoint hooks and :meth:`reset` when a
    fit starts. The count it keeps on the device is never part of the module's state.
    """

    ADVICE = ("Lower the learning rate, enable gradient clipping (trainer.gradient_clip_val=1.0) or "
              "check the data; the last good checkpoint is kept.")

    def __init__(self, mode: str = "error") -> None:
        self.mode = mode
        self._count: Optional[torch.Tensor] = None  # non-finite losses not yet read on the host

    def reset(self) -> None:
        """Start counting afresh (a new fit)."""
        self._count = None

    def defer(self, loss: torch.Tensor) -> bool:
        """Whether ``error`` only counts this loss for a later read instead of reading it now."""
        return loss.device.type != "cpu"

    def check(self, loss: torch.Tensor, parts: Dict[str, torch.Tensor],
              module: pl.LightningModule) -> Optional[torch.Tensor]:
        """``loss``, or None when the step is to be skipped; raises ``FloatingPointError`` naming
        ``parts`` (the loss components) and ``module``'s epoch and step when it must stop."""
        if self.mode == "error" and self.defer(loss):
            bad = (~torch.isfinite(loss.detach())).sum()
            self._count = bad if self._count is None else self._count + bad
            return loss
        if torch.isfinite(loss).all():
            return loss
        detail = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
        msg = (f"non-finite loss at epoch {module.current_epoch}, global step {module.global_step}: {detail}. "
               f"{self.ADVICE}")
        if self.mode == "skip":
            module.print(f"WARNING: skipping step: {msg}")
            return None
        raise FloatingPointError(msg)

    def raise_if_seen(self, module: pl.LightningModule) -> None:
        """Read the device-side count (one host synchronisation) and stop if any loss was non-finite."""
        if self._count is not None and int(self._count) > 0:
            n = int(self._count)
            raise FloatingPointError(f"non-finite loss in {n} training step(s) up to epoch {module.current_epoch}, "
                                     f"global step {module.global_step}. {self.ADVICE}")
