"""Pre-resized uint8 image cache: decode and resize each image once, then read rows.

Layout: ``<cache dir>/images/<source>-<root hash>-<size>px-<interpolation>-<key>/`` holding
``images.u8`` (a raw ``N x S x S x 3`` uint8 array, memory-mapped read-only by each loader
process) and ``index.json`` (the row of each path, and the files that failed to decode).
``index.json`` is written last, after an atomic rename of the finished folder, so a half-built
cache is never used.

Invalidation: ``key`` hashes the image size, the interpolation, the pixel limit and the
(path, size, mtime) of every file of the dataset, so touching, replacing, adding or removing a
file, or changing ``data.image_size``, selects a new folder; the stale folders of the same
dataset/size are deleted when the new one is complete. The key covers every file the source
indexed (not the split), so changing seeds, fractions, ``data.dedup`` or ``data.split_file``
reuses the same cache.

Building decodes every file fully, so it also catches corrupt files that the cheap header
check at setup lets through; they are reported with the same error/skip policy.
For generated data (no root) the "cache" is an in-memory array built at setup.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
_VERSION = 1


def cache_key(paths: Sequence[str], image_size: int, interpolation: str, max_pixels: int | None) -> str:
    h = hashlib.sha1(f"v{_VERSION}|{image_size}|{interpolation}|{max_pixels}".encode())
    for p in sorted(paths):
        try:
            st = os.stat(p)
            h.update(f"\n{p}|{st.st_size}|{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"\n{p}|missing".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


class DiskCache:
    """One cache folder (see the module docstring)."""

    def __init__(self, cache_dir: str | Path, source_name: str, root: str | Path,
                 paths: Sequence[str], image_size: int, interpolation: str,
                 max_pixels: int | None):
        self.image_size = int(image_size)
        self.paths = sorted(set(paths))
        root_hash = hashlib.sha1(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:8]
        self.prefix = f"{source_name}-{root_hash}-{self.image_size}px-{interpolation}-"
        self.key = cache_key(self.paths, self.image_size, interpolation, max_pixels)
        self.base = Path(cache_dir).expanduser() / "images"
        self.dir = self.base / (self.prefix + self.key)
        self._index: dict | None = None

    @property
    def array_file(self) -> Path:
        return self.dir / "images.u8"

    def exists(self) -> bool:
        return (self.dir / "index.json").is_file() and self.array_file.is_file()

    def index(self) -> dict:
        if self._index is None:
            self._index = json.loads((self.dir / "index.json").read_text())
        return self._index

    def rows(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.index()["paths"])}

    def bad(self) -> dict[str, str]:
        return dict(self.index()["bad"])

    def build(self, load: Callable[[str], np.ndarray], skip: set[str] | None = None,
              threads: int | None = None) -> dict[str, str]:
        """Decode + resize every path (but ``skip``) into a new folder; returns path -> error
        for the files that failed. No-op when the cache already exists."""
        if self.exists():
            return self.bad()
        skip = skip or set()
        s = self.image_size
        n = len(self.paths)
        tmp = self.dir.with_name(f".tmp-{self.dir.name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        nbytes = n * s * s * 3
        free = shutil.disk_usage(tmp).free
        if nbytes > free:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(f"the image cache needs {nbytes / 2**30:.1f} GiB but {self.base} has "
                          f"{free / 2**30:.1f} GiB free; set data.cache.dir=<bigger disk> or "
                          f"data.cache.images=false")
        mm = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=(max(n, 1), s, s, 3))
        bad: dict[str, str] = {}
        t0 = time.perf_counter()
        log.info("building the image cache: %d images at %dpx in %s", n, s, self.dir)

        def work(i: int) -> tuple[int, np.ndarray | None, str]:
            p = self.paths[i]
            if p in skip:
                return i, None, "skipped (failed the readability check)"
            try:
                return i, load(p), ""
            except Exception as e:  # noqa: BLE001  (reported per file)
                return i, None, str(e)

        threads = threads or max(1, os.cpu_count() or 1)
        with ThreadPoolExecutor(threads) as pool:
            for i, img, err in pool.map(work, range(n), chunksize=16):
                if img is None:
                    bad[self.paths[i]] = err
                    continue
                if img.shape != (s, s, 3) or img.dtype != np.uint8:
                    bad[self.paths[i]] = f"loader returned {img.shape} {img.dtype}"
                    continue
                mm[i] = img
        mm.flush()
        del mm
        (tmp / "index.json").write_text(json.dumps(
            {"version": _VERSION, "image_size": s, "paths": self.paths, "bad": bad,
             "built_s": round(time.perf_counter() - t0, 2)}))
        try:
            os.replace(tmp, self.dir)
        except OSError:  # another process finished first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("image cache built in %.1fs (%d failures)", time.perf_counter() - t0, len(bad))
        self._remove_stale()
        self._index = None
        return self.bad()

    def _remove_stale(self) -> None:
        for other in self.base.glob(self.prefix + "*"):
            if other != self.dir and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)


class CacheReader:
    """Picklable row reader: opens the memory map lazily in each process."""

    def __init__(self, array_file: str | Path, rows: dict[str, int], image_size: int):
        self.array_file = str(array_file)
        self.rows = rows
        self.image_size = int(image_size)
        self._mm: np.ndarray | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_mm"] = None
        return state

    def __call__(self, path: str) -> np.ndarray:
        if self._mm is None:
            s = self.image_size
            size = os.path.getsize(self.array_file)
            self._mm = np.memmap(self.array_file, dtype=np.uint8, mode="r",
                                 shape=(size // (s * s * 3), s, s, 3))
        return np.array(self._mm[self.rows[path]])  # copy: transforms may write in place


class MemoryCache:
    """All images pre-resized in RAM (generated data, SMOTE samples)."""

    def __init__(self, images: np.ndarray, rows: dict[str, int]):
        self.images = images
        self.rows = rows

    def __call__(self, path: str) -> np.ndarray:
        return self.images[self.rows[path]].copy()
