"""Process-level runtime settings shared by every ``hdkd-*`` command.

:func:`configure_allocator` works around a glibc ``malloc`` pathology that dominates CPU
training of convolutional networks at 224 px. PyTorch's CPU allocator takes every activation
straight from ``malloc`` and gives it back with ``free``. glibc serves any request above
``M_MMAP_THRESHOLD`` (dynamic, at most 32 MiB on 64-bit) with a fresh ``mmap`` and returns it to
the kernel with ``munmap`` on ``free``; memory at the top of the heap is also handed back as
soon as more than ``M_TRIM_THRESHOLD`` is free. The activations of HDKD at 224 px, batch 16
are 25-80 MB each, so every operation maps fresh pages, the kernel zero-fills them on first
touch (page faults), and unmaps them again: on the project's 2-core EPYC one teacher forward
spent about as much time in the kernel as in arithmetic (``docs/PERFORMANCE.md``).

The fix keeps freed memory inside the process for reuse:

* ``mallopt(M_MMAP_MAX, 0)``: never serve a request with ``mmap``; every block comes from the
  heap, where freed blocks are recycled. (Raising ``M_MMAP_THRESHOLD`` is not enough: glibc
  refuses values above 32 MiB through ``mallopt``, and larger activations are exactly the
  problem.)
* ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``: return the top of the heap to the kernel only when more
  than 1 GiB is free at once, so a step's working set is not unmapped between steps.

Safety: the process keeps at most its own peak heap plus 1 GiB of free memory at the top; freed
blocks are reused by later allocations of any size, so memory does not grow across steps
(the test suite runs repeated steps and checks the resident size stays flat). Direct ``mmap``
users (``numpy.memmap``, memory-mapped datasets and checkpoints) are unaffected.

Switch it off with ``HDKD_MALLOC_TUNE=0`` (any of ``0, false, no, off``). It does nothing
outside Linux/glibc, or when a different allocator (jemalloc, tcmalloc, mimalloc) is preloaded
with ``LD_PRELOAD``. Child processes started by ``fork`` (DataLoader workers on Linux) inherit
the setting; processes started with ``spawn`` get it when they call this function.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Dict, Optional

__all__ = ["configure_allocator", "allocator_state", "ENV_VAR"]

ENV_VAR = "HDKD_MALLOC_TUNE"

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30

_STATE: Optional[Dict[str, object]] = None


def _disabled_by_env() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off")


def _preloaded_allocator() -> Optional[str]:
    for lib in os.environ.get("LD_PRELOAD", "").replace(":", " ").split():
        base = os.path.basename(lib)
        if any(name in base for name in ("jemalloc", "tcmalloc", "mimalloc")):
            return base
    return None


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None, None
    version.restype = ctypes.c_char_p
    return libc, version().decode()


def configure_allocator(force: bool = False) -> Dict[str, object]:
    """Tune glibc malloc for large, short-lived tensors (see the module docstring).

    Idempotent: the first call decides and later calls return the same description unless
    ``force`` (used by tests). Returns a dict with ``applied`` (bool), ``reason`` and the
    settings applied.
    """
    global _STATE
    if _STATE is not None and not force:
        return _STATE
    state: Dict[str, object] = {"applied": False, "env": ENV_VAR}
    preloaded = _preloaded_allocator()
    if _disabled_by_env():
        state["reason"] = f"{ENV_VAR}=0"
    elif not sys.platform.startswith("linux"):
        state["reason"] = f"not Linux ({sys.platform})"
    elif preloaded:
        state["reason"] = f"{preloaded} preloaded"
    else:
        libc, version = _glibc()
        if libc is None:
            state["reason"] = "not glibc"
        else:
            state["glibc"] = version
            mallopt = libc.mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            ok_mmap = mallopt(_M_MMAP_MAX, 0) == 1
            ok_trim = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            state.update(applied=ok_mmap and ok_trim, mmap_max=0, trim_threshold=TRIM_THRESHOLD,
                         reason="mallopt" if ok_mmap and ok_trim else "mallopt refused")
    _STATE = state
    return state


def allocator_state() -> Optional[Dict[str, object]]:
    """What :func:`configure_allocator` did in this process (None before its first call)."""
    return _STATE
