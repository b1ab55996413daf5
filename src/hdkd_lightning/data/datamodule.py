"""The one Lightning DataModule, for every source.

Preparation (index, file checks, splits, training subset, image cache, SMOTE) is
:func:`hdkd_lightning.data.prepare.prepare_dataset`; its result is :attr:`HdkdDataModule.prepared`.
``prepare_data`` runs it once (rank 0 builds the image cache); ``setup`` runs it if needed and is
cheap and idempotent. ``dm.class_names`` is available before ``setup`` (the source reads at most a
folder listing).

Loaders: train uses the train pipeline, shuffled by an order that depends only on
``(data.seed, epoch)`` or ``data.sampler=weighted``
(:class:`~hdkd_lightning.data.samplers.DistributedWeightedSampler`), plus SMOTE images when asked;
val, test and predict use the eval pipeline, in record order. Workers (``data.num_workers``,
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

from hdkd_lightning.data.base import SPLITS, Problem, Record, class_counts, over_limit, problems_message
from hdkd_lightning.data.io import DEFAULT_MAX_PIXELS
from hdkd_lightning.data.prepare import PreparationSettings, PreparedData, file_checker, prepare_dataset
from hdkd_lightning.errors import DataError
from hdkd_lightning.files import to_plain

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/hdkd_lightning"


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


#: the data.* keys read as numbers (int or float)
_NUMBER_KEYS = {"image_size": int, "batch_size": int, "eval_batch_size": int, "num_workers": int, "seed": int,
                "split_seed": int, "smote_k_neighbors": int, "max_image_pixels": int, "val_fraction": float,
                "test_fraction": float}


def _check_numbers(values: Mapping[str, Any]) -> None:
    """Refuse a ``data.*`` number that is not one (``data.image_size=abc``) with one line naming the key.

    Runs before the constructor converts the values: ``int('abc')`` there would be a bare ValueError
    that names neither the key nor the fix.
    """
    defaults = inspect.signature(HdkdDataModule.__init__).parameters
    for key, kind in _NUMBER_KEYS.items():
        value = values.get(key)
        if value is None or value == "":  # null: the key's documented fallback applies
            continue
        try:
            number = kind(value)
            whole = kind is float or isinstance(value, (int, str)) or float(value) == number
        except (TypeError, ValueError):
            whole = False
        if not whole:
            what = "a whole number" if kind is int else "a number"
            default = defaults[key].default
            fix = f"e.g. data.{key}={default}" if default is not None else f"or null for the default (data.{key}=null)"
            raise DataError(f"data.{key}={value!r} is not {what}; pass {what}, {fix}")


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
        split_seed: int | None = 0,
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
        metadata_csv: str | None = None,
        on_bad_image: str = "error",
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
        interpolation: str = "area",
        cache: Mapping | None = None,
        transforms: Mapping | None = None,
        predict_split: str = "test",
        drop_last: bool = False,
        output_dir: str | None = None,
        **source_options: Any,
    ):
        super().__init__()
        _check_numbers(locals())  # the arguments, before the int() / float() below
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
        self.metadata_csv = None if metadata_csv in (None, "") else str(metadata_csv)
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
        #: the result of preparation (None before prepare_data / setup)
        self.prepared: PreparedData | None = None
        self._predict_paths: list[str] | None = None
        self._fixed_class_names: list[str] | None = None

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
        if self.prepared is not None:
            return list(self.prepared.class_names)
        return list(self.source.class_names())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ------------------------------------------------------------------ preparation
    @property
    def settings(self) -> PreparationSettings:
        """What preparation needs of this DataModule's ``data.*`` options."""
        return PreparationSettings(
            source=self.source, source_name=self.source_name, image_size=self.image_size, seed=self.seed,
            split_seed=self.split_seed, val_fraction=self.val_fraction, test_fraction=self.test_fraction,
            subset=self.subset, dedup=self.dedup, split_file=self.split_file, on_bad_image=self.on_bad_image,
            max_image_pixels=self.max_image_pixels, interpolation=self.interpolation,
            cache_images=self.cache_images, cache_dir=self.cache_dir, cache_threads=self.cache_threads,
            smote=self.smote, smote_strategy=self.smote_strategy, smote_k_neighbors=self.smote_k_neighbors,
            metadata_csv=self.metadata_csv)

    def prepare(self, strict: bool = False, full_check: bool = False) -> PreparedData:
        """A fresh preparation without loading images (``hdkd-data inspect``): with ``strict=False``
        problems are collected, not raised. Does not change :attr:`prepared`."""
        return prepare_dataset(self.settings, strict=strict, full_check=full_check, load_images=False)

    def file_checker(self):
        """The per-file check/hash cache of this dataset (:mod:`hdkd_lightning.data.checks`)."""
        return file_checker(self.settings)

    def prepare_data(self) -> None:
        """Index, check, split and build the image cache once; ``setup`` reuses the result."""
        if self._predict_paths is not None:
            return
        if self.prepared is None:
            self.prepared = prepare_dataset(self.settings)

    def setup(self, stage: str | None = None) -> None:
        if self._predict_paths is not None:
            return
        first = self.prepared is None
        self.prepare_data()  # no-op when already done in this process; cached on disk otherwise
        if first and self.output_dir is not None and _is_rank_zero():
            path = self.write_splits(self.output_dir)
            log.info("splits written to %s", path)

    # ------------------------------------------------------------------ accessors
    def _require_setup(self) -> PreparedData:
        if self.source is None:
            raise DataError("this DataModule was made by from_paths: it only has predict_dataloader().")
        if self.prepared is None:
            self.setup()
        return self.prepared

    def split_records(self, split: str) -> list[Record]:
        """Records of ``split`` (train/val/test) in loader order; SMOTE images excluded."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        return list(self._require_setup().splits[split])

    def _train_records(self) -> list[Record]:
        return self._require_setup().train_records()

    def class_counts(self, split: str = "train") -> np.ndarray:
        records = self._train_records() if split == "train" else self.split_records(split)
        return class_counts(records, self.num_classes)

    def class_weights(self) -> torch.Tensor:
        """Inverse class frequency on the training set the loader draws from (SMOTE images
        included), normalised to mean 1, in class order: ``FloatTensor[num_classes]``."""
        counts = torch.as_tensor(self.class_counts("train"), dtype=torch.float64)
        w = 1.0 / counts.clamp(min=1)
        return (w / w.mean()).float()

    def write_splits(self, output_dir: str | os.PathLike, prepared: PreparedData | None = None,
                     file_name: str = "splits.csv") -> Path:
        """Write ``<output_dir>/splits.csv`` (``path,label,split,group``; label = class name;
        paths relative to data.root when below it; training images left out by a subset listed
        as ``unused``). SMOTE images are not listed (they are regenerated from the seed). Reuse
        with ``data.split_file=<that file>``. ``prepared`` defaults to :attr:`prepared`."""
        from hdkd_lightning.data.splits import write_split_csv

        data = prepared or self._require_setup()
        return write_split_csv(data.records() + data.unused, data.class_names, self._root(), Path(output_dir) / file_name)

    def data_record(self, data_name: str) -> dict:
        """The data record of what this DataModule serves (:mod:`hdkd_lightning.data.provenance`):
        sources, split, subset, preprocessing and the identity of every image."""
        from hdkd_lightning.data.provenance import data_record
        from hdkd_lightning.data.splits import split_csv_text
        from hdkd_lightning.data.transforms import default_eval_entries

        data = self._require_setup()
        return data_record(data, self.settings, data_name, self.image_keys(data.records()),
                           self.eval_entries if self.eval_entries is not None else default_eval_entries(),
                           split_csv_text(data.records() + data.unused, data.class_names, self._root()))

    @property
    def image_metadata(self) -> dict[str, dict[str, str]]:
        """path -> subgroup attributes of every image (empty when the data have none;
        :mod:`hdkd_lightning.data.metadata`)."""
        if self.source is None:
            return {}
        return self._require_setup().metadata

    @property
    def metadata_source(self) -> str | None:
        """Where :attr:`image_metadata` came from (file paths), for the record of results."""
        return None if self.source is None else self._require_setup().index.metadata_source

    def image_keys(self, records: Sequence[Record]) -> dict[str, tuple[str, ...]]:
        """path -> identity keys of each record's image (content hash, ISIC id; see data.provenance)."""
        from hdkd_lightning.data.provenance import image_keys

        paths = [r.path for r in records]
        hashes = self.file_checker().hashes(paths) if self.source is not None and self.source.root is not None else {}
        return {p: image_keys(p, hashes.get(p)) for p in paths}

    def _root(self) -> Path | None:
        return Path(self.source.root).resolve() if self.source.root is not None else None

    # ------------------------------------------------------------------ loaders
    def _transform(self, train: bool):
        from hdkd_lightning.data.transforms import build_pipeline, default_eval_entries, default_train_entries

        if train:
            entries = self.train_entries if self.train_entries is not None else default_train_entries()
            return build_pipeline(entries, where="data.transforms.train", seed=self.seed)
        entries = self.eval_entries if self.eval_entries is not None else default_eval_entries()
        return build_pipeline(entries, where="data.transforms.eval", seed=self.seed)

    def _reader_for(self):
        return self._require_setup().image_reader()

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
            from hdkd_lightning.data.samplers import DistributedWeightedSampler, inverse_frequency_weights

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
                   interpolation: str = "area", max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
                   transforms: Mapping | None = None, on_bad_image: str = "error",
                   check: bool = True, key_prefix: str | None = "") -> HdkdDataModule:
        """A DataModule whose ``predict_dataloader`` serves the given image files / folders
        (folders are scanned recursively) through the eval pipeline; labels are -1. Files are
        checked up front: unreadable ones raise a DataError naming them (or, with
        ``on_bad_image="skip"``, are left out with a warning and listed in ``dm.skipped_inputs``, a
        :class:`~hdkd_lightning.data.base.Problem` each: path and reason).

        ``key_prefix`` is how the caller's command spells ``on_bad_image`` / ``max_image_pixels`` in the
        fix of an unreadable file (:func:`~hdkd_lightning.data.base.problems_message`): ``""`` (top-level
        keys: hdkd-predict, hdkd-explain), or ``None`` for a command that has neither (hdkd-export)."""
        from hdkd_lightning.data.datasets import expand_paths
        from hdkd_lightning.data.io import check_image

        # checked before the constructor, whose messages name the data.* keys of a training config
        if on_bad_image not in ("error", "skip"):
            raise DataError(f"on_bad_image={on_bad_image!r}: choose on_bad_image=error (stop, naming the file) "
                            f"or on_bad_image=skip (leave it out with a warning)")
        try:
            max_image_pixels = None if max_image_pixels in (None, "", 0) else int(max_image_pixels)
        except (TypeError, ValueError):
            raise DataError(f"max_image_pixels={max_image_pixels!r} is not a whole number; pass one, e.g. "
                            f"max_image_pixels={DEFAULT_MAX_PIXELS}") from None
        dm = cls(source="paths", image_size=image_size, batch_size=batch_size,
                 num_workers=num_workers, interpolation=interpolation,
                 max_image_pixels=max_image_pixels, transforms=transforms,
                 on_bad_image=on_bad_image, cache={"images": False, "dir": None})
        files = expand_paths(paths)
        dm.skipped_inputs = []
        if check:
            bad = [Problem("unreadable", p, info["error"], pixels=over_limit(info, dm.max_image_pixels))
                   for p in files if not (info := check_image(p, dm.max_image_pixels))["ok"]]
            if bad and on_bad_image == "error":
                raise DataError("cannot predict on unreadable input(s):\n"
                                + problems_message(bad, key_prefix=key_prefix))
            if bad:
                warnings.warn("skipping unreadable input(s):\n"
                              + problems_message(bad, key_prefix=key_prefix, skipping=True),
                              stacklevel=2)
                drop = {b.path for b in bad}
                files = [f for f in files if f not in drop]
                dm.skipped_inputs = bad
        dm._predict_paths = files
        dm._fixed_class_names = list(class_names) if class_names is not None else []
        return dm

