"""Records, the source protocol and the split names (errors: ``hdkd_lightning.errors.DataError``).

A *source* knows one dataset layout. ``source.index()`` walks the root folder and returns an
:class:`Index`: one :class:`Record` per image (path, integer label in ``class_names`` order,
group such as a lesion or patient id, official split if the layout has one) and the
problems found on the way (rows without images, images without rows, unknown labels...).
Indexing never decodes images; checking that files are readable is done afterwards by
:mod:`hdkd_lightning.data.checks`, the same for every source.

Splits are named ``train``, ``val``, ``test``; ``None`` means "not assigned by the layout"
(the DataModule carves those records into the missing splits).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hdkd_lightning.errors import DataError

SPLITS = ("train", "val", "test")
#: split name, in ``splits.csv`` only, of training images left out by a limited-data subset
UNUSED = "unused"


@dataclasses.dataclass(frozen=True)
class Record:
    """One image of a dataset.

    path: file path (absolute for files on disk; ``synthetic:<split>/<i>`` for generated images).
    label: class index into ``class_names``; -1 when unknown (prediction on unlabeled images).
    group: images sharing a group (a lesion, a patient) always land in the same split;
        ``None`` means the image is its own group.
    split: ``train``/``val``/``test`` when fixed by the layout or a split file, else ``None``.
    """

    path: str
    label: int
    group: str | None = None
    split: str | None = None

    def with_split(self, split: str | None) -> Record:
        return dataclasses.replace(self, split=split)


@dataclasses.dataclass
class Problem:
    """A per-file problem found while indexing or checking (kind is one of ``PROBLEM_KINDS``).

    pixels: width x height of an image refused by the pixel limit, so the fix can name a limit
    that admits it (``None`` for every other problem).
    """

    kind: str
    path: str
    detail: str = ""
    pixels: int | None = None


def over_limit(info: dict, max_pixels: int | None) -> int | None:
    """The pixel count of a checked image (:func:`hdkd_lightning.data.io.check_image`'s result) that the
    limit ``max_pixels`` refused, else ``None``."""
    width, height = info.get("width"), info.get("height")
    if not max_pixels or not width or not height or width * height <= max_pixels:
        return None
    return int(width * height)


# kind -> (what it is, how to fix it, what on_bad_image=skip does with it); problems_message words the
# on_bad_image=skip alternative with the running command's own key
PROBLEM_KINDS: dict[str, tuple[str, str, str]] = {
    "unreadable": ("unreadable, truncated or oversized image(s)", "replace or delete the file(s)",
                   "drop them with a warning"),
    "missing_image": ("CSV row(s) whose image file was not found under data.root",
                      "restore the image file(s) or delete the row(s) from the CSV", "drop them with a warning"),
    "unlisted_image": ("image file(s) with no row in the CSV", "add rows for them, move them out of data.root",
                       "ignore them with a warning"),
    "unknown_label": ("row(s)/file(s) with a label that is not one of the dataset's classes", "fix the label",
                      "drop them with a warning"),
}


def describe_paths(paths: Sequence[str], first: int = 5) -> str:
    """``'a', 'b', 'c' ... (and 12 more; 15 in total)`` for error messages."""
    shown = ", ".join(repr(str(p)) for p in paths[:first])
    rest = len(paths) - first
    return shown + (f" ... (and {rest} more; {len(paths)} in total)" if rest > 0 else "")


def problems_message(problems: Sequence[Problem], first: int = 5, key_prefix: str | None = "data.",
                     skipping: bool = False) -> str:
    """One paragraph per problem kind: count, first few files with details, and the fix.

    ``key_prefix`` is how the running command spells ``on_bad_image`` / ``max_image_pixels`` in the
    fix, so that every hint is a ``key=value`` the command accepts as written: ``"data."`` where the
    data config is a group (hdkd-train, hdkd-eval, hdkd-data), ``""`` where they are top-level keys
    (hdkd-predict, hdkd-explain), ``None`` where the command has neither (hdkd-export's ``input=``):
    then the fix only says what to do with the files. ``skipping``: the files are being skipped already
    (``on_bad_image=skip``), so the fix does not suggest it again."""
    parts = []
    by_kind: dict[str, list[Problem]] = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p)
    for kind, items in by_kind.items():
        what, fix, skipped = PROBLEM_KINDS.get(kind, (kind, "fix or remove the file(s)", "leave them out"))
        if key_prefix is not None:
            if not skipping:
                fix += f", or set {key_prefix}on_bad_image=skip to {skipped}"
            oversized = [p.pixels for p in items if p.pixels]
            if oversized:  # a limit that admits the largest of them, ready to paste (never ends the sentence)
                fix += (f"; or, for oversized image(s) that are legitimate, raise the limit with "
                        f"{key_prefix}max_image_pixels={max(oversized)} to admit them")
        lines = [f"{len(items)} {what}:"]
        for p in items[:first]:
            lines.append(f"  - {p.path}" + (f": {p.detail}" if p.detail else ""))
        if len(items) > first:
            lines.append(f"  ... and {len(items) - first} more")
        lines.append(f"  Fix: {fix}.")
        parts.append("\n".join(lines))
    return "\n".join(parts)


@dataclasses.dataclass
class Index:
    """What a source found under its root."""

    records: list[Record]
    class_names: list[str]
    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)  # informational, shown by inspect
    #: path -> subgroup attributes (sex, age band, ...; :mod:`hdkd_lightning.data.metadata`), where the layout has them
    metadata: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    #: where ``metadata`` came from (a CSV path), for the records of results
    metadata_source: str | None = None


@runtime_checkable
class Source(Protocol):
    """A dataset layout. Implementations live in ``hdkd_lightning.data.sources``.

    name: short name used in messages and cache folder names.
    root: the dataset root (``None`` for generated data).
    expected_layout: one or more lines describing the folder layout, quoted in errors.
    """

    name: str
    root: Path | None
    expected_layout: str

    def class_names(self) -> list[str]:
        """Class names in label order, cheaply (no image is opened)."""

    def index(self) -> Index:
        """Walk the root and return the records (no image is decoded)."""

    def load(self, record: Record, max_pixels: int | None) -> np.ndarray:
        """The image of ``record`` as uint8 HxWx3 RGB."""


class FileSource:
    """Common base of the sources that read image files from ``root``."""

    name = "files"
    expected_layout = ""

    def __init__(self, root: str | Path | None):
        if root is None or str(root) in ("", "???"):
            raise DataError(
                f"data.root is not set for data={self.name}; pass data.root=<dataset folder>.\n"
                f"Expected layout:\n{self.expected_layout}"
            )
        self.root = Path(str(root)).expanduser()

    def check_root(self) -> Path:
        if not self.root.exists():
            raise DataError(
                f"data.root={self.root} does not exist (data={self.name}); pass data.root=<dataset "
                f"folder>.\nExpected layout:\n{self.expected_layout}"
            )
        if not self.root.is_dir():
            raise DataError(f"data.root={self.root} is not a folder (data={self.name}).")
        return self.root.resolve()

    def layout_error(self, what: str) -> DataError:
        try:
            entries = sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))
        except OSError:
            entries = []
        found = ", ".join(entries[:15]) + (" ..." if len(entries) > 15 else "") or "(empty)"
        return DataError(
            f"data.root={self.root} does not have the {self.name} layout: {what}.\n"
            f"Expected layout:\n{self.expected_layout}\nFound at the top of the root: {found}.\n"
            f"Fix: point data.root at the dataset folder, or pick the matching data=<source>."
        )

    def load(self, record: Record, max_pixels: int | None) -> np.ndarray:
        from hdkd_lightning.data.io import load_rgb

        return load_rgb(record.path, max_pixels=max_pixels)


def class_counts(records: Iterable[Record], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    for r in records:
        if r.label >= 0:
            counts[r.label] += 1
    return counts
