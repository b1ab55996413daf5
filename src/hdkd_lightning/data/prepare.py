"""Dataset preparation: root folder -> checked, split (and optionally subsetted) records + images.

:func:`prepare_dataset` runs every step before the loaders and returns a :class:`PreparedData`;
the DataModule, ``hdkd-data inspect`` and ``hdkd-data cache`` all use it.

1. **index**: the source turns ``data.root`` into records + class names (no image decoded).
2. **check**: every file gets the cheap readability check (cached per file, see
   :mod:`hdkd_lightning.data.checks`). Problems (unreadable/truncated/oversized images, CSV rows
   without images, images without rows, unknown labels) raise one
   :class:`~hdkd_lightning.data.base.DataError` listing the first files of each kind, the counts
   and the fix; with ``data.on_bad_image=skip`` they are dropped with a warning. Layout problems
   (missing root, wrong layout, empty class) always raise. ``strict=False`` (inspect) collects
   problems instead of raising.
3. **splits**: ``data.split_file`` reuses a saved split exactly; otherwise ``data.dedup`` removes
   byte-identical copies (:mod:`~hdkd_lightning.data.dedup`) and the splits the layout does not
   provide are carved with ``data.split_seed`` (:mod:`~hdkd_lightning.data.splits`).
4. **subset**: ``data.train_per_class`` / ``data.train_fraction`` shrink the train split only
   (:mod:`~hdkd_lightning.data.subset`); the rest of it is ``unused``.
5. **images** (``load_images=True``): with ``data.cache.images=true`` a pre-resized uint8 cache
   is built once (:mod:`~hdkd_lightning.data.cache`) and read row by row; otherwise images are
   decoded and resized on the fly. Generated data is held in memory. Files that fail the full
   decode of the cache build follow the same error/skip rule.
6. **SMOTE** (``data.smote=true``): synthetic training images from the original code's
   oversampling, held in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hdkd_lightning.data.base import (
    SPLITS,
    UNUSED,
    FileSource,
    Index,
    Problem,
    Record,
    class_counts,
    describe_paths,
    over_limit,
    problems_message,
)
from hdkd_lightning.data.subset import SubsetSpec
from hdkd_lightning.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["PreparationSettings", "PreparedData", "prepare_dataset", "file_checker"]


@dataclasses.dataclass(frozen=True)
class PreparationSettings:
    """The ``data.*`` options that decide what is trained and evaluated on (see the data configs)."""

    source: Any
    source_name: str
    image_size: int
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    subset: SubsetSpec = SubsetSpec()
    dedup: bool = False
    split_file: str | None = None
    on_bad_image: str = "error"
    max_image_pixels: int | None = None
    interpolation: str = "area"
    cache_images: bool = True
    cache_dir: Path | None = None
    cache_threads: int | None = None
    smote: bool = False
    smote_strategy: Any = "auto"
    smote_k_neighbors: int = 5
    metadata_csv: str | None = None

    @property
    def has_files(self) -> bool:
        return isinstance(self.source, FileSource) or self.source.root is not None


@dataclasses.dataclass
class PreparedData:
    """What preparation found and decided; the DataModule serves its splits."""

    class_names: list[str]
    splits: dict[str, list[Record]]        # train / val / test, each sorted by path
    unused: list[Record]                   # training images left out by a subset
    index: Index                           # the source's records and notes
    problems: list[Problem]
    file_info: dict[str, dict]             # per-file check results (size, mode, format, ...)
    bad_paths: set[str]
    duplicates: Any = None                 # a DuplicateReport when data.dedup=true
    duplicates_removed: int = 0
    reader: Any = None                     # path -> uint8 image, once images are loaded
    smote: tuple[list[Record], Any] | None = None  # extra training records and their reader

    @property
    def notes(self) -> list[str]:
        return self.index.notes

    @property
    def metadata(self) -> dict[str, dict[str, str]]:
        """path -> subgroup attributes (the source's, then ``data.metadata_csv``'s; :mod:`hdkd_lightning.data.metadata`)."""
        return self.index.metadata

    @property
    def all_paths(self) -> list[str]:
        """Every file the source indexed (the cache key covers them all, not just a split)."""
        return [r.path for r in self.index.records]

    def records(self) -> list[Record]:
        """Train, val and test records, in that order (SMOTE and unused images excluded)."""
        return [r for s in SPLITS for r in self.splits[s]]

    def train_records(self) -> list[Record]:
        """What the train loader draws from: the train split plus SMOTE images."""
        return self.splits["train"] + (self.smote[0] if self.smote else [])

    def image_reader(self):
        """The reader of every served image (SMOTE images from memory)."""
        return _Either(self.reader, self.smote[1]) if self.smote else self.reader


class _Either:
    """Reads SMOTE images from memory and the rest from the main reader (picklable)."""

    def __init__(self, main, smote):
        self.main = main
        self.smote = smote

    def __call__(self, path: str) -> np.ndarray:
        return self.smote(path) if path.startswith("smote:") else self.main(path)


def file_checker(settings: PreparationSettings):
    """The per-file check/hash cache of this dataset."""
    from hdkd_lightning.data.checks import FileChecker

    return FileChecker(settings.cache_dir, f"{settings.source_name}|{settings.source.root}",
                       settings.max_image_pixels)


def prepare_dataset(settings: PreparationSettings, *, strict: bool = True, full_check: bool = False,
                    load_images: bool = True) -> PreparedData:
    """Steps 1-6 of the module docstring (5-6 only with ``load_images``)."""
    data = _index_and_split(settings, strict, full_check)
    if load_images:
        data.reader = _image_reader(settings, data)
        if settings.smote:
            data.smote = _smote(settings, data)
    return data


def _check_classes(records: Sequence[Record], class_names: Sequence[str], when: str) -> None:
    present = {r.label for r in records}
    empty = [c for i, c in enumerate(class_names) if i not in present]
    if empty:
        raise DataError(f"class(es) {empty} have no usable image {when} (empty class); add "
                        f"images for them or fix the bad files.")


def _index_and_split(settings: PreparationSettings, strict: bool, full_check: bool) -> PreparedData:
    source = settings.source
    index: Index = source.index()
    if settings.metadata_csv:
        from hdkd_lightning.data.metadata import merge_metadata, read_metadata_csv

        found, notes = read_metadata_csv(settings.metadata_csv, [r.path for r in index.records], source.root)
        index.metadata = merge_metadata(index.metadata, found)
        index.metadata_source = ", ".join(s for s in (index.metadata_source, str(settings.metadata_csv)) if s)
        index.notes.extend(notes)
    class_names = list(index.class_names)
    file_info: dict[str, dict] = {}
    problems = list(index.problems)
    if settings.has_files:
        file_info = file_checker(settings).check((r.path for r in index.records), full=full_check)
        problems += [Problem("unreadable", r.path, file_info[r.path]["error"],
                             pixels=over_limit(file_info[r.path], settings.max_image_pixels))
                     for r in index.records if not file_info[r.path]["ok"]]
    bad_paths = {p.path for p in problems}
    if problems and strict and settings.on_bad_image == "error":
        raise DataError(f"bad data in data.root={source.root} (data={settings.source_name}):\n"
                        + problems_message(problems))
    if problems and strict:
        msg = (f"data.on_bad_image=skip: ignoring {len(problems)} bad item(s) under "
               f"data.root={source.root}:\n" + problems_message(problems, skipping=True))
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    records = [r for r in index.records if r.path not in bad_paths]
    if strict:
        _check_classes(records, class_names, "after removing bad files")
    data = PreparedData(class_names, {}, [], index, problems, file_info, bad_paths)
    if settings.split_file:
        records = _from_split_file(settings, records, class_names)
    else:
        records = _dedup_and_carve(settings, records, class_names, data)
    splits = {s: sorted((r for r in records if r.split == s), key=lambda r: r.path) for s in SPLITS}
    unused = [r for r in records if r.split == UNUSED]
    if settings.subset.active:
        from hdkd_lightning.data.subset import select_training_subset

        picked = select_training_subset(splits["train"], class_names, settings.subset, settings.seed)
        splits["train"] = picked.kept
        unused += [r.with_split(UNUSED) for r in picked.unused]
        if picked.short_classes:
            msg = (f"{settings.subset.describe()}: class(es) with fewer training images than asked take all "
                   f"they have: " + ", ".join(f"{c} ({n})" for c, n in picked.short_classes.items()))
            index.notes.append(msg)
            if strict:
                warnings.warn(msg, stacklevel=3)
                log.warning(msg)
        log.info("%s: %d of %d training images kept (data.seed=%d)", settings.subset.describe(),
                 len(picked.kept), len(picked.kept) + len(picked.unused), settings.seed)
    data.splits, data.unused = splits, sorted(unused, key=lambda r: r.path)
    _check_split_classes(settings, data, strict)
    return data


def _dedup_and_carve(settings: PreparationSettings, records: list[Record], class_names: list[str],
                     data: PreparedData) -> list[Record]:
    if settings.dedup:
        from hdkd_lightning.data.dedup import find_duplicates, remove_duplicates

        if not settings.has_files:
            raise DataError(f"data.dedup=true needs files; data.source={settings.source_name} "
                            f"generates its images.")
        report = find_duplicates(records, file_checker(settings).hashes(r.path for r in records))
        records = remove_duplicates(records, report)
        data.duplicates, data.duplicates_removed = report, len(report.redundant)
        if report.redundant:
            log.info("data.dedup=true: removed %d duplicate file(s) (%d across splits)",
                     len(report.redundant), report.across_splits)
    fixed = {r.split for r in records if r.split is not None}
    fractions = {s: f for s, f in (("val", settings.val_fraction), ("test", settings.test_fraction))
                 if s not in fixed}
    from hdkd_lightning.data.splits import carve

    return carve(records, len(class_names), fractions, settings.split_seed)


def _check_split_classes(settings: PreparationSettings, data: PreparedData, strict: bool) -> None:
    names = data.class_names
    if not data.splits["train"] and strict:
        raise DataError(f"the train split of data={settings.source_name} is empty.")
    counts = class_counts(data.splits["train"], len(names))
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty and not strict:  # inspect: report, do not stop
        data.notes.append(f"class(es) {empty} have no training image: training would stop")
    elif empty:
        raise DataError(f"class(es) {empty} have no training image in data={settings.source_name} "
                        f"(empty class in the train split); add images, lower "
                        f"data.val_fraction/test_fraction, or use another split file.")
    for s in ("val", "test"):
        c = class_counts(data.splits[s], len(names))
        missing = [names[i] for i in np.flatnonzero(c == 0)]
        if data.splits[s] and missing:
            log.warning("the %s split has no image of class(es) %s", s, missing)


def _from_split_file(settings: PreparationSettings, records: list[Record], class_names: list[str]) -> list[Record]:
    from hdkd_lightning.data.splits import read_split_csv

    root = settings.source.root
    saved = read_split_csv(settings.split_file, class_names, root and Path(root).resolve())
    known = {r.path: r for r in records}
    unknown = [r.path for r in saved if r.path not in known]
    if unknown:
        raise DataError(
            f"data.split_file={settings.split_file}: {len(unknown)} listed image(s) are not usable "
            f"images of data.root={root} (missing, unreadable or not part of the "
            f"layout): {describe_paths(unknown)}. Use the root the split was made for, or "
            f"drop data.split_file.")
    relabelled = [r.path for r in saved if known[r.path].label != r.label]
    if relabelled:
        log.warning("data.split_file: %d image(s) have a different label in the split file than "
                    "in the dataset; the split file's labels are used", len(relabelled))
    if settings.dedup:
        log.info("data.dedup is ignored with data.split_file (the saved split is used as is)")
    extra = len(known) - len(saved)
    if extra > 0:
        log.info("data.split_file: %d image(s) of the dataset are not in the split file and "
                 "are not used", extra)
    return saved


def _image_reader(settings: PreparationSettings, data: PreparedData):
    """Build (once) and open the image reader of the served records."""
    from hdkd_lightning.data.cache import CacheReader, DiskCache, MemoryCache
    from hdkd_lightning.data.datasets import DecodeLoader
    from hdkd_lightning.data.transforms import build_resize

    source, size = settings.source, settings.image_size
    records = data.records()
    resize = build_resize(size, settings.interpolation)
    decode = DecodeLoader(source, records, resize, settings.max_image_pixels)
    if source.root is None:  # generated data: keep it in memory
        if not settings.cache_images:
            return decode
        images = np.stack([decode(r.path) for r in records]) if records else np.zeros((0, size, size, 3), np.uint8)
        return MemoryCache(images, {r.path: i for i, r in enumerate(records)})
    if not settings.cache_images or settings.cache_dir is None:
        return decode
    cache = DiskCache(settings.cache_dir, settings.source_name, Path(source.root).resolve(), data.all_paths, size,
                      settings.interpolation, settings.max_image_pixels)
    if not cache.exists():
        full = DecodeLoader(source, list({r.path: r for r in data.index.records}.values()), resize,
                            settings.max_image_pixels)
        cache.build(full, skip=data.bad_paths, threads=settings.cache_threads)
    bad = {p: e for p, e in cache.bad().items() if p not in data.bad_paths}
    if bad:
        checker = file_checker(settings)
        for p, e in bad.items():
            checker.mark_bad(p, e)
        checker.save()
        used = {r.path for r in records}
        problems = [Problem("unreadable", p, e) for p, e in sorted(bad.items()) if p in used]
        if problems:
            if settings.on_bad_image == "error":
                raise DataError("bad data found while building the image cache "
                                f"(data.root={source.root}):\n" + problems_message(problems))
            warnings.warn("data.on_bad_image=skip: dropping images that failed to decode:\n"
                          + problems_message(problems, skipping=True), stacklevel=3)
            drop = {p.path for p in problems}
            data.splits = {s: [r for r in rs if r.path not in drop] for s, rs in data.splits.items()}
            data.bad_paths |= drop
            data.problems += problems
    return CacheReader(cache.array_file, cache.rows(), size)


def _smote(settings: PreparationSettings, data: PreparedData):
    from hdkd_lightning.data.cache import MemoryCache
    from hdkd_lightning.data.smote import smote_oversample

    warnings.warn("data.smote=true: SMOTE on pixels is kept for parity with the original code "
                  "and is not recommended (see hdkd_lightning.data.smote).", stacklevel=3)
    train = data.splits["train"]
    images = np.stack([data.reader(r.path) for r in train])
    labels = np.array([r.label for r in train], dtype=np.int64)
    new_x, new_y = smote_oversample(images, labels, data.class_names, settings.smote_strategy,
                                    settings.smote_k_neighbors, settings.seed)
    records = [Record(f"smote:train/{i:06d}", int(y), None, "train") for i, y in enumerate(new_y)]
    log.info("SMOTE added %d training images", len(records))
    return records, MemoryCache(new_x, {r.path: i for i, r in enumerate(records)})
