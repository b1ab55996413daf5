"""Helpers shared by the file-based sources: CSV reading, image lookup by id, class folders."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from hdkd_lightning.data.base import FileSource, Index, Problem, Record
from hdkd_lightning.data.io import is_hidden, looks_like_image, scan_images
from hdkd_lightning.errors import DataError


def read_csv(file: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            reader.fieldnames = fields
            missing = [c for c in required if c not in fields]
            if missing:
                raise DataError(f"{file}: missing column(s) {missing}; found {fields}. Expected "
                                f"at least {list(required)}.")
            return [{k: (v or "").strip() for k, v in row.items() if k is not None}
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{file}: cannot read the CSV ({e}).") from e


def find_named(files: Iterable[Path], name: str) -> Path | None:
    """The shallowest file called ``name`` (case-insensitive) among ``files``."""
    hits = [f for f in files if f.name.lower() == name.lower()]
    return min(hits, key=lambda f: (len(f.parts), str(f))) if hits else None


def images_by_id(images: Iterable[Path], notes: list[str], where: str) -> dict[str, Path]:
    """Map lower-case file stem -> path; an id found twice keeps the first in sorted order."""
    out: dict[str, Path] = {}
    extra = []
    for p in sorted(images):
        key = p.stem.lower()
        if key in out:
            extra.append(str(p))
        else:
            out[key] = p
    if extra:
        notes.append(f"{len(extra)} image(s) in {where} have the same id as another file and were "
                     f"ignored (e.g. {extra[0]}); the first path in sorted order is used.")
    return out


def image_of_row(by_id: dict[str, Path], image_id: str, csv_file: Path, line: int, column: str, where: Path,
                 problems: list[Problem]) -> Path | None:
    """The image file a CSV row names (looked up case-insensitively), or None with a
    ``missing_image`` problem recorded that names the file, the line and the id."""
    path = by_id.get(image_id.lower())
    if path is None:
        problems.append(Problem("missing_image", f"{csv_file}:{line}",
                                f"{column} {image_id!r} has no image file below {where}"))
    return path


def find_dir(parent: Path, names: Sequence[str]) -> Path | None:
    """A sub-folder of ``parent`` whose name is one of ``names`` (case-insensitive)."""
    wanted = [n.lower() for n in names]
    try:
        children = sorted(p for p in parent.iterdir() if p.is_dir() and not is_hidden(p.name))
    except OSError:
        return None
    for n in wanted:
        for c in children:
            if c.name.lower() == n:
                return c
    return None


class ClassFolderSource(FileSource):
    """Images in ``<split dir>/<class name>/...``; class names from the train folder, sorted.

    ``split_dirs``: split -> accepted folder names (case-insensitive); ``required``: the
    splits whose folder must exist. Images directly inside a split folder (not in a class
    folder) and class folders absent from the train folder are reported as unknown labels.
    An empty class folder in the train folder is an error.
    """

    split_dirs: dict[str, Sequence[str]] = {}
    required: Sequence[str] = ("train",)

    def _dirs(self) -> dict[str, Path]:
        root = self.check_root()
        found = {s: find_dir(root, names) for s, names in self.split_dirs.items()}
        missing = [s for s in self.required if found[s] is None]
        if missing:
            names = " and ".join("/".join(f"{n}/" for n in self.split_dirs[s]) for s in missing)
            raise self.layout_error(f"no {names} folder")
        return {s: d for s, d in found.items() if d is not None}

    def class_names(self) -> list[str]:
        train = self._dirs()["train"]
        names = sorted(p.name for p in train.iterdir() if p.is_dir() and not is_hidden(p.name))
        if not names:
            raise self.layout_error(f"{train} has no class sub-folders")
        return names

    def index(self) -> Index:
        dirs = self._dirs()
        classes = self.class_names()
        label_of = {n: i for i, n in enumerate(classes)}
        records: list[Record] = []
        problems: list[Problem] = []
        notes: list[str] = []
        for split, folder in dirs.items():
            ignored_total = 0
            for entry in sorted(folder.iterdir()):
                if is_hidden(entry.name):
                    continue
                if entry.is_file():
                    if looks_like_image(entry):
                        problems.append(Problem("unknown_label", str(entry),
                                                f"not inside a class folder of {folder.name}/"))
                    continue
                if not entry.is_dir():
                    continue
                images, ignored = scan_images(entry)
                ignored_total += len(ignored)
                if entry.name not in label_of:
                    problems.extend(Problem("unknown_label", str(p),
                                            f"class folder {entry.name!r} is not one of {classes}")
                                    for p in images)
                    continue
                if not images:
                    if split == "train":
                        raise DataError(
                            f"class folder {entry} has no images (empty class {entry.name!r}); "
                            f"add images or remove the folder (data={self.name}).")
                    notes.append(f"class folder {entry} has no images")
                # the train folder is the pool the missing splits are carved from (split None)
                fixed = None if split == "train" else split
                records.extend(Record(str(p), label_of[entry.name], None, fixed) for p in images)
            if ignored_total:
                notes.append(f"{ignored_total} non-image file(s) ignored in {folder}")
        return Index(records, classes, problems, notes)
