"""Byte-identical duplicate detection and removal.

Files are grouped by content hash (BLAKE2b of the bytes, see ``checks.FileChecker.hashes``).
In every set of identical files one copy is kept: the copy in the highest-priority split
(**test > val > train > not yet assigned**, so a test image never loses its place to a
training copy), and among those the first path in sorted order.

Counts (all computed before removal):

* ``across_splits``: copies that would be removed because an identical file sits in a
  *different* split (for Brain Tumor: the Training copies of Testing images).
* ``within_splits``: the remaining redundant copies (identical files within one split).
* ``kept_side_across``: files of the winning split that have a copy in another split (Brain
  Tumor: the Testing images that also exist in Training).
* ``removed`` = ``across_splits + within_splits`` when ``data.dedup=true``, else 0.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence

from hdkd_lightning.data.base import Record

_PRIORITY = {"test": 0, "val": 1, "train": 2, None: 3}


@dataclasses.dataclass
class DuplicateReport:
    sets: list[list[Record]]  # each set: kept copy first
    across_splits: int = 0
    within_splits: int = 0
    sets_across_splits: int = 0
    kept_side_across: int = 0  # copies in the winning split of sets spanning several splits

    @property
    def redundant(self) -> list[Record]:
        return [r for s in self.sets for r in s[1:]]


def find_duplicates(records: Sequence[Record], hashes: Mapping[str, str | None]) -> DuplicateReport:
    by_hash: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        h = hashes.get(r.path)
        if h is not None:
            by_hash[h].append(r)
    report = DuplicateReport(sets=[])
    for h in sorted(by_hash):
        items = by_hash[h]
        if len(items) < 2:
            continue
        items = sorted(items, key=lambda r: (_PRIORITY.get(r.split, 3), r.path))
        report.sets.append(items)
        keep_split = items[0].split
        splits = {r.split for r in items}
        if len(splits) > 1:
            report.sets_across_splits += 1
            report.kept_side_across += sum(1 for r in items if r.split == keep_split)
        for r in items[1:]:
            if r.split != keep_split:
                report.across_splits += 1
            else:
                report.within_splits += 1
    return report


def remove_duplicates(records: Sequence[Record], report: DuplicateReport) -> list[Record]:
    drop = {r.path for r in report.redundant}
    return [r for r in records if r.path not in drop]
