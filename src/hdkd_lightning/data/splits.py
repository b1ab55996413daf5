"""Carving splits (stratified by class, grouped) and the saved split file.

Carving: records without an official split form a *pool*; the missing splits are carved from
it with the fractions ``data.val_fraction`` / ``data.test_fraction`` **of the pool** (HAM10000:
the pool is the whole dataset, so the default is 70/15/15; Brain Tumor: the pool is
``Training/``, so 15% of it becomes validation and ``Testing/`` stays the test set).

The algorithm works on groups (a lesion, a patient; an ungrouped image is its own group), so
no group is ever in two splits. Groups are shuffled with ``data.seed`` and taken in that
order (not largest first: that would leave val/test with only single-image lesions); each
goes to the split whose per-class shortfall against its target (``fraction * class count``,
relative to the class size) is largest for the group's classes. With single-class groups this
gives per-class counts within one group of the targets; it is deterministic for a given seed
and record list (records are sorted by path first, so the scan order does not matter).

Split file (``splits.csv``, written by ``HdkdDataModule.write_splits``): columns
``path,label,split,group``; ``label`` is the **class name** (robust to class reordering);
``path`` is relative to ``data.root`` (POSIX separators) when the file is below it, so the
file can be reused on another machine with a different root, else absolute; ``group`` is
empty when the image has none. ``split`` is ``unused`` for training images left out by a
limited-data subset (:mod:`hdkd_lightning.data.subset`): they are listed, never loaded.
``data.split_file=<csv>`` reuses such a file exactly.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hdkd_lightning.data.base import SPLITS, UNUSED, Record, describe_paths
from hdkd_lightning.errors import DataError


def carve(records: Sequence[Record], num_classes: int, fractions: dict[str, float],
          seed: int) -> list[Record]:
    """Assign ``split`` to the records whose split is ``None``.

    ``fractions`` maps each split to carve (among val/test) to its fraction of the pool; the
    rest of the pool goes to ``train``. Records with a split keep it.
    """
    fixed = [r for r in records if r.split is not None]
    pool = sorted((r for r in records if r.split is None), key=lambda r: r.path)
    for name, f in fractions.items():
        if not 0.0 <= f < 1.0:
            raise DataError(f"data.{name}_fraction={f} must be in [0, 1).")
    if sum(fractions.values()) >= 1.0:
        raise DataError(
            f"data.val_fraction + data.test_fraction = {sum(fractions.values())} leaves nothing "
            f"for training; lower them.")
    if not pool:
        return list(records)
    targets_names = ["train", *[s for s in ("val", "test") if s in fractions]]
    frac = np.array([1.0 - sum(fractions.values())] + [fractions[s] for s in targets_names[1:]])

    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(pool):
        groups[r.group if r.group is not None else f"\0{r.path}"].append(i)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)  # random order: every split gets the same mix of group sizes

    total = np.zeros(num_classes)
    for r in pool:
        total[r.label] += 1
    target = frac[:, None] * total[None, :]  # split x class
    current = np.zeros_like(target)
    assigned: dict[int, str] = {}
    for k in keys:
        idx = groups[k]
        counts = np.zeros(num_classes)
        for i in idx:
            counts[pool[i].label] += 1
        # shortfall relative to each class's size, weighted by the group's class mix
        need = ((target - current) / np.maximum(total, 1)[None, :]) @ counts
        # tie-break on the overall shortfall, so tiny classes alternate between val and test
        need = need + 1e-3 * (target.sum(1) - current.sum(1)) / max(total.sum(), 1)
        # never put anything into a split with a zero fraction; break ties towards train
        need = np.where(frac > 0, need, -np.inf)
        s = int(np.argmax(need))
        current[s] += counts
        for i in idx:
            assigned[i] = targets_names[s]
    carved = [r.with_split(assigned[i]) for i, r in enumerate(pool)]
    return fixed + carved


def _rel(path: str, root: Path | None) -> str:
    if root is not None and not path.startswith("synthetic:"):
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return path


def write_split_csv(records: Sequence[Record], class_names: Sequence[str], root: Path | None,
                    file: str | Path) -> Path:
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w", newline="", encoding="utf-8") as fh:
        _write_rows(fh, records, class_names, root)
    return file


def split_csv_text(records: Sequence[Record], class_names: Sequence[str], root: Path | None) -> str:
    """The content :func:`write_split_csv` writes, as text (kept in a checkpoint's data record)."""
    buf = io.StringIO(newline="")
    _write_rows(buf, records, class_names, root)
    return buf.getvalue()


def _write_rows(fh, records: Sequence[Record], class_names: Sequence[str], root: Path | None) -> None:
    order = {s: i for i, s in enumerate((*SPLITS, UNUSED))}
    rows = sorted(records, key=lambda r: (order.get(r.split or "", 9), r.path))
    w = csv.writer(fh)
    w.writerow(["path", "label", "split", "group"])
    for r in rows:
        label = class_names[r.label] if r.label >= 0 else ""
        w.writerow([_rel(r.path, root), label, r.split or "", r.group or ""])


def read_split_csv(file: str | Path, class_names: Sequence[str], root: Path | None) -> list[Record]:
    """Records of a saved split file; errors name the file, the rows and the fix."""
    file = Path(str(file)).expanduser()
    if not file.is_file():
        raise DataError(f"data.split_file={file} does not exist; pass a splits.csv written by a "
                        f"previous run (or `hdkd-data inspect --splits`), or set data.split_file=null.")
    with open(file, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing_cols = {"path", "label", "split"} - set(reader.fieldnames or [])
        if missing_cols:
            raise DataError(f"data.split_file={file} lacks column(s) {sorted(missing_cols)}; "
                            f"expected the header path,label,split,group.")
        rows = list(reader)
    index = {n: i for i, n in enumerate(class_names)}
    records, bad_label, bad_split, seen, dups = [], [], [], set(), []
    for n, row in enumerate(rows, start=2):
        p = row["path"]
        if not p.startswith("synthetic:") and not os.path.isabs(p):
            if root is None:
                raise DataError(f"data.split_file={file} has relative paths but the source has no root.")
            p = str(root / p)
        if row["label"] not in index:
            bad_label.append(f"line {n}: {row['label']!r}")
        if row["split"] not in (*SPLITS, UNUSED):
            bad_split.append(f"line {n}: {row['split']!r}")
        if p in seen:
            dups.append(p)
        seen.add(p)
        records.append(Record(p, index.get(row["label"], -1), row.get("group") or None, row["split"]))
    if bad_label:
        raise DataError(f"data.split_file={file}: {len(bad_label)} unknown label(s) "
                        f"({describe_paths(bad_label)}); the dataset's classes are "
                        f"{list(class_names)}. Use a split file written for this dataset.")
    if bad_split:
        raise DataError(f"data.split_file={file}: {len(bad_split)} row(s) with a split other than "
                        f"train/val/test/{UNUSED} ({describe_paths(bad_split)}).")
    if dups:
        raise DataError(f"data.split_file={file}: {len(dups)} path(s) listed twice "
                        f"({describe_paths(dups)}).")
    if not records:
        raise DataError(f"data.split_file={file} has no rows.")
    return records
