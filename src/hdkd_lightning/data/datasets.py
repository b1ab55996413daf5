"""Torch datasets: records -> ``{"image", "label", "path"}`` samples.

``image`` is whatever the pipeline returns (a normalised float CHW tensor with the default
pipelines), ``label`` an int (-1 when unknown), ``path`` the record's path string; the default
collate turns a batch into ``{"image": [B,3,H,W], "label": LongTensor[B], "path": list[str]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hdkd_lightning.data.base import Record, describe_paths
from hdkd_lightning.errors import DataError


class RecordDataset(Dataset):
    """``load(path) -> uint8 HxWx3`` (already at the pre-resize size), then ``transform``.

    A key may be an index or ``(epoch, index)`` (from the training samplers): the latter seeds
    the random augmentation from ``(seed, epoch, index)``, so augmentation does not depend on
    worker count, worker restarts or where a resumed run started.
    """

    def __init__(self, records: Sequence[Record], load: Callable[[str], np.ndarray], transform, seed: int = 0):
        self.records = list(records)
        self.load = load
        self.transform = transform
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key) -> dict:
        if isinstance(key, tuple):
            epoch, i = key
            if hasattr(self.transform, "set_random_seed"):
                mixed = np.random.SeedSequence([self.seed, int(epoch), int(i)]).generate_state(1)[0]
                self.transform.set_random_seed(int(mixed))
        else:
            i = key
        r = self.records[i]
        image = self.load(r.path)
        image = self.transform(image=image)["image"]
        return {"image": image, "label": int(r.label), "path": r.path}

    def reseed(self, seed: int) -> None:
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(seed) % (2**32))


class DecodeLoader:
    """Reads a file (or generates a record) through the source and pre-resizes it."""

    def __init__(self, source, records: Sequence[Record], resize, max_pixels: int | None):
        self.source = source
        self.by_path = {r.path: r for r in records}
        self.resize = resize
        self.max_pixels = max_pixels

    def __call__(self, path: str) -> np.ndarray:
        image = self.source.load(self.by_path[path], self.max_pixels)
        return self.resize(image=image)["image"]


class ImagePathsDataset(Dataset):
    """Arbitrary image files (for prediction): read with ``load_rgb``, then ``transform``
    (use :func:`hdkd_lightning.data.transforms.build_eval_transform`). ``labels`` optional."""

    def __init__(self, paths: Sequence[str | Path], transform, labels: Sequence[int] | None = None,
                 max_pixels: int | None = None):
        from hdkd_lightning.data.io import DEFAULT_MAX_PIXELS

        self.paths = [str(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        if len(self.labels) != len(self.paths):
            raise ValueError("labels and paths differ in length")
        self.transform = transform
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        from hdkd_lightning.data.io import load_rgb

        image = self.transform(image=load_rgb(self.paths[i], self.max_pixels))["image"]
        return {"image": image, "label": int(self.labels[i]), "path": self.paths[i]}


def expand_paths(inputs: Sequence[str | Path] | str | Path) -> list[str]:
    """Files stay as given; folders become their image files (recursive, sorted, hidden
    entries ignored). Missing inputs raise a :class:`DataError` naming them."""
    from hdkd_lightning.data.io import scan_images

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out: list[str] = []
    missing = []
    for p in map(Path, inputs):
        p = p.expanduser()
        if p.is_dir():
            out.extend(str(f) for f in sorted(scan_images(p)[0]))
        elif p.is_file():
            out.append(str(p))
        else:
            missing.append(str(p))
    if missing:
        raise DataError(f"{len(missing)} input path(s) do not exist: {describe_paths(missing)}.")
    if not out:
        raise DataError(f"no image files found in {describe_paths([str(p) for p in inputs])}.")
    return out


def worker_init(worker_id: int) -> None:
    """Give each loader worker (and each epoch, for non-persistent workers) its own
    augmentation stream; torch derives ``initial_seed`` from the main process RNG, so runs
    seeded with ``seed_everything`` stay reproducible."""
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(torch.initial_seed())
