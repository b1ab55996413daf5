"""The model card: a JSON file beside every exported network saying how to use it.

``<file>.json`` next to the exported ``<file>`` (``student.onnx.json`` for ``student.onnx``, see
:func:`card_path`)::

    {"format": "onnx", "file": "student.onnx",
     "arch": "hdkd_student_distilled", "net_kwargs": {...},   # timm.create_model(arch, **net_kwargs)
     "class_names": [...], "image_size": 224,
     "preprocessing": {"resize": "...", "interpolation": "area", "eval": [albumentations entries],
                       "mean": [...], "std": [...], "scale": "pixel / 255", "layout": "NCHW float32 RGB",
                       "heads": "..."},                        # the inference recipe (deploy.recipe)
     "input": "image", "output": "logits", "outputs_are": "logits (softmax not applied)",
     "temperature": null,                                      # divide logits by it before softmax
     "source_checkpoint": {"path": "...", "sha256": "..."},
     "test_metrics": {"balanced_accuracy": ...} | null,
     "parity": {"max_abs_logit_diff": 3e-7, "tolerance": 1e-4, "images": 16, "inputs": "..."},
     "exported_with": {"hdkd_lightning": "...", "torch": "...", ...}}

The preprocessing is the trained run's own evaluation pipeline (resize to ``image_size`` x
``image_size`` with the run's interpolation, aspect ratio not kept, then the run's
``data.transforms.eval`` list), written and read by :mod:`hdkd_lightning.deploy.recipe`;
``hdkd-predict`` applies it from the card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from hdkd_lightning.errors import CheckpointError
from hdkd_lightning.files import write_json_atomic

__all__ = ["card_path", "write_card", "read_card"]


def card_path(artefact: Union[str, Path]) -> Path:
    """The card of ``student.onnx`` is ``student.onnx.json`` (same folder): exports of one network in
    several formats keep one card each."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + ".json")


def write_card(artefact: Union[str, Path], card: Dict[str, Any]) -> Path:
    return write_json_atomic(card_path(artefact), card)


def read_card(artefact: Union[str, Path], card: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """The card of an exported file (``card`` overrides where it is looked for)."""
    path = Path(card) if card else card_path(artefact)
    if not path.is_file():
        raise CheckpointError(f"{artefact}: its model card {path} is missing; it is written by hdkd-export beside "
                                f"the exported file (or pass card=<file.json>)")
    try:  # JSON only; the fields used are checked below, the preprocessing by deploy.recipe
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"model card {path} is not valid JSON ({exc}); re-export the model with hdkd-export") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"model card {path} is not a JSON object; re-export the model with hdkd-export")
    for key in ("class_names", "image_size"):
        if key not in data:
            raise CheckpointError(f"model card {path} has no '{key}'; re-export the model with hdkd-export")
    names, size, temperature = data["class_names"], data["image_size"], data.get("temperature")
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)
            or not isinstance(size, int) or isinstance(size, bool) or size <= 0
            or not (temperature is None or (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")))):
        raise CheckpointError(f"model card {path}: class_names must be a list of names, image_size a positive integer and "
                         f"temperature null or a positive number; re-export the model with hdkd-export")
    return data
