"""Readability checks and content hashes of many files, cached on disk.

Every setup checks every image of the dataset (see :func:`hdkd_lightning.data.io.check_image`
for what is checked). The results, and the content hashes used for duplicate detection, are
kept in ``<cache dir>/checks/<hash of the dataset root>.json`` keyed by absolute path and
validated by file size + modification time (+ the pixel limit), so a second run on an
unchanged dataset re-reads nothing. A full decode (``check(..., full=True)``, used by
``hdkd-data inspect``) is remembered the same way. Files are checked by a small thread pool (file reads and
Pillow's parsing release the GIL often enough to overlap I/O).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hdkd_lightning.data.io import ImageReadError, check_image, file_hash, load_rgb
from hdkd_lightning.files import atomic_write

log = logging.getLogger(__name__)
_VERSION = 1


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class FileChecker:
    """Checks and hashes files, remembering results in ``cache_dir`` (``None``: in memory only)."""

    def __init__(self, cache_dir: str | Path | None, namespace: str, max_pixels: int | None,
                 threads: int | None = None):
        self.max_pixels = max_pixels
        self.threads = threads or min(8, (os.cpu_count() or 1) * 2)
        self.file: Path | None = None
        if cache_dir is not None:
            digest = hashlib.sha1(namespace.encode("utf-8", "surrogateescape")).hexdigest()[:16]
            self.file = Path(cache_dir).expanduser() / "checks" / f"{digest}.json"
        self._entries: dict[str, dict] = {}
        self._dirty = False
        self._load()

    def _load(self) -> None:
        if self.file is None or not self.file.is_file():
            return
        try:
            data = json.loads(self.file.read_text())
            if data.get("version") == _VERSION:
                self._entries = data["entries"]
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable check cache %s", self.file)

    def save(self) -> None:
        if self.file is None or not self._dirty:
            return
        try:
            payload = {"version": _VERSION, "entries": self._entries}
            atomic_write(self.file, lambda fh: json.dump(payload, fh))
            self._dirty = False
        except OSError as e:  # a read-only cache dir must not stop training
            log.warning("could not write the check cache %s: %s", self.file, e)

    def _valid(self, path: str, need: str) -> dict | None:
        entry = self._entries.get(path)
        key = _stat_key(path)
        if entry is None or key is None or tuple(entry["stat"]) != key:
            return None
        if need in ("check", "full") and ("ok" not in entry or entry.get("max_pixels") != self.max_pixels):
            return None
        if need == "full" and entry["ok"] and not entry.get("full"):
            return None
        if need == "hash" and "hash" not in entry:
            return None
        return entry

    def _run(self, paths: list[str], need: str) -> None:
        todo = [p for p in paths if self._valid(p, need) is None]
        if not todo:
            return

        def work(path: str) -> tuple[str, tuple | None, dict]:
            key = _stat_key(path)
            if need == "check":
                return path, key, check_image(path, self.max_pixels)
            if need == "full":  # header check, then a complete decode
                info = check_image(path, self.max_pixels)
                if info["ok"]:
                    try:
                        load_rgb(path, self.max_pixels)
                    except ImageReadError as e:
                        info.update(ok=False, error=str(e).split(": ", 1)[-1])
                info["full"] = True
                return path, key, info
            try:
                return path, key, {"hash": file_hash(path)}
            except OSError as e:
                return path, key, {"hash": None, "hash_error": str(e)}

        if len(todo) > 64:
            log.info("%s %d files (results cached in %s)", "checking" if need == "check" else
                     "hashing", len(todo), self.file)
        with ThreadPoolExecutor(self.threads) as pool:
            for path, key, result in pool.map(work, todo, chunksize=32):
                if key is None:
                    continue
                entry = self._entries.get(path)
                if entry is None or tuple(entry["stat"]) != key:
                    entry = {"stat": list(key)}
                    self._entries[path] = entry
                entry.update(result)
                if need != "hash":
                    entry["max_pixels"] = self.max_pixels
                self._dirty = True
        self.save()

    def check(self, paths: Iterable[str], full: bool = False) -> dict[str, dict]:
        """path -> ``{"ok", "error", "format", "mode", "width", "height"}``; ``full`` also
        decodes every file completely (``hdkd-data inspect`` does, training does not)."""
        paths = list(paths)
        self._run(paths, "full" if full else "check")
        out = {}
        for p in paths:
            e = self._entries.get(p)
            if e is None or "ok" not in e:  # vanished while checking
                out[p] = {"ok": False, "error": "file not found", "format": None, "mode": None,
                          "width": None, "height": None}
            else:
                out[p] = e
        return out

    def hashes(self, paths: Iterable[str]) -> dict[str, str | None]:
        """path -> content hash (``None`` when unreadable)."""
        paths = list(paths)
        self._run(paths, "hash")
        return {p: self._entries.get(p, {}).get("hash") for p in paths}

    def mark_bad(self, path: str, error: str) -> None:
        """Remember a failure found later (a full decode while building the cache)."""
        key = _stat_key(path)
        if key is None:
            return
        entry = self._entries.get(path)
        if entry is None or tuple(entry["stat"]) != key:
            entry = self._entries[path] = {"stat": list(key)}
        entry.update(ok=False, error=error, max_pixels=self.max_pixels)
        self._dirty = True
