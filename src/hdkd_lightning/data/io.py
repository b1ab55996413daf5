"""The one image reader, the folder scanner and the per-file readability check.

Decisions (documented here, relied on everywhere):

* Files are read **by content**: Pillow identifies the format from the bytes, so a PNG named
  ``.jpg`` loads fine. A folder scan takes files with a known image extension, plus files whose
  first bytes are an image signature (JPEG, PNG, GIF, BMP, TIFF, WebP); other files (``.txt``,
  ``LICENSE``...) are ignored. Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``,
  anything starting with ``.``) and ``__MACOSX`` are ignored.
* The scan follows symlinks to folders but remembers every folder it entered (device, inode),
  and skips links that point back to the scanned folder or one of its ancestors, so a symlink
  loop cannot hang the scan nor re-list the tree.
* Colour conversion to RGB: grayscale (``L``, ``1``) is replicated on 3 channels; palette
  images are expanded (through RGBA when they carry transparency); **images with an alpha
  channel are composited on black** (RGB * alpha), which matches the dark background of
  dermoscopy vignettes and MRI; CMYK (including Adobe-inverted CMYK JPEGs) goes through
  Pillow's CMYK->RGB conversion; 16-bit / 32-bit integer and float images (``I;16``, ``I``,
  ``F``) are **min-max scaled per image** to 0..255 (12-bit data stored in 16 bits would
  otherwise come out almost black or saturated). EXIF orientation is not applied (the
  original code did not either).
* Decompression-bomb guard: an image with more than ``max_pixels`` pixels (width*height,
  read from the header before decoding) is refused with an error naming the file, its size and
  the limit (``data.max_image_pixels`` in training, ``max_image_pixels`` in hdkd-predict /
  hdkd-explain; their fix names the key). Pillow's own global guard is not relied on.
* Readability check (:func:`check_image`), cheap enough for 10k files at every setup:
  Pillow ``verify()`` (parses the header; for PNG it also reads every chunk and checks the
  CRCs up to IEND, so truncated PNGs are caught), plus for JPEG a look at the last 4 KiB for
  the end-of-image marker ``FFD9``. Only when that marker is missing is the file fully decoded
  (a JPEG with trailing bytes after EOI is still fine; a truncated one fails). Other formats
  get the header check only; building the cache decodes every file fully and reports
  failures the same way. Results are cached by :mod:`hdkd_lightning.data.checks`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm"}
)
DEFAULT_MAX_PIXELS = 100_000_000
_IGNORED_DIRS = frozenset({"__MACOSX", "__pycache__"})


class ImageReadError(OSError):
    """An image could not be read; the message names the file."""


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_DIRS or name.lower() == "thumbs.db"


def sniff_image(path: str | os.PathLike) -> bool:
    """True when the first bytes of the file are a known image signature."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return (
        head.startswith(b"\xff\xd8\xff")
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head[:6] in (b"GIF87a", b"GIF89a")
        or head.startswith(b"BM")
        or head[:4] in (b"II*\x00", b"MM\x00*")
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
    )


def looks_like_image(path: str | os.PathLike) -> bool:
    """Known image extension (any case), or an image signature in the first bytes."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS or sniff_image(path)


def iter_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every non-hidden file below ``root`` (sorted per folder), following folder symlinks
    once (loops are cut), never failing on unreadable folders."""
    seen: set[tuple[int, int]] = set()
    root_real = os.path.realpath(root)
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            if is_hidden(entry.name):
                continue
            try:
                if entry.is_dir():  # follows symlinks; loops are cut by `seen`
                    if entry.is_symlink():
                        target = os.path.realpath(entry.path)
                        if root_real == target or root_real.startswith(target.rstrip(os.sep) + os.sep):
                            continue  # a link back to an ancestor: would re-scan the tree
                    subdirs.append(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path)
            except OSError:
                continue
        stack.extend(reversed(subdirs))


def scan_images(root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(image files, ignored non-image files) below ``root``."""
    images, ignored = [], []
    for p in iter_files(root):
        (images if looks_like_image(p) else ignored).append(p)
    return images, ignored


def _open(path: str | os.PathLike):
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = None  # our own guard below replaces Pillow's
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _guard(img, path, max_pixels: int | None) -> None:
    w, h = img.size
    if max_pixels is not None and max_pixels > 0 and w * h > max_pixels:
        # no key named here: hdkd-train calls the limit data.max_image_pixels, hdkd-predict max_image_pixels;
        # the caller's fix names its own key (data.base.problems_message)
        raise ImageReadError(
            f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} pixels "
            f"(decompression-bomb guard)"
        )


def to_rgb_array(img) -> np.ndarray:
    """A decoded Pillow image as uint8 HxWx3 RGB (conversion rules in the module docstring)."""

    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[:, :, 3:4]
        rgb = (rgba[:, :, :3] * alpha + 127) // 255
        return np.ascontiguousarray(rgb.astype(np.uint8))
    if mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(arr)


def load_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any image file as a uint8 HxWx3 RGB array (rules in the module docstring).

    Raises :class:`ImageReadError` naming the file when it is missing, not an image,
    truncated or larger than ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with _open(path) as img:
            _guard(img, path, max_pixels)
            img.load()
            return to_rgb_array(img)
    except ImageReadError:
        raise
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: file not found") from e
    except UnidentifiedImageError as e:
        raise ImageReadError(f"{path}: not an image Pillow can identify") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: cannot decode ({e})") from e


def _jpeg_has_eoi(path: str | os.PathLike, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 4096))
        return b"\xff\xd9" in fh.read()


def check_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict:
    """Cheap readability check: returns ``{"ok", "error", "format", "mode", "width", "height"}``.

    See the module docstring for what is and is not caught without a full decode.
    """
    from PIL import Image

    out = {"ok": False, "error": "", "format": None, "mode": None, "width": None, "height": None}
    try:
        size = os.path.getsize(path)
        if size == 0:
            out["error"] = "empty file (0 bytes)"
            return out
        with _open(path) as img:
            out.update(format=img.format, mode=img.mode, width=img.size[0], height=img.size[1])
            _guard(img, path, max_pixels)
            img.verify()
        if out["format"] == "JPEG" and not _jpeg_has_eoi(path, size):
            with _open(path) as img:  # no end-of-image marker near the end: decode to be sure
                img.load()
        out["ok"] = True
    except ImageReadError as e:
        out["error"] = str(e).split(": ", 1)[-1]
    except Exception as e:  # Pillow raises many types for corrupt files
        name = type(e).__name__
        msg = str(e) or name
        if isinstance(e, Image.UnidentifiedImageError):
            msg = "not an image Pillow can identify"
        out["error"] = msg if name in ("OSError", "UnidentifiedImageError") else f"{name}: {msg}"
    return out


def file_hash(path: str | os.PathLike) -> str:
    """Content hash (BLAKE2b, 128 bits) of a file, for byte-identical duplicate detection."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
