"""How to run a trained network on an image: the inference recipe, read from one place.

A checkpoint (and the model card of an exported file) says how its network was fed during
training and evaluation; :func:`inference_recipe` turns that into an :class:`InferenceRecipe`,
which ``hdkd-eval``, ``hdkd-predict`` (checkpoint, ``.pt2``, ``.onnx``), ``hdkd-export`` (its
model card) and ``hdkd-explain`` all use:

* **input size**: ``image_size`` x ``image_size``, a square stretch (aspect ratio not kept);
* **resize interpolation**: ``data.interpolation`` of the run (``area`` unless changed);
* **normalisation**: the run's ``data.transforms.eval`` list after the resize (ImageNet
  statistics unless changed), ending in ``ToTensorV2``;
* **temperature**: ``softmax(logits / T)``; ``T`` is set by ``hdkd-eval calibrate=true``;
* **heads**: the distilled student's two heads (class and distillation token) are averaged
  inside its eval-mode forward, so every backend sees one logit vector.

Where the recipe is read from: the checkpoint's data record (``provenance.preprocessing``,
:mod:`hdkd_lightning.data.provenance`), else a model card's ``preprocessing``; checkpoints and
cards written before the record existed get the defaults of that time (area resize, ImageNet
statistics) and ``recorded = False``, which the commands report once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["InferenceRecipe", "inference_recipe", "probabilities", "HEADS_MEAN", "HEADS_SINGLE"]

HEADS_MEAN = "mean of the class and distillation heads (in the network's eval forward)"
HEADS_SINGLE = "one head"
_TWO_HEAD_ARCHS = ("hdkd_student_distilled",)


def probabilities(logits: torch.Tensor, temperature: Optional[float] = None) -> torch.Tensor:
    """``softmax(logits / T)`` in float32 (``T`` None or 1: plain softmax): the one home of the rule."""
    logits = logits.float()
    if temperature not in (None, 1.0):
        logits = logits / float(temperature)
    return torch.softmax(logits, dim=1)


@dataclasses.dataclass(frozen=True)
class InferenceRecipe:
    """See the module docstring."""

    image_size: int
    interpolation: str = "area"
    eval_entries: Tuple[Dict[str, Any], ...] = ()
    temperature: Optional[float] = None
    heads: str = HEADS_SINGLE
    recorded: bool = True  # False: an older checkpoint or card, the defaults of that time are assumed

    def transform(self):
        """The albumentations pipeline: uint8 HxWx3 -> normalised float tensor 3 x S x S."""
        from hdkd_lightning.data.transforms import build_eval_transform

        return build_eval_transform(self.image_size, self.interpolation, [dict(e) for e in self.eval_entries])

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return probabilities(logits, self.temperature)

    def image_files(self, paths, class_names: Sequence[str], **options: Any):
        """A DataModule serving image files / folders through this recipe (``predict_dataloader``);
        ``options`` go to ``HdkdDataModule.from_paths`` (batch size, bad-file handling, ...)."""
        from hdkd_lightning.data.datamodule import HdkdDataModule

        return HdkdDataModule.from_paths(paths, image_size=self.image_size, class_names=list(class_names),
                                         interpolation=self.interpolation,
                                         transforms={"eval": [dict(e) for e in self.eval_entries]}, **options)

    def normalization(self) -> Tuple[Sequence[float], Sequence[float]]:
        """Mean and std of the recipe's ``Normalize`` step (to show a preprocessed image again)."""
        for entry in self.eval_entries:
            if str(entry.get("_target_", "")).endswith("Normalize"):
                return tuple(entry.get("mean", (0.0, 0.0, 0.0))), tuple(entry.get("std", (1.0, 1.0, 1.0)))
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def card_entry(self) -> Dict[str, Any]:
        """The ``preprocessing`` entry of a model card (read back by :func:`inference_recipe`)."""
        mean, std = self.normalization()
        return {"resize": f"to {self.image_size}x{self.image_size}, aspect ratio not kept",
                "interpolation": self.interpolation, "eval": [dict(e) for e in self.eval_entries],
                "mean": list(mean), "std": list(std), "scale": "pixel / 255, then (x - mean) / std",
                "layout": "NCHW float32 RGB", "heads": self.heads,
                "recorded_in_checkpoint": self.recorded}  # false: the defaults of earlier versions, assumed

    def as_dict(self) -> Dict[str, Any]:
        return {"image_size": self.image_size, "interpolation": self.interpolation,
                "eval": [dict(e) for e in self.eval_entries], "temperature": self.temperature,
                "heads": self.heads, "recorded": self.recorded}


def _plain_entries(entries: Optional[Sequence[Mapping[str, Any]]]) -> Optional[List[Dict[str, Any]]]:
    return None if entries is None else [dict(e) for e in entries]


def inference_recipe(meta: Mapping[str, Any]) -> InferenceRecipe:
    """The recipe of a checkpoint's metadata (``"hdkd"`` entry) or of a model card."""
    from hdkd_lightning.data.transforms import default_eval_entries, recorded_eval_entries

    pre = ((meta.get("provenance") or {}).get("preprocessing")  # a checkpoint with a data record
           or meta.get("preprocessing") or {})                   # a model card
    entries = _plain_entries(pre.get("eval"))
    if entries is None and pre.get("mean") is not None:  # cards of earlier versions: statistics only
        entries = [{"_target_": "albumentations.Normalize", "mean": list(pre["mean"]), "std": list(pre["std"]),
                    "max_pixel_value": 255.0}, {"_target_": "albumentations.pytorch.ToTensorV2"}]
    if entries is not None:  # read from a checkpoint or model card: checked before Hydra builds anything from it
        entries = recorded_eval_entries(entries, "the checkpoint's or model card's preprocessing.eval")
    recorded = entries is not None and "interpolation" in pre
    temperature = meta.get("temperature")
    return InferenceRecipe(
        image_size=int(pre.get("image_size") or meta["image_size"]),
        interpolation=str(pre.get("interpolation") or "area"),
        eval_entries=tuple(entries if entries is not None else default_eval_entries()),
        temperature=None if temperature is None else float(temperature),
        heads=HEADS_MEAN if meta.get("arch") in _TWO_HEAD_ARCHS else HEADS_SINGLE,
        recorded=recorded)
