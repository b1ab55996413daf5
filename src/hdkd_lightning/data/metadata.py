"""Per-image metadata (sex, age band, body site, ...): the attributes that subgroup results split a test set by.

Every attribute is categorical: a dict ``path -> {attribute: value}`` per dataset, values are short
strings, and an image without a value has ``unknown``.

* **HAM10000** (``HAM10000_metadata.csv``): ``sex``, ``age`` (a band, :func:`age_band`), ``site``
  (the ``localization`` column) and ``dx_type`` (how the diagnosis was confirmed: histo,
  follow_up, consensus, confocal).
* **ISIC 2018**: ``dx_type`` of the training images from ``..._LesionGroupings.csv``
  (``diagnosis_confirm_type``), when present. The images are HAM10000's, so
  ``data.metadata_csv=<...>/HAM10000_metadata.csv`` adds sex, age and site (keyed by ``image_id``).
* **Any source** (``data.metadata_csv=<file>``, :func:`read_metadata_csv`): a CSV with one row per
  image, keyed by a column named ``file``, ``filename``, ``image``, ``image_id`` or ``path``
  (the first present) holding the file name, the name without extension, or the path relative to
  ``data.root``; every other column is an attribute. A numeric ``age`` column is banded; columns
  with more than :data:`MAX_VALUES` distinct values (ids, free text) are left out with a note
  (subgroups of one image say nothing). ``HAM10000_metadata.csv`` itself is recognised by its columns
  and gives HAM's attributes (never ``dx``, the label). Its values replace a source's own for the
  same attribute.

Age bands are 15 years wide, ``<30`` and ``75+`` at the ends (:data:`AGE_BAND_EDGES`): wide enough
that HAM10000's test split (about 1,500 images) has 100+ images in every band.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from hdkd_lightning.errors import DataError

__all__ = ["UNKNOWN", "AGE_BAND_EDGES", "MAX_VALUES", "KEY_COLUMNS", "age_band", "ham_attributes",
           "read_metadata_csv", "merge_metadata"]

UNKNOWN = "unknown"
AGE_BAND_EDGES = (30, 45, 60, 75)
#: attributes with more distinct values than this are not subgroups (ids, free text)
MAX_VALUES = 50
KEY_COLUMNS = ("file", "filename", "image", "image_id", "path")
#: the columns that make a CSV HAM10000's own metadata (read with :func:`ham_attributes`)
HAM_COLUMNS = frozenset({"lesion_id", "image_id", "dx"})


def age_band(value: object) -> str:
    """``'62.0'`` -> ``'60-74'``; empty, non-numeric or negative -> ``unknown``."""
    try:
        age = float(str(value).strip())
    except ValueError:
        return UNKNOWN
    if not math.isfinite(age) or age < 0:
        return UNKNOWN
    edges = AGE_BAND_EDGES
    if age < edges[0]:
        return f"<{edges[0]}"
    for low, high in zip(edges, edges[1:]):
        if age < high:
            return f"{low}-{high - 1}"
    return f"{edges[-1]}+"


def _clean(value: object) -> str:
    text = str(value or "").strip()
    return text if text and text.lower() not in ("nan", "none", "null", UNKNOWN) else UNKNOWN


def ham_attributes(row: Mapping[str, str]) -> dict[str, str]:
    """The subgroup attributes of one ``HAM10000_metadata.csv`` row (columns absent -> no attribute)."""
    out = {}
    if "sex" in row:
        out["sex"] = _clean(row["sex"])
    if "age" in row:
        out["age"] = age_band(row["age"])
    if "localization" in row:
        out["site"] = _clean(row["localization"])
    if "dx_type" in row:
        out["dx_type"] = _clean(row["dx_type"])
    return out


def read_metadata_csv(file: str | Path, paths: Sequence[str],
                      root: str | Path | None) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``data.metadata_csv``: the attributes of the images ``paths`` (module docstring) and notes
    for ``hdkd-data inspect`` / the log. Refused in one line: a missing file, no key column, an
    image named twice, or no row naming any image of the data."""
    from hdkd_lightning.data.sources._common import read_csv

    file = Path(str(file)).expanduser()
    if not file.is_file():
        raise DataError(f"data.metadata_csv={file}: no such file; give a CSV with a '{KEY_COLUMNS[0]}' column "
                        f"(or one of {list(KEY_COLUMNS[1:])}) and one column per attribute, or drop the key")
    rows = read_csv(file, [])
    columns = list(rows[0]) if rows else []
    key = next((c for c in KEY_COLUMNS if c in columns), None)
    if key is None:
        raise DataError(f"data.metadata_csv={file}: no key column; found {columns}. Name the column with the "
                        f"image file names one of {list(KEY_COLUMNS)}")
    notes: list[str] = []
    if HAM_COLUMNS <= set(columns):  # HAM10000_metadata.csv itself (e.g. for ISIC 2018): HAM's own attributes
        return _ham_csv(file, rows, paths, notes)
    attributes = [c for c in columns if c != key]
    wide = [c for c in attributes if len({_clean(r[c]) for r in rows}) > MAX_VALUES and c != "age"]
    if wide:
        notes.append(f"data.metadata_csv: column(s) {wide} have more than {MAX_VALUES} distinct values and are "
                     f"not used as subgroups")
        attributes = [c for c in attributes if c not in wide]
    root_path = Path(str(root)).resolve() if root else None
    lookup: dict[str, str] = {}
    for p in paths:  # every way a row may name the image: relative path, file name, name without extension
        path = Path(p)
        names = [path.name.lower(), path.stem.lower()]
        if root_path is not None:
            try:
                names.insert(0, path.resolve().relative_to(root_path).as_posix().lower())
            except ValueError:
                pass
        for name in names:
            lookup.setdefault(name, p)
    out: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        name = row[key].replace("\\", "/").strip().lower()
        path = lookup.get(name) or lookup.get(Path(name).name) or lookup.get(Path(name).stem)
        if path is None:
            continue
        if path in out:
            raise DataError(f"data.metadata_csv={file}: line {line} names {row[key]!r}, an image an earlier row "
                            f"already names ({path}); keep one row per image")
        out[path] = {c: (age_band(row[c]) if c == "age" else _clean(row[c])) for c in attributes}
    if rows and not out:
        raise DataError(f"data.metadata_csv={file}: none of its {len(rows)} rows names an image under data.root "
                        f"(column {key!r}, e.g. {rows[0][key]!r}); the column must hold the file names")
    unmatched = len(rows) - len(out)
    notes.append(f"data.metadata_csv: {file}: attributes {attributes} for {len(out)} of {len(paths)} images"
                 + (f"; {unmatched} row(s) name no image of the data" if unmatched else ""))
    return out, notes


def _ham_csv(file: Path, rows: list[dict[str, str]], paths: Sequence[str], notes: list[str]):
    """``data.metadata_csv=<...>/HAM10000_metadata.csv``: sex, age band, site and diagnosis type by image id (not
    ``dx``, the label itself, nor ``lesion_id``)."""
    by_id = {r["image_id"].lower(): ham_attributes(r) for r in rows}
    out = {p: by_id[Path(p).stem.lower()] for p in paths if Path(p).stem.lower() in by_id}
    if not out:
        raise DataError(f"data.metadata_csv={file}: none of its {len(rows)} image_id values is the name of an image "
                        f"under data.root")
    notes.append(f"data.metadata_csv: {file} (HAM10000 metadata): sex, age, site, dx_type for {len(out)} of "
                 f"{len(paths)} images")
    return out, notes


def merge_metadata(base: Mapping[str, Mapping[str, str]], extra: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Per image, ``extra``'s attributes over ``base``'s."""
    out = {p: dict(v) for p, v in base.items()}
    for path, values in extra.items():
        out.setdefault(path, {}).update(values)
    return out
