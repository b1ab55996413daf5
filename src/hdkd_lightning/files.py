"""Small file helpers every layer uses: crash-safe writes and plain (YAML/JSON-ready) values."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

__all__ = ["atomic_write", "chmod_default", "publish", "write_json_atomic", "to_plain", "is_plain_setting", "sha256_file"]


def atomic_write(path: Union[str, Path], write: Callable[[IO], None], binary: bool = False) -> Path:
    """Write ``path`` via a temporary file ``.<name>.<random>.tmp`` in the same folder, ``fsync`` and
    ``os.replace`` (then ``fsync`` of the folder, so the rename survives a power loss).

    Readers see the old complete file or the new complete one, never a partial write; a crash
    (or an exception in ``write``) leaves any previous ``path`` intact and no temporary file
    behind. The result gets the usual permissions (:func:`chmod_default`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mode = "wb" if binary else "w"
        kw = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kw) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def publish(tmp: Union[str, Path], path: Union[str, Path]) -> Path:
    """Move a complete temporary file (one written by :func:`atomic_write`, or by a library that only
    writes to a path: ONNX, ONNX Runtime) onto ``path`` in one step: the usual permissions, then
    ``os.replace`` and an ``fsync`` of the folder so that the rename survives a power loss."""
    path = Path(path)
    chmod_default(tmp)
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def chmod_default(path: Union[str, Path]) -> None:
    """Give a file made by ``tempfile.mkstemp`` (mode 0600) the usual ``0666 & ~umask``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_json_atomic(path: Union[str, Path], data: Any) -> Path:
    """``data`` as indented strict JSON (no NaN), written with :func:`atomic_write`."""
    text = json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"
    return atomic_write(path, lambda fh: fh.write(text))


def to_plain(value: Any) -> Any:
    """OmegaConf containers -> resolved dicts and lists (safe for ``weights_only`` pickles and JSON);
    anything else is returned unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def is_plain_setting(value: Any) -> bool:
    """Whether a setting read from a file is plain data that nothing turns into code or a file read:
    None, a bool, a number, a string without ``${...}`` (OmegaConf would resolve it), or a list of these."""
    if isinstance(value, (list, tuple)):
        return all(is_plain_setting(v) for v in value)
    if isinstance(value, str):
        return "${" not in value
    return value is None or isinstance(value, (bool, int, float))


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex): how a checkpoint or an exported file is identified."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
