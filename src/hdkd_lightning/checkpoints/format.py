"""This project's checkpoint format, its metadata, and how networks are read back from it.

A checkpoint is a Lightning checkpoint with one extra entry, ``"hdkd"`` (:data:`META_KEY`), that
says which network it carries and how to rebuild it without Lightning or the training config
(built by :func:`build_meta`, the one place that defines it)::

    {"kind": "teacher" | "student" | "distill",   # which module wrote it
     "arch": "hdkd_teacher", "net_kwargs": {...},  # timm.create_model(arch, **net_kwargs)
     "prefix": "net.",                             # where the deployable network's tensors are
     "class_names": [...], "image_size": 224, "data": "isic2018",
     "networks": {"teacher.": {"arch", "net_kwargs"}},  # other networks inside (distillation)
     "val": {"val/balanced_accuracy": 0.81, ...},  # validation metrics of these weights
     "temperature": 1.4, "calibration": {...},     # only after hdkd-eval calibrate=true
     "converted_from": "/path/original.pth"}       # only for hdkd-convert

Each network is stored once, under its prefix. Checkpoints written before that rule also held a
second copy of the trained network under ``_train_net.`` / ``_train_student.`` (with
``_orig_mod.`` inside under ``model.compile=true``); :func:`drop_duplicate_networks` removes it
when such a checkpoint is loaded.

Every read uses ``torch.load(..., weights_only=True)``: a file that needs arbitrary unpickling
(and so could run code) is refused. The network a checkpoint names is rebuilt only when it is one of
this project's, from plain settings (:func:`check_network_spec`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from hdkd_lightning.errors import CheckpointError
from hdkd_lightning.models.loading import load_strict  # lives with the networks: checkpoints import models, not the reverse

__all__ = ["META_KEY", "build_meta", "read_checkpoint", "is_project_checkpoint",
           "network_from_checkpoint", "check_network_spec", "checkpoint_val_score", "drop_duplicate_networks",
           "update_meta"]

META_KEY = "hdkd"
#: prefixes of the second copy of a network that checkpoints of earlier versions carried
LEGACY_DUPLICATE_PREFIXES = ("_train_net.", "_train_student.")


def build_meta(kind: str, arch: str, net_kwargs: Dict[str, Any], class_names: Sequence[str],
               image_size: Optional[int], data: str = "", prefix: str = "net.",
               networks: Optional[Dict[str, Dict[str, Any]]] = None, **extra: Any) -> Dict[str, Any]:
    """The ``"hdkd"`` entry of a checkpoint (see the module docstring)."""
    meta: Dict[str, Any] = {"kind": kind, "arch": arch, "net_kwargs": dict(net_kwargs), "prefix": prefix,
                            "class_names": [str(c) for c in class_names],
                            "image_size": None if image_size is None else int(image_size), "data": data}
    if networks:
        meta["networks"] = {p: {"arch": n["arch"], "net_kwargs": dict(n["net_kwargs"])} for p, n in networks.items()}
    meta.update(extra)
    return meta


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


def drop_duplicate_networks(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state_dict`` without the second network copy of older checkpoints (a no-op for new ones)."""
    return {k: v for k, v in state_dict.items() if not k.startswith(LEGACY_DUPLICATE_PREFIXES)}


def checkpoint_val_score(ckpt: Dict[str, Any], metric: str) -> Optional[float]:
    """The validation value of ``metric`` for the weights in ``ckpt``, if it was recorded.

    Read from the metadata (``val``, written with every checkpoint of this project), else from
    a ``ModelCheckpoint`` state monitoring ``metric`` (its best score, i.e. the score of a
    ``best.ckpt``); ``None`` for converted and original-code weights.
    """
    value = (ckpt.get(META_KEY) or {}).get("val", {}).get(metric)
    if value is None:
        for state in (ckpt.get("callbacks") or {}).values():
            if isinstance(state, dict) and state.get("monitor") == metric and state.get("best_model_score") is not None:
                value = state["best_model_score"]
                break
    return None if value is None else float(value)


def update_meta(path: Union[str, Path], **fields: Any) -> Dict[str, Any]:
    """Add ``fields`` to a checkpoint's ``"hdkd"`` entry, rewriting the file atomically (the rest of
    the checkpoint is kept as it is). Returns the new metadata."""
    from hdkd_lightning.files import atomic_write

    ckpt = read_checkpoint(path)
    if not is_project_checkpoint(ckpt):
        raise CheckpointError(f"{path} is not a checkpoint of this project (no '{META_KEY}' entry)")
    ckpt[META_KEY] = dict(ckpt[META_KEY], **fields)
    atomic_write(path, lambda fh: torch.save(ckpt, fh), binary=True)
    return ckpt[META_KEY]


def network_from_checkpoint(path: Union[str, Path], prefix: Optional[str] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the deployable network of a checkpoint (eval mode) and return it with its metadata.

    ``prefix`` selects another network than the deployable one, e.g. ``"teacher."`` for the
    frozen teacher stored in a distillation checkpoint.
    """
    import timm

    import hdkd_lightning.models  # noqa: F401  (registers the architectures)

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
    check_network_spec(meta["arch"], meta["net_kwargs"], path)
    net = timm.create_model(meta["arch"], **meta["net_kwargs"])
    load_strict(net, state, source=str(path))
    return net.eval(), meta


def check_network_spec(arch: Any, net_kwargs: Any, source: Union[str, Path]) -> None:
    """Refuse a network name or settings read from a file unless they are one of this project's networks
    with plain settings. timm would otherwise fetch an ``hf-hub:`` name over the network, download
    weights for ``pretrained=True`` and read whatever file ``checkpoint_path`` or
    ``pretrained_cfg_overlay`` names."""
    import inspect

    import timm
    from timm.models import build_model_with_cfg, is_model, model_entrypoint

    import hdkd_lightning.models  # noqa: F401  (registers the architectures)
    from hdkd_lightning.files import is_plain_setting

    if not (isinstance(arch, str) and is_model(arch) and model_entrypoint(arch).__module__.startswith("hdkd_lightning.")):
        ours = ", ".join(timm.list_models("hdkd_*"))
        raise CheckpointError(f"{source}: refused: it names the network {str(arch)[:80]!r}, which is not one of this "
                              f"project's ({ours}); use a checkpoint written by hdkd-train or hdkd-convert")
    timm_own = {p for f in (timm.create_model, build_model_with_cfg) for p in inspect.signature(f).parameters}
    bad = ([f"{k}={v!r}" for k, v in net_kwargs.items() if k in timm_own or not is_plain_setting(v)]
           if isinstance(net_kwargs, dict) else [repr(net_kwargs)])
    if bad:
        raise CheckpointError(f"{source}: refused: its network settings include {bad[0][:120]}, which is not a "
                              f"setting of the network itself (timm would load weights or read files for it); use a "
                              f"checkpoint written by hdkd-train or hdkd-convert")
