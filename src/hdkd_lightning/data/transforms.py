"""Albumentations pipelines, declared in config.

A pipeline is a list of albumentations transforms, each a Hydra-instantiable mapping
(``{_target_: albumentations.HorizontalFlip, p: 0.5}``), declared in
``conf/data/transforms/<name>.yaml`` (``data.transforms.train`` / ``data.transforms.eval``);
swap the whole set with ``data/transforms=<name>`` or edit entries by override.

Every image first goes through the fixed *pre-resize* step -- ``albumentations.Resize`` to
``data.image_size`` x ``data.image_size`` (a square stretch, like the original's
``transforms.Resize((224, 224))``) with ``data.interpolation`` (default ``area``, the
anti-aliased choice for downscaling). The image cache stores exactly the pre-resized images,
so the configured lists start *after* the resize and the cache/no-cache paths give the same
input. Both configured lists must end in normalisation and ``ToTensorV2`` (the defaults do):
a sample is then a normalised float CHW tensor.

The original HDKD training pipeline (``conf/data/transforms/original.yaml``), in order:
rotation by a uniform angle in [-180, 180] (black corners, as torchvision's RandomRotation),
horizontal flip p=0.5, vertical flip p=0.5, colour jitter brightness 0.3 contrast 0.3 (always),
sharpness adjustment factor 2 with p=0.5 (:class:`AdjustSharpness`, torchvision's exact
formula), Gaussian blur kernel 3 with sigma uniform in [0.1, 2] (always), ImageNet normalise.
Eval: normalise only (after the pre-resize).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from hdkd_lightning.files import is_plain_setting, to_plain  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR,
                  "bilinear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
                  "lanczos": cv2.INTER_LANCZOS4}


class AdjustSharpness(A.ImageOnlyTransform):
    """torchvision's ``RandomAdjustSharpness``: blend the image with its 3x3-smoothed version
    (kernel [[1,1,1],[1,5,1],[1,1,1]]/13, border pixels kept) by ``sharpness_factor``
    (0 blurs, 1 is identity, 2 sharpens), applied with probability ``p``."""

    def __init__(self, sharpness_factor: float = 2.0, p: float = 0.5):
        super().__init__(p=p)
        self.sharpness_factor = float(sharpness_factor)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        x = img.astype(np.float32)
        kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0
        smooth = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT)
        if img.dtype == np.uint8:
            smooth = np.round(smooth)
        smooth[0, :] = x[0, :]
        smooth[-1, :] = x[-1, :]
        smooth[:, 0] = x[:, 0]
        smooth[:, -1] = x[:, -1]
        out = self.sharpness_factor * x + (1.0 - self.sharpness_factor) * smooth
        if img.dtype == np.uint8:
            return np.clip(np.round(out), 0, 255).astype(np.uint8)
        return out.astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sharpness_factor",)


def interpolation_code(name: str | int) -> int:
    if isinstance(name, int):
        return name
    try:
        return INTERPOLATIONS[str(name).lower()]
    except KeyError:
        raise ValueError(f"data.interpolation={name!r} is not one of {sorted(INTERPOLATIONS)}") from None


def build_resize(image_size: int, interpolation: str | int = "area") -> A.Resize:
    """The pre-resize step shared by the decode path, the cache and prediction."""
    return A.Resize(int(image_size), int(image_size), interpolation=interpolation_code(interpolation))


def _instantiate(entries: Sequence[Any] | None, where: str) -> list:
    from hydra.utils import instantiate

    if entries is None:
        return []
    entries = to_plain(entries)
    if isinstance(entries, Mapping):  # allow {name: entry} as well as a list
        entries = [e for e in entries.values() if e is not None]
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, A.BasicTransform) or isinstance(e, A.BaseCompose):
            out.append(e)
            continue
        if not isinstance(e, Mapping) or "_target_" not in e:
            raise ValueError(f"{where}[{i}] = {e!r} is not a transform: each entry needs a "
                             f"_target_ such as albumentations.HorizontalFlip.")
        try:
            out.append(instantiate(e))
        except Exception as err:
            raise ValueError(f"{where}[{i}] ({e.get('_target_')}) cannot be built: {err}") from err
    return out


def build_pipeline(entries: Sequence[Any] | None, *, image_size: int | None = None,
                   interpolation: str | int = "area", where: str = "data.transforms",
                   seed: int | None = None) -> A.Compose:
    """Compose the configured ``entries``; with ``image_size`` the pre-resize comes first."""
    steps = _instantiate(entries, where)
    if image_size is not None:
        steps = [build_resize(image_size, interpolation), *steps]
    return A.Compose(steps, seed=seed)


def default_train_entries() -> list[dict]:
    """The original HDKD training augmentations (also in conf/data/transforms/original.yaml)."""
    return [
        {"_target_": "albumentations.Rotate", "limit": 180, "interpolation": cv2.INTER_LINEAR,
         "border_mode": cv2.BORDER_CONSTANT, "fill": 0, "p": 1.0},
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.VerticalFlip", "p": 0.5},
        {"_target_": "albumentations.ColorJitter", "brightness": 0.3, "contrast": 0.3,
         "saturation": 0.0, "hue": 0.0, "p": 1.0},
        {"_target_": "hdkd_lightning.data.transforms.AdjustSharpness", "sharpness_factor": 2.0,
         "p": 0.5},
        {"_target_": "albumentations.GaussianBlur", "blur_limit": [3, 3],
         "sigma_limit": [0.1, 2.0], "p": 1.0},
        *default_eval_entries(),
    ]


def default_eval_entries() -> list[dict]:
    return [
        {"_target_": "albumentations.Normalize", "mean": list(IMAGENET_MEAN),
         "std": list(IMAGENET_STD), "max_pixel_value": 255.0},
        {"_target_": "albumentations.pytorch.ToTensorV2"},
    ]


def build_eval_transform(image_size: int, interpolation: str | int = "area",
                         entries: Sequence[Any] | None = None) -> A.Compose:
    """The evaluation pipeline for arbitrary images: ``pipeline(image=uint8 HxWx3)["image"]``
    is a normalised float32 tensor 3 x image_size x image_size (resize, normalise, to tensor).
    ``entries`` defaults to the original eval list (ImageNet normalisation)."""
    return build_pipeline(default_eval_entries() if entries is None else entries,
                          image_size=image_size, interpolation=interpolation,
                          where="data.transforms.eval")


def build_train_transform(image_size: int, interpolation: str | int = "area",
                          entries: Sequence[Any] | None = None, seed: int | None = None) -> A.Compose:
    return build_pipeline(default_train_entries() if entries is None else entries,
                          image_size=image_size, interpolation=interpolation,
                          where="data.transforms.train", seed=seed)


#: the steps a checkpoint or model card may name in its evaluation pipeline: deterministic pixel operations
#: whose settings are plain numbers. Hydra builds whatever an entry names (``torch.utils.cpp_extension.
#: load_inline``, ``torch.load``, ...), and these files come from anywhere, so nothing else is built from them.
RECORDABLE_TRANSFORMS = frozenset({
    "albumentations.Normalize", "albumentations.pytorch.ToTensorV2", "albumentations.pytorch.transforms.ToTensorV2",
    "albumentations.Resize", "albumentations.CenterCrop", "albumentations.PadIfNeeded", "albumentations.LongestMaxSize",
    "albumentations.SmallestMaxSize", "albumentations.ToGray", "albumentations.CLAHE",
})


def recorded_eval_entries(entries: Sequence[Any], where: str) -> list[dict]:
    """Eval entries read from a file, checked before anything is built from them: each names one of
    :data:`RECORDABLE_TRANSFORMS`, and its settings are numbers, strings or lists of them (no nested
    ``_target_``, no Hydra keys such as ``_args_``, no ``${...}`` interpolation). Returns plain copies."""
    from hdkd_lightning.errors import CheckpointError

    out = []
    for i, entry in enumerate(entries):
        target = entry.get("_target_") if isinstance(entry, Mapping) else None
        if target not in RECORDABLE_TRANSFORMS:
            raise CheckpointError(f"{where}[{i}] names {str(target)[:120]!r}, which is not one of the evaluation steps a "
                                  f"checkpoint or model card may name ({', '.join(sorted(RECORDABLE_TRANSFORMS))}): "
                                  f"refused, since it would be built and run; use the file as this project wrote it")
        bad = [k for k, v in entry.items() if k != "_target_" and (str(k).startswith("_") or not is_plain_setting(v))]
        if bad:
            raise CheckpointError(f"{where}[{i}] ({target}) has the setting {str(bad[0])[:80]!r} = "
                                  f"{str(entry[bad[0]])[:80]!r}, which is not a plain value: refused, since Hydra would "
                                  f"build or resolve it; use the file as this project wrote it")
        out.append(dict(entry))
    return out


__all__ = ["AdjustSharpness", "build_eval_transform", "build_train_transform", "build_pipeline",
           "build_resize", "recorded_eval_entries", "RECORDABLE_TRANSFORMS", "IMAGENET_MEAN", "IMAGENET_STD",
           "ToTensorV2"]
