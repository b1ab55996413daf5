"""This project's checkpoint format and how networks are read back from it.

A checkpoint is a Lightning checkpoint with one extra entry, ``"hdkd"``, that says which network
it carries and how to rebuild it without Lightning or the training config::

    {"kind": "teacher" | "student" | "distill",   # which module wrote it
     "arch": "hdkd_teacher", "net_kwargs": {...},  # timm.create_model(arch, **net_kwargs)
     "prefix": "net.",                             # where the deployable network's tensors are
     "class_names": [...], "image_size": 224, "data": "isic2018",
     "val": {"val/balanced_accuracy": 0.81, ...}}  # validation metrics of these weights

Every read uses ``torch.load(..., weights_only=True)``: a file that needs arbitrary unpickling
(and so could run code) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["CheckpointError", "read_checkpoint", "network_from_checkpoint", "is_project_checkpoint",
           "checkpoint_val_score", "META_KEY"]

META_KEY = "hdkd"


class CheckpointError(ValueError):
    """A checkpoint cannot be used as asked (unsafe, foreign, or not matching)."""


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """The checkpoint's content, read without executing code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: refused to load: it cannot be read as plain tensors and data (weights_only=True), so it "
            f"could run code or is damaged. Only use checkpoints written by hdkd-train or hdkd-convert, or "
            f"weight files of the original code. ({type(exc).__name__}: {first[:200]})"
        ) from None


def is_project_checkpoint(ckpt: Dict[str, Any]) -> bool:
    return isinstance(ckpt, dict) and isinstance(ckpt.get(META_KEY), dict) and "state_dict" in ckpt


def checkpoint_val_score(ckpt: Dict[str, Any], metric: str) -> Optional[float]:
    """The validation value of ``metric`` for the weights in ``ckpt``, if it was recorded.

    Read from the metadata (``val``, written with every checkpoint of this project), else from
    a ``ModelCheckpoint`` state monitoring ``metric`` (its best score, i.e. the score of a
    ``best.ckpt``); ``None`` for converted and original-code weights.
    """
    value = (ckpt.get(META_KEY) or {}).get("val", {}).get(metric)
    if value is None:
        for key, state in (ckpt.get("callbacks") or {}).items():
            if isinstance(state, dict) and state.get("monitor") == metric and state.get("best_model_score") is not None:
                value = state["best_model_score"]
                break
    return None if value is None else float(value)


def network_from_checkpoint(path: Union[str, Path], prefix: str = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the deployable network of a checkpoint (eval mode) and return it with its metadata.

    ``prefix`` selects another network than the deployable one, e.g. ``"teacher."`` for the
    frozen teacher stored in a distillation checkpoint.
    """
    import timm

    import hdkd_lightning.models  # noqa: F401  (registers the architectures)
    from hdkd_lightning.models.original import load_strict

    ckpt = read_checkpoint(path)
    if not is_project_checkpoint(ckpt):
        raise CheckpointError(
            f"{path} is not a checkpoint of this project (no '{META_KEY}' entry). For a weights file of the "
            f"original HDKD code, convert it first: hdkd-convert input={path} arch=<hdkd_teacher|hdkd_student|"
            f"hdkd_student_distilled> output=<file.ckpt> data=<dataset config>"
        )
    meta = dict(ckpt[META_KEY])
    if prefix is not None and prefix != meta["prefix"]:
        sub = meta.get("networks", {}).get(prefix)
        if sub is None:
            raise CheckpointError(f"{path} holds no network under '{prefix}'")
        meta.update(sub, prefix=prefix)
    prefix = meta["prefix"]
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    net = timm.create_model(meta["arch"], **meta["net_kwargs"])
    load_strict(net, state, source=str(path))
    return net.eval(), meta
