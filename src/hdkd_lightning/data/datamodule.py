"""The one Lightning DataModule, for every source.

Pipeline (``prepare_data`` may run it once ahead; ``setup`` runs it if needed and is cheap
and idempotent; nothing here decodes an image except the cache build):

1. **index** -- the source turns ``data.root`` into records + class names
   (``dm.class_names`` is available before ``setup``: it asks the source, which reads at most
   a folder listing).
2. **check** -- every file gets the cheap readability check (results cached per file in the
   cache dir, see :mod:`hdkd_lightning.data.checks`). Problems found by indexing or checking
   (unreadable/truncated/oversized images, CSV rows without images, images without rows,
   unknown labels) raise one :class:`~hdkd_lightning.data.base.DataError` listing the first
   files of each kind, the counts and the fix -- or, with ``data.on_bad_image=skip``, are
   dropped with a warning. Layout problems (missing root, wrong layout, empty class) always
   raise.
3. **splits** -- ``data.split_file`` reuses a saved split exactly; otherwise ``data.dedup``
   removes byte-identical copies (:mod:`~hdkd_lightning.data.dedup`) and the splits the
   layout does not provide are carved (:mod:`~hdkd_lightning.data.splits`).
4. **images** -- with ``data.cache.images=true`` (default) a pre-resized uint8 cache is built
   once (:mod:`~hdkd_lightning.data.cache`) and loaders read rows from it; otherwise every
   image is decoded and resized on the fly. Generated data is held in memory.
5. **loaders** -- train: train pipeline, shuffled or ``data.sampler=weighted``
   (:class:`~hdkd_lightning.data.samplers.DistributedWeightedSampler`), optional SMOTE; val,
   test, predict: eval pipeline, record order, not shuffled. Workers (``data.num_workers``,
   null = min(8, CPUs - 1)) are persistent; memory is pinned when CUDA is in use.

Batches: ``{"image": FloatTensor[B,3,S,S], "label": LongTensor[B], "path": list[str]}``.

The split actually used is written as ``splits.csv`` by ``dm.write_splits(dir)``, and
automatically at setup when ``data.output_dir`` is set (e.g. ``${hydra:runtime.output_dir}``
in a training config).
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from hdkd_lightning.files import to_plain
from hdkd_lightning.data.base import (SPLITS, UNUSED, DataError, FileSource, Index, Problem, Record,
                                      class_counts, describe_paths, problems_message)

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/hdkd_lightning"


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class HdkdDataModule(L.LightningDataModule):
    """See the module docstring; the constructor arguments are the ``data.*`` config keys.

    Extra keyword arguments (``**source_options``, e.g. ``num_classes`` for synthetic) go to
    the source's constructor.
    """

    def __init__(
        self,
        source: str = "synthetic",
        root: str | None = None,
        image_size: int = 224,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
        split_seed: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        train_per_class: int | None = None,
        train_fraction: float | None = None,
        dedup: bool = False,
        sampler: str | None = None,
        smote: bool = False,
        smote_strategy: Any = "auto",
        smote_k_neighbors: int = 5,
        split_file: str | None = None,
        on_bad_image: str = "error",
        max_image_pixels: int | None = 100_000_000,
        interpolation: str = "area",
        cache: Mapping | None = None,
        transforms: Mapping | None = None,
        predict_split: str = "test",
        drop_last: bool = False,
        output_dir: str | None = None,
        **source_options: Any,
    ):
        super().__init__()
        self.source_name = str(source)
        self.root = None if root in (None, "", "???") else str(root)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = _default_workers() if num_workers is None else int(num_workers)
        self.pin_memory = pin_memory
        self.persistent_workers = bool(persistent_workers)
        self.seed = int(seed)
        self.split_seed = self.seed if split_seed in (None, "") else int(split_seed)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        from hdkd_lightning.data.subset import SubsetSpec

        self.subset = SubsetSpec.from_config(train_per_class, train_fraction)
        self.dedup = bool(dedup)
        self.sampler = None if sampler in (None, "none", "null", "") else str(sampler)
        self.smote = bool(smote)
        self.smote_strategy = to_plain(smote_strategy)
        self.smote_k_neighbors = int(smote_k_neighbors)
        self.split_file = None if split_file in (None, "") else str(split_file)
        self.on_bad_image = str(on_bad_image)
        self.max_image_pixels = None if max_image_pixels in (None, 0) else int(max_image_pixels)
        self.interpolation = str(interpolation)
        cache = dict(to_plain(cache) or {})
        self.cache_images = bool(cache.pop("images", True))
        cache_dir = cache.pop("dir", DEFAULT_CACHE_DIR)
        self.cache_dir = None if cache_dir in (None, "") else Path(str(cache_dir)).expanduser()
        self.cache_threads = cache.pop("threads", None)
        if cache:
            raise DataError(f"unknown data.cache key(s) {sorted(cache)}; known: images, dir, threads.")
        transforms = dict(to_plain(transforms) or {})
        self.train_entries = transforms.pop("train", None)
        self.eval_entries = transforms.pop("eval", None)
        if transforms:
            raise DataError(f"unknown data.transforms key(s) {sorted(transforms)}; known: train, eval.")
        self.predict_split = predict_split
        self.drop_last = bool(drop_last)
        self.output_dir = None if output_dir in (None, "") else str(output_dir)
        self.source_options = {k: to_plain(v) for k, v in source_options.items()}
        self._validate()
        # "paths" = prediction on files only (see from_paths): no dataset source
        self.source = None if self.source_name == "paths" else self._make_source()
        self.in_chans = 3
        self._state: dict | None = None
        self._predict_paths: list[str] | None = None
        self._fixed_class_names: list[str] | None = None
        self._datasets: dict[str, Any] = {}

    # ------------------------------------------------------------------ config
    def _validate(self) -> None:
        if self.on_bad_image not in ("error", "skip"):
            raise DataError(f"data.on_bad_image={self.on_bad_image!r} must be 'error' or 'skip'.")
        if self.sampler not in (None, "weighted"):
            raise DataError(f"data.sampler={self.sampler!r} must be null or 'weighted'.")
        if self.image_size < 8:
            raise DataError(f"data.image_size={self.image_size} is too small.")
        if self.batch_size < 1:
            raise DataError(f"data.batch_size={self.batch_size} must be >= 1.")
        if self.predict_split not in SPLITS:
            raise DataError(f"data.predict_split={self.predict_split!r} must be one of {SPLITS}.")
        from hdkd_lightning.data.transforms import interpolation_code

        try:
            interpolation_code(self.interpolation)
        except ValueError as e:
            raise DataError(str(e)) from None

    def _make_source(self):
        from hdkd_lightning.data.sources import resolve_source

        cls = resolve_source(self.source_name)
        params = inspect.signature(cls.__init__).parameters
        kwargs = dict(self.source_options)
        if "root" in params:
            kwargs["root"] = self.root
        elif self.root is not None:
            log.info("data.root is ignored by data.source=%s", self.source_name)
        for key, value in (("image_size", self.image_size), ("seed", self.seed)):
            if key in params:
                kwargs.setdefault(key, value)
        unknown = [k for k in kwargs if k not in params and not any(
            p.kind == p.VAR_KEYWORD for p in params.values())]
        if unknown:
            known = [p for p in params if p not in ("self",)]
            raise DataError(f"unknown data key(s) {sorted(unknown)} for data.source="
                            f"{self.source_name}; it accepts {known} besides the common keys.")
        return cls(**kwargs)

    # ------------------------------------------------------------------ cheap facts
    @property
    def class_names(self) -> list[str]:
        if self._fixed_class_names is not None:
            return list(self._fixed_class_names)
        if self._state is not None:
            return list(self._state["class_names"])
        return list(self.source.class_names())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ------------------------------------------------------------------ pipeline
    def _checker(self):
        from hdkd_lightning.data.checks import FileChecker

        root = self.source.root
        return FileChecker(self.cache_dir, f"{self.source_name}|{root}", self.max_image_pixels)

    def _index(self, strict: bool, full_check: bool = False) -> dict:
        """Steps 1-3 (see the module docstring). ``strict=False`` (inspect) reports problems
        instead of raising and drops the bad files."""
        index: Index = self.source.index()
        class_names = list(index.class_names)
        is_file_source = isinstance(self.source, FileSource) or self.source.root is not None
        file_info: dict[str, dict] = {}
        problems = list(index.problems)
        if is_file_source:
            checker = self._checker()
            file_info = checker.check((r.path for r in index.records), full=full_check)
            for r in index.records:
                info = file_info[r.path]
                if not info["ok"]:
                    problems.append(Problem("unreadable", r.path, info["error"]))
        bad_paths = {p.path for p in problems}
        if problems and strict and self.on_bad_image == "error":
            raise DataError(f"bad data in data.root={self.source.root} (data={self.source_name}):\n"
                            + problems_message(problems))
        if problems and strict:
            msg = (f"data.on_bad_image=skip: ignoring {len(problems)} bad item(s) under "
                   f"data.root={self.source.root}:\n" + problems_message(problems))
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
        records = [r for r in index.records if r.path not in bad_paths]
        if strict:
            self._check_classes(records, class_names, "after removing bad files")
        state = {"class_names": class_names, "index": index, "problems": problems,
                 "file_info": file_info, "all_paths": [r.path for r in index.records],
                 "bad_paths": bad_paths, "dup_report": None, "duplicates_removed": 0}
        if self.split_file:
            records = self._from_split_file(records, class_names)
        else:
            if self.dedup:
                from hdkd_lightning.data.dedup import find_duplicates, remove_duplicates

                if not is_file_source:
                    raise DataError(f"data.dedup=true needs files; data.source={self.source_name} "
                                    f"generates its images.")
                hashes = self._checker().hashes(r.path for r in records)
                report = find_duplicates(records, hashes)
                records = remove_duplicates(records, report)
                state["dup_report"] = report
                state["duplicates_removed"] = len(report.redundant)
                if report.redundant:
                    log.info("data.dedup=true: removed %d duplicate file(s) (%d across splits)",
                             len(report.redundant), report.across_splits)
            fixed = {r.split for r in records if r.split is not None}
            fractions = {}
            if "val" not in fixed:
                fractions["val"] = self.val_fraction
            if "test" not in fixed:
                fractions["test"] = self.test_fraction
            from hdkd_lightning.data.splits import carve

            records = carve(records, len(class_names), fractions, self.split_seed)
        splits = {s: sorted((r for r in records if r.split == s), key=lambda r: r.path)
                  for s in SPLITS}
        unused = sorted((r for r in records if r.split == UNUSED), key=lambda r: r.path)
        if self.subset.active:
            from hdkd_lightning.data.subset import select_training_subset

            picked = select_training_subset(splits["train"], class_names, self.subset, self.seed)
            splits["train"] = picked.kept
            unused = sorted(unused + [r.with_split(UNUSED) for r in picked.unused], key=lambda r: r.path)
            if picked.short_classes:
                msg = (f"{self.subset.describe()}: class(es) with fewer training images than asked take all "
                       f"they have: " + ", ".join(f"{c} ({n})" for c, n in picked.short_classes.items()))
                index.notes.append(msg)
                if strict:
                    warnings.warn(msg, stacklevel=2)
                    log.warning(msg)
            log.info("%s: %d of %d training images kept (data.seed=%d)", self.subset.describe(),
                     len(picked.kept), len(picked.kept) + len(picked.unused), self.seed)
        state["unused"] = unused
        if not splits["train"] and strict:
            raise DataError(f"the train split of data={self.source_name} is empty.")
        counts = class_counts(splits["train"], len(class_names))
        empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
        if empty and not strict:  # inspect: report, do not stop
            index.notes.append(f"class(es) {empty} have no training image: training would stop")
        elif empty:
            raise DataError(f"class(es) {empty} have no training image in data={self.source_name} "
                            f"(empty class in the train split); add images, lower "
                            f"data.val_fraction/test_fraction, or use another split file.")
        for s in ("val", "test"):
            c = class_counts(splits[s], len(class_names))
            missing = [class_names[i] for i in np.flatnonzero(c == 0)]
            if splits[s] and missing:
                log.warning("the %s split has no image of class(es) %s", s, missing)
        state["splits"] = splits
        return state

    @staticmethod
    def _check_classes(records: Sequence[Record], class_names: Sequence[str], when: str) -> None:
        present = {r.label for r in records}
        empty = [c for i, c in enumerate(class_names) if i not in present]
        if empty:
            raise DataError(f"class(es) {empty} have no usable image {when} (empty class); add "
                            f"images for them or fix the bad files.")

    def _from_split_file(self, records: list[Record], class_names: list[str]) -> list[Record]:
        from hdkd_lightning.data.splits import read_split_csv

        saved = read_split_csv(self.split_file, class_names, self.source.root and
                               Path(self.source.root).resolve())
        known = {r.path: r for r in records}
        unknown = [r.path for r in saved if r.path not in known]
        if unknown:
            raise DataError(
                f"data.split_file={self.split_file}: {len(unknown)} listed image(s) are not usable "
                f"images of data.root={self.source.root} (missing, unreadable or not part of the "
                f"layout): {describe_paths(unknown)}. Use the root the split was made for, or "
                f"drop data.split_file.")
        relabelled = [r.path for r in saved if known[r.path].label != r.label]
        if relabelled:
            log.warning("data.split_file: %d image(s) have a different label in the split file than "
                        "in the dataset; the split file's labels are used", len(relabelled))
        if self.dedup:
            log.info("data.dedup is ignored with data.split_file (the saved split is used as is)")
        extra = len(known) - len(saved)
        if extra > 0:
            log.info("data.split_file: %d image(s) of the dataset are not in the split file and "
                     "are not used", extra)
        return saved

    def _image_reader(self, state: dict, build: bool):
        """Build (if asked) / open the image source for the loaders."""
        from hdkd_lightning.data.cache import CacheReader, DiskCache, MemoryCache
        from hdkd_lightning.data.datasets import DecodeLoader
        from hdkd_lightning.data.transforms import build_resize

        records = [r for s in SPLITS for r in state["splits"][s]]
        resize = build_resize(self.image_size, self.interpolation)
        decode = DecodeLoader(self.source, records, resize, self.max_image_pixels)
        if self.source.root is None:  # generated data: keep it in memory
            if not self.cache_images:
                return decode
            images = np.stack([decode(r.path) for r in records]) if records else \
                np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
            return MemoryCache(images, {r.path: i for i, r in enumerate(records)})
        if not self.cache_images or self.cache_dir is None:
            return decode
        cache = DiskCache(self.cache_dir, self.source_name, Path(self.source.root).resolve(),
                          state["all_paths"], self.image_size, self.interpolation,
                          self.max_image_pixels)
        if not cache.exists():
            if not build:
                return None
            all_records = {r.path: r for r in state["index"].records}
            full = DecodeLoader(self.source, list(all_records.values()), resize, self.max_image_pixels)
            cache.build(full, skip=state["bad_paths"], threads=self.cache_threads)
        bad = {p: e for p, e in cache.bad().items() if p not in state["bad_paths"]}
        if bad:
            checker = self._checker()
            for p, e in bad.items():
                checker.mark_bad(p, e)
            checker.save()
            used = {r.path for r in records}
            problems = [Problem("unreadable", p, e) for p, e in sorted(bad.items()) if p in used]
            if problems:
                if self.on_bad_image == "error":
                    raise DataError("bad data found while building the image cache "
                                    f"(data.root={self.source.root}):\n" + problems_message(problems))
                warnings.warn("data.on_bad_image=skip: dropping images that failed to decode:\n"
                              + problems_message(problems), stacklevel=2)
                drop = {p.path for p in problems}
                for s in SPLITS:
                    state["splits"][s] = [r for r in state["splits"][s] if r.path not in drop]
                state["bad_paths"] |= drop
                state["problems"] += problems
        return CacheReader(cache.array_file, cache.rows(), self.image_size)

    def prepare_data(self) -> None:
        """Index, check and build the image cache once (rank 0); ``setup`` reuses the result."""
        if self._predict_paths is not None:
            return
        if self._state is None:
            self._state = self._index(strict=True)
        if "reader" not in self._state:
            self._state["reader"] = self._image_reader(self._state, build=True)

    def setup(self, stage: str | None = None) -> None:
        if self._predict_paths is not None:
            return
        self.prepare_data()  # no-op when already done in this process; cached on disk otherwise
        if "train_extra" not in self._state:
            self._state["train_extra"] = self._smote() if self.smote else None
            if self.output_dir is not None and _is_rank_zero():
                path = self.write_splits(self.output_dir)
                log.info("splits written to %s", path)

    # ------------------------------------------------------------------ SMOTE
    def _smote(self):
        from hdkd_lightning.data.cache import MemoryCache
        from hdkd_lightning.data.smote import smote_oversample

        warnings.warn("data.smote=true: SMOTE on pixels is kept for parity with the original code "
                      "and is not recommended (see hdkd_lightning.data.smote).", stacklevel=2)
        train = self._state["splits"]["train"]
        reader = self._state["reader"]
        images = np.stack([reader(r.path) for r in train])
        labels = np.array([r.label for r in train], dtype=np.int64)
        new_x, new_y = smote_oversample(images, labels, self.class_names, self.smote_strategy,
                                        self.smote_k_neighbors, self.seed)
        records = [Record(f"smote:train/{i:06d}", int(y), None, "train") for i, y in enumerate(new_y)]
        log.info("SMOTE added %d training images", len(records))
        return records, MemoryCache(new_x, {r.path: i for i, r in enumerate(records)})

    # ------------------------------------------------------------------ accessors
    def _require_setup(self) -> dict:
        if self.source is None:
            raise DataError("this DataModule was made by from_paths: it only has predict_dataloader().")
        if self._state is None or "reader" not in self._state:
            self.setup()
        return self._state

    def split_records(self, split: str) -> list[Record]:
        """Records of ``split`` (train/val/test) in loader order; SMOTE images excluded."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        return list(self._require_setup()["splits"][split])

    def _train_records(self) -> list[Record]:
        state = self._require_setup()
        extra = state.get("train_extra")
        return state["splits"]["train"] + (extra[0] if extra else [])

    def class_counts(self, split: str = "train") -> np.ndarray:
        records = self._train_records() if split == "train" else self.split_records(split)
        return class_counts(records, self.num_classes)

    def class_weights(self) -> torch.Tensor:
        """Inverse class frequency on the training set the loader draws from (SMOTE images
        included), normalised to mean 1, in class order: ``FloatTensor[num_classes]``."""
        counts = torch.as_tensor(self.class_counts("train"), dtype=torch.float64)
        w = 1.0 / counts.clamp(min=1)
        return (w / w.mean()).float()

    def write_splits(self, output_dir: str | os.PathLike) -> Path:
        """Write ``<output_dir>/splits.csv`` (``path,label,split,group``; label = class name;
        paths relative to data.root when below it). SMOTE images are not listed (they are
        regenerated from the seed). Reuse with ``data.split_file=<that file>``."""
        from hdkd_lightning.data.splits import write_split_csv

        state = self._require_setup()
        records = [r for s in SPLITS for r in state["splits"][s]] + list(state.get("unused", []))
        root = Path(self.source.root).resolve() if self.source.root is not None else None
        return write_split_csv(records, self.class_names, root, Path(output_dir) / "splits.csv")

    # ------------------------------------------------------------------ loaders
    def _transform(self, train: bool):
        from hdkd_lightning.data.transforms import (build_pipeline, default_eval_entries,
                                                    default_train_entries)

        if train:
            entries = self.train_entries if self.train_entries is not None else default_train_entries()
            return build_pipeline(entries, where="data.transforms.train", seed=self.seed)
        entries = self.eval_entries if self.eval_entries is not None else default_eval_entries()
        return build_pipeline(entries, where="data.transforms.eval", seed=self.seed)

    def _reader_for(self):
        state = self._require_setup()
        extra = state.get("train_extra")
        return _Either(state["reader"], extra[1]) if extra else state["reader"]

    def dataset(self, split: str, train_transform: bool | None = None):
        """The torch dataset of ``split`` (train pipeline for train unless told otherwise)."""
        from hdkd_lightning.data.datasets import RecordDataset

        train = split == "train" if train_transform is None else train_transform
        records = self._train_records() if split == "train" else self.split_records(split)
        return RecordDataset(records, self._reader_for(), self._transform(train), seed=self.seed)

    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        if not torch.cuda.is_available():
            return False
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            try:
                return trainer.strategy.root_device.type == "cuda"
            except Exception:  # noqa: BLE001
                return True
        return True

    def _loader(self, dataset, batch_size: int, shuffle: bool = False, sampler=None,
                drop_last: bool = False) -> DataLoader:
        from hdkd_lightning.data.datasets import worker_init

        workers = self.num_workers
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
            sampler=sampler, num_workers=workers, pin_memory=self._pin(), drop_last=drop_last,
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=worker_init if workers > 0 else None,
            generator=generator if shuffle and sampler is None else None,
        )

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train")
        sampler = None
        if self.sampler == "weighted":
            from hdkd_lightning.data.samplers import (DistributedWeightedSampler,
                                                      inverse_frequency_weights)

            weights = inverse_frequency_weights([r.label for r in ds.records], self.num_classes)
            sampler = DistributedWeightedSampler(weights, seed=self.seed)
        else:
            from hdkd_lightning.data.samplers import EpochShuffleSampler

            sampler = EpochShuffleSampler(ds, seed=self.seed)
        return self._loader(ds, self.batch_size, shuffle=True, sampler=sampler,
                            drop_last=self.drop_last and len(ds) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        if self._predict_paths is not None:
            from hdkd_lightning.data.datasets import ImagePathsDataset
            from hdkd_lightning.data.transforms import build_pipeline, default_eval_entries

            entries = self.eval_entries if self.eval_entries is not None else default_eval_entries()
            transform = build_pipeline(entries, image_size=self.image_size,
                                       interpolation=self.interpolation, where="data.transforms.eval")
            ds = ImagePathsDataset(self._predict_paths, transform, max_pixels=self.max_image_pixels)
            return self._loader(ds, self.eval_batch_size)
        return self._loader(self.dataset(self.predict_split, train_transform=False),
                            self.eval_batch_size)

    # ------------------------------------------------------------------ prediction on files
    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike] | str | os.PathLike, image_size: int = 224,
                   batch_size: int = 16, num_workers: int = 0, class_names: Sequence[str] | None = None,
                   interpolation: str = "area", max_image_pixels: int | None = 100_000_000,
                   transforms: Mapping | None = None, on_bad_image: str = "error",
                   check: bool = True) -> HdkdDataModule:
        """A DataModule whose ``predict_dataloader`` serves the given image files / folders
        (folders are scanned recursively) through the eval pipeline; labels are -1. Files are
        checked up front: unreadable ones raise a DataError naming them (or, with
        ``on_bad_image="skip"``, are left out with a warning)."""
        from hdkd_lightning.data.datasets import expand_paths
        from hdkd_lightning.data.io import check_image

        dm = cls(source="paths", image_size=image_size, batch_size=batch_size,
                 num_workers=num_workers, interpolation=interpolation,
                 max_image_pixels=max_image_pixels, transforms=transforms,
                 on_bad_image=on_bad_image, cache={"images": False, "dir": None})
        files = expand_paths(paths)
        if check:
            bad = [Problem("unreadable", p, info["error"]) for p in files
                   if not (info := check_image(p, dm.max_image_pixels))["ok"]]
            if bad and on_bad_image == "error":
                raise DataError("cannot predict on unreadable input(s):\n" + problems_message(bad))
            if bad:
                warnings.warn("skipping unreadable input(s):\n" + problems_message(bad), stacklevel=2)
                drop = {b.path for b in bad}
                files = [f for f in files if f not in drop]
        dm._predict_paths = files
        dm._fixed_class_names = list(class_names) if class_names is not None else []
        return dm


class _Either:
    """Reads SMOTE images from memory and the rest from the main reader (picklable)."""

    def __init__(self, main, smote):
        self.main = main
        self.smote = smote

    def __call__(self, path: str) -> np.ndarray:
        return self.smote(path) if path.startswith("smote:") else self.main(path)
