"""``model.compile``: the network a training step runs, ``torch.compile`` d on first use and never saved."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["CompileOnFirstUse"]


class CompileOnFirstUse:
    """Calling it with a network gives that network, or its ``torch.compile`` wrapper when enabled.

    A LightningModule holds it as a plain attribute (this is not an ``nn.Module``), so the wrapper,
    which shares the network's parameters, is neither registered nor saved: checkpoints have the
    same keys whether or not ``compile`` is on, and a resume may switch it. The wrapper is made at
    the first training step, after the module has reached its device and memory format.
    """

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = bool(enabled)
        self._net: Optional[nn.Module] = None
        self._compiled: Optional[nn.Module] = None

    @property
    def built(self) -> bool:
        """Whether a compiled wrapper has been made."""
        return self._compiled is not None

    def __call__(self, net: nn.Module) -> nn.Module:
        if not self.enabled:
            return net
        if self._net is not net:  # a wrapper belongs to one network: compile again if handed another
            self._net, self._compiled = net, torch.compile(net)
        return self._compiled
