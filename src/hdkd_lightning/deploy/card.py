"""The model card: a JSON file beside every exported network saying how to use it.

``<file>.json`` next to the exported ``<file>`` (``student.onnx.json`` for ``student.onnx``, see
:func:`card_path`)::

    {"format": "onnx", "file": "student.onnx",
     "arch": "hdkd_student_distilled", "net_kwargs": {...},   # timm.create_model(arch, **net_kwargs)
     "class_names": [...], "image_size": 224,
     "preprocessing": {"resize": "...", "interpolation": "area", "mean": [...], "std": [...],
                       "scale": "pixel / 255", "layout": "NCHW float32 RGB"},
     "input": "image", "output": "logits", "outputs_are": "logits (softmax not applied)",
     "temperature": null,                                      # divide logits by it before softmax
     "source_checkpoint": {"path": "...", "sha256": "..."},
     "test_metrics": {"balanced_accuracy": ...} | null,
     "parity": {"max_abs_logit_diff": 3e-7, "tolerance": 1e-4, "images": 16, "inputs": "..."},
     "exported_with": {"hdkd_lightning": "...", "torch": "...", ...}}

The preprocessing is this project's evaluation pipeline (``data.transforms`` ``eval``: resize to
``image_size`` x ``image_size`` with the given interpolation, aspect ratio not kept, then
ImageNet normalisation), which ``hdkd-predict`` applies from the card.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from hdkd_lightning.files import write_json_atomic

__all__ = ["card_path", "sha256_file", "write_card", "read_card", "preprocessing", "eval_entries"]


def card_path(artefact: Union[str, Path]) -> Path:
    """The card of ``student.onnx`` is ``student.onnx.json`` (same folder): exports of one network in
    several formats keep one card each."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + ".json")


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def preprocessing(image_size: int, interpolation: str = "area") -> Dict[str, Any]:
    """The evaluation preprocessing of this project (``data.transforms`` ``eval``), as card data."""
    from hdkd_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return {"resize": f"to {image_size}x{image_size}, aspect ratio not kept", "interpolation": interpolation,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "pixel / 255, then (x - mean) / std",
            "layout": "NCHW float32 RGB"}


def eval_entries(card: Dict[str, Any]) -> list:
    """The albumentations entries (after the resize) that reproduce a card's preprocessing."""
    pre = card.get("preprocessing") or preprocessing(int(card["image_size"]))
    return [{"_target_": "albumentations.Normalize", "mean": list(pre["mean"]), "std": list(pre["std"]),
             "max_pixel_value": 255.0},
            {"_target_": "albumentations.pytorch.ToTensorV2"}]


def write_card(artefact: Union[str, Path], card: Dict[str, Any]) -> Path:
    return write_json_atomic(card_path(artefact), card)


def read_card(artefact: Union[str, Path], card: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """The card of an exported file (``card`` overrides where it is looked for)."""
    path = Path(card) if card else card_path(artefact)
    if not path.is_file():
        raise FileNotFoundError(f"{artefact}: its model card {path} is missing; it is written by hdkd-export beside "
                                f"the exported file (or pass card=<file.json>)")
    data = json.loads(path.read_text())
    for key in ("class_names", "image_size"):
        if key not in data:
            raise ValueError(f"model card {path} has no '{key}'; re-export the model with hdkd-export")
    return data
