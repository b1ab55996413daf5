"""``model.channels_last``: the memory format of the trained networks and their batches.

``true`` or ``false`` force it; ``auto`` follows :func:`hdkd_lightning.distillation.auto_channels_last`
(channels-last on CUDA only), the rule ``hdkd-bench`` measures with.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from hdkd_lightning.distillation import auto_channels_last

__all__ = ["ChannelsLast"]


class ChannelsLast:
    """One ``model.channels_last`` value (``True``, ``False`` or ``"auto"``), checked when made."""

    def __init__(self, value: Any = "auto") -> None:
        if not (value == "auto" or isinstance(value, bool)):
            raise ValueError(f"model.channels_last must be true, false or auto, got {value!r}")
        self.value = value

    def on(self, device: torch.device) -> bool:
        """Whether training runs channels-last on ``device``."""
        return auto_channels_last(device.type) if self.value == "auto" else bool(self.value)

    def apply(self, nets: Iterable[nn.Module], device: torch.device) -> None:
        """Put ``nets`` in the layout chosen for ``device``; in place, so an optimiser built on their
        parameters keeps them."""
        if self.on(device):
            for net in nets:
                net.to(memory_format=torch.channels_last)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the layout of the networks on its device."""
        if self.on(images.device):
            return images.contiguous(memory_format=torch.channels_last)
        return images
