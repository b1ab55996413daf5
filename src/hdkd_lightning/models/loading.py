"""Strict loading of a state dict into a network, with errors that list the keys that do not fit.

Used for this project's checkpoints (:mod:`hdkd_lightning.checkpoints.format`) and for the
original code's weights (:mod:`hdkd_lightning.models.original`). It lives with the networks and
needs only torch, so the checkpoint code imports the models and never the other way round.
"""

from __future__ import annotations

from typing import Dict, List, Type

import torch
from torch import nn

from hdkd_lightning.errors import CheckpointError

__all__ = ["describe_keys", "load_strict"]


def describe_keys(keys: List[str], limit: int = 12) -> str:
    """``a, b, c, ... (9 more)`` for error messages about state-dict keys."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(model: nn.Module, sd: Dict[str, torch.Tensor], source: str,
                error: Type[Exception] = CheckpointError) -> None:
    """Load ``sd`` into ``model``; missing, unexpected or mis-shaped keys are one ``error`` listing them."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} (file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing from the file: {describe_keys(missing)}")
    if unexpected:
        problems.append(f"not used by {type(model).__name__}: {describe_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {describe_keys(mismatched)}")
    if problems:
        raise error(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)
