"""Crash-safe checkpoint writes for Lightning: a kill at any moment leaves the previous file intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hdkd_lightning.files import atomic_write

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local files are written with :func:`hdkd_lightning.files.atomic_write` (temporary file in the
    same folder, flushed to disk, renamed), so readers see either the old complete checkpoint or
    the new complete one. Remote paths use Lightning's own writer. Loading always uses
    ``weights_only=True``.
    """

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if get_filesystem(path).protocol not in ("file", ("file", "local"), "local") and "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(Path(path), lambda fh: torch.save(checkpoint, fh), binary=True)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None):
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
