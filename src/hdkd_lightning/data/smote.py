"""SMOTE oversampling of the training images, as in the original code. **Not recommended.**

The original flattens every training image to a pixel vector and lets imbalanced-learn's SMOTE
interpolate new vectors between same-class neighbours; the new images are blends of two
images (ghosting), the whole training set must sit in memory as float vectors
(``N x S x S x 3`` floats: about 8 GB for HAM10000 at 224 px), and the authors themselves do not
recommend it for large or balanced data. Prefer ``data.sampler=weighted`` or the DataModule's
``class_weights()`` in the loss. Kept for parity: ``data.smote=true``, per-class target counts
via ``data.smote_strategy`` (``auto`` = every class up to the largest, or a mapping
``{class name: count}``, or a path to a JSON file with that mapping, as the original's), and
``data.smote_k_neighbors`` (clipped to the smallest class size - 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hdkd_lightning.errors import DataError


def resolve_strategy(strategy, class_names: Sequence[str]):
    if strategy is None or strategy == "auto":
        return "auto"
    if isinstance(strategy, str):
        file = Path(strategy).expanduser()
        if not file.is_file():
            raise DataError(f"data.smote_strategy={strategy!r} is neither 'auto' nor a JSON file.")
        strategy = json.loads(file.read_text())
    if not isinstance(strategy, Mapping):
        raise DataError(f"data.smote_strategy must be 'auto', a mapping or a JSON file; got {strategy!r}.")
    index = {n: i for i, n in enumerate(class_names)}
    out = {}
    for k, v in strategy.items():
        if str(k) in index:
            out[index[str(k)]] = int(v)
        elif str(k).isdigit() and int(k) < len(class_names):
            out[int(k)] = int(v)
        else:
            raise DataError(f"data.smote_strategy: unknown class {k!r}; classes are {list(class_names)}.")
    return out


def smote_oversample(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                     strategy="auto", k_neighbors: int = 5, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The *new* images (uint8 N'xSxSx3) and labels SMOTE adds to ``images``/``labels``."""
    from imblearn.over_sampling import SMOTE

    counts = np.bincount(labels, minlength=len(class_names))
    present = counts[counts > 0]
    if len(present) < 2:
        raise DataError("data.smote=true needs at least two classes in the training split.")
    k = int(max(1, min(k_neighbors, present.min() - 1)))
    if present.min() < 2:
        raise DataError("data.smote=true needs at least 2 training images in every class.")
    sampling = resolve_strategy(strategy, class_names)
    if isinstance(sampling, dict):  # imblearn wants totals >= current counts
        sampling = {c: max(n, int(counts[c])) for c, n in sampling.items()}
    flat = images.reshape(len(images), -1).astype(np.float32)
    x, y = SMOTE(sampling_strategy=sampling, k_neighbors=k, random_state=seed).fit_resample(flat, labels)
    new_x = x[len(images):]
    new_y = np.asarray(y[len(images):], dtype=np.int64)
    return np.clip(np.rint(new_x), 0, 255).astype(np.uint8).reshape((-1, *images.shape[1:])), new_y
