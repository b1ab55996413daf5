"""The data record of a run: what it trained, validated and tested on, kept so that later commands can check it.

Every training run builds one :func:`data_record` from its prepared data; it goes into each
checkpoint's metadata (``"provenance"``, whole) and into ``run.json`` and ``metrics.json``
(:func:`record_summary`: without the image lists). Later commands read it back:

* a distillation run refuses a teacher whose training images include any of its validation or
  test images (:func:`count_seen`, called by ``checkpoints.teacher``);
* ``hdkd-eval``, the int8 gate of ``hdkd-export`` and ``calibrate=true`` evaluate on the split the
  checkpoint recorded (``splits_csv``), and say how many evaluated images the model trained on.

**Image identity.** An image is known by its keys (:func:`image_keys`): ``b2:<hash>``, the BLAKE2b
hash of the file's bytes (the same hash ``data.dedup`` uses), so a copy under another root or
dataset name is the same image; and for file names carrying an ISIC image id (``ISIC_0024306``:
HAM10000, ISIC 2018 and the ISIC archive name images this way) ``isic:<id>``, so the same
lesion photograph re-encoded or resized by a mirror still counts. Generated images (the synthetic
source) are known by their path. Two images are the same when they share a key.

Layout of a record (``version`` 1)::

    {"version": 1,
     "data": {"name": "ham10000", "source": "ham10000", "root": "/abs/path", "class_names": [...]},
     "split": {"seed": 0, "val_fraction": .15, "test_fraction": .15, "dedup": false,
               "split_file": null, "fingerprint": "<16 hex>", "counts": {"train": n, ...}},
     "subset": {"train_per_class": 100, "train_fraction": null, "seed": 0, "fingerprint": "<16 hex>"},
     "preprocessing": {"image_size": 224, "interpolation": "area", "eval": [albumentations entries]},
     "images": {"train": [keys], "val": [keys], "test": [keys]},   # checkpoint only
     "splits_csv": "path,label,split,group\\n..."}                  # checkpoint only

``split.fingerprint`` covers the validation and test images (their first key, sorted), so two
runs with the same fingerprint were selected and tested on the same images whatever their
training subset; ``subset.fingerprint`` covers the training images.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RECORD_VERSION = 1
#: the entries of a record that only the checkpoint keeps (large)
_BULKY = ("images", "splits_csv")
_ISIC_ID = re.compile(r"(ISIC_\d{7})", re.IGNORECASE)

__all__ = ["RECORD_VERSION", "image_keys", "fingerprint", "data_record", "record_summary", "key_set",
           "count_seen"]


def image_keys(path: str, content_hash: str | None) -> tuple[str, ...]:
    """The keys that identify one image (module docstring): content hash, ISIC id, or the path."""
    keys = []
    if content_hash:
        keys.append(f"b2:{content_hash}")
    found = _ISIC_ID.search(path.replace("\\", "/").rsplit("/", 1)[-1])
    if found:
        keys.append(f"isic:{found.group(1).upper()}")
    return tuple(keys) or (f"path:{path}",)


def fingerprint(parts: Iterable[str]) -> str:
    """A short SHA-256 of the sorted ``parts`` (order-free identity of a set of images)."""
    h = hashlib.sha256()
    for part in sorted(parts):
        h.update(part.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def data_record(prepared, settings, data_name: str, keys: Mapping[str, Sequence[str]],
                eval_entries: Sequence[Any] | None, splits_csv: str) -> dict[str, Any]:
    """The record of one prepared dataset (``PreparedData`` + ``PreparationSettings``).

    ``keys`` maps every served image's path to its :func:`image_keys`; ``eval_entries`` is the
    evaluation pipeline after the resize (``data.transforms.eval``); ``splits_csv`` the text of the
    run's ``splits.csv``.
    """
    root = settings.source.root
    images = {s: sorted({k for r in prepared.splits[s] for k in keys[r.path]}) for s in ("train", "val", "test")}
    first = {s: [f"{s}:{keys[r.path][0]}" for r in prepared.splits[s]] for s in ("train", "val", "test")}
    return {
        "version": RECORD_VERSION,
        "data": {"name": data_name, "source": settings.source_name, "root": None if root is None else str(root),
                 "class_names": list(prepared.class_names)},
        "split": {"seed": settings.split_seed, "val_fraction": settings.val_fraction,
                  "test_fraction": settings.test_fraction, "dedup": settings.dedup,
                  "split_file": settings.split_file, "fingerprint": fingerprint(first["val"] + first["test"]),
                  "counts": {**{s: len(prepared.splits[s]) for s in ("train", "val", "test")},
                             "unused": len(prepared.unused)}},
        "subset": {"train_per_class": settings.subset.per_class, "train_fraction": settings.subset.fraction,
                   "seed": settings.seed, "fingerprint": fingerprint(first["train"])},
        "preprocessing": {"image_size": settings.image_size, "interpolation": settings.interpolation,
                          "eval": list(eval_entries) if eval_entries is not None else None},
        "images": images,
        "splits_csv": splits_csv,
    }


def record_summary(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The record without its image lists and split file (what ``run.json`` and ``metrics.json`` hold)."""
    if not record:
        return None
    return {k: v for k, v in record.items() if k not in _BULKY}


def key_set(record: Mapping[str, Any], split: str) -> set[str]:
    """Every key of the images of ``split`` in ``record`` (empty when the record has none)."""
    return set((record.get("images") or {}).get(split) or ())


def count_seen(keys_of_images: Iterable[Sequence[str]], known: set[str]) -> int:
    """How many of the images (each given by its keys) share a key with ``known``."""
    return sum(1 for keys in keys_of_images if any(k in known for k in keys))
