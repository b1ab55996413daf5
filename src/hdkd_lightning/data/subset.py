"""Limited-data training sets: a stratified, group-aware, nested subset of the train split.

``data.train_per_class=<n>`` keeps about ``n`` training images per class,
``data.train_fraction=<f>`` keeps about ``f`` of each class's training images (at least one).
Only the train split shrinks: validation and test are carved first and never change with the
subset, so runs at different training-set sizes are scored on the same images.

How images are chosen:

* **Groups stay whole.** A group (a HAM10000 / ISIC lesion, a patient) is taken or left as a
  whole; an ungrouped image is its own group. A group counts for the class most of its images
  have (lowest class index on a tie).
* **A fixed order per seed.** Every group gets a rank from a hash of ``(data.seed, group)``;
  each class takes its groups in rank order until it holds at least its target number of
  images (so a class may overshoot by less than one group). Because the rank of a group does
  not depend on the target, the subsets of one seed are **nested**: the 50-per-class set is
  contained in the 100-per-class set, and a fraction of 0.2 in the fraction of 0.4.
* **Asking for more than a class has** takes all of that class's images and warns, naming the
  class and its count (imbalanced datasets such as HAM10000 have classes smaller than a
  typical per-class budget; stopping the run would make ``train_per_class`` useless there).

The left-out training images are recorded in ``splits.csv`` with split ``unused``, so the file
documents the subset and ``data.split_file`` reproduces it exactly.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from hdkd_lightning.data.base import Record
from hdkd_lightning.errors import DataError

__all__ = ["SubsetSpec", "SubsetResult", "select_training_subset"]


@dataclass(frozen=True)
class SubsetSpec:
    """What subset of the train split to keep (both ``None``: the whole split)."""

    per_class: int | None = None
    fraction: float | None = None

    @classmethod
    def from_config(cls, per_class, fraction) -> SubsetSpec:
        per_class = None if per_class in (None, "", "null") else per_class
        fraction = None if fraction in (None, "", "null") else fraction
        if per_class is not None and fraction is not None:
            raise DataError(f"data.train_per_class={per_class} and data.train_fraction={fraction} are both set; "
                            f"set one of them (the other to null).")
        if per_class is not None:
            if isinstance(per_class, bool) or int(per_class) != float(per_class) or int(per_class) < 1:
                raise DataError(f"data.train_per_class={per_class} must be a whole number >= 1 (or null for "
                                f"the whole train split).")
            per_class = int(per_class)
        if fraction is not None:
            fraction = float(fraction)
            if not 0.0 < fraction <= 1.0:
                raise DataError(f"data.train_fraction={fraction} must be in (0, 1] (or null for the whole "
                                f"train split).")
        return cls(per_class, fraction)

    @property
    def active(self) -> bool:
        return self.per_class is not None or (self.fraction is not None and self.fraction < 1.0)

    def describe(self) -> str:
        if self.per_class is not None:
            return f"data.train_per_class={self.per_class}"
        if self.fraction is not None:
            return f"data.train_fraction={self.fraction:g}"
        return "the whole train split"


@dataclass
class SubsetResult:
    kept: list[Record]
    unused: list[Record]
    short_classes: dict[str, int]  # class -> training images it has, where fewer than asked


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{key}".encode("utf-8", "surrogateescape"), digest_size=16).digest()


def select_training_subset(train: Sequence[Record], class_names: Sequence[str], spec: SubsetSpec,
                           seed: int) -> SubsetResult:
    """Split ``train`` into the kept subset and the unused rest (see the module docstring)."""
    if not spec.active:
        return SubsetResult(list(train), [], {})
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in train:
        groups[r.group if r.group is not None else f"\0{r.path}"].append(r)
    by_class: dict[int, list[str]] = defaultdict(list)
    available = [0] * len(class_names)
    for key, members in groups.items():
        counts = [0] * len(class_names)
        for r in members:
            counts[r.label] += 1
            available[r.label] += 1
        by_class[max(range(len(counts)), key=lambda c: (counts[c], -c))].append(key)
    kept: list[Record] = []
    short: dict[str, int] = {}
    for c, name in enumerate(class_names):
        have = available[c]
        if spec.per_class is not None:
            target = spec.per_class
            if have < target:
                short[name] = have
        else:
            target = max(1, round(spec.fraction * have)) if have else 0
        taken = 0
        for key in sorted(by_class.get(c, []), key=lambda k: _rank(seed, k)):
            if taken >= target:
                break
            kept.extend(groups[key])
            taken += sum(1 for r in groups[key] if r.label == c)
    kept_paths = {r.path for r in kept}
    kept = [r for r in train if r.path in kept_paths]  # keep the split's order
    unused = [r for r in train if r.path not in kept_paths]
    return SubsetResult(kept, unused, short)
