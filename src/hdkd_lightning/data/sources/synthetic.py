"""Synthetic images: a small, deterministic, real learning problem that needs no files.

Each class owns a *motif*: a random binary pattern on a ``motif_cells`` x ``motif_cells`` grid
(about half the cells on, different from the other classes' motifs under every rotation and
flip). An image is a smooth random colour background with pixel noise, ``2..3`` copies of its
class motif and ``clutter`` copies of *distractor* motifs (shared by all classes), each at a
random position, in a random colour, rotated by a random multiple of 90 degrees and maybe
mirrored. The class evidence is therefore local shape, anywhere in the image, among clutter:
translation-equivariant convolutions find it from a few hundred images, while a vision
transformer trained from scratch on the same few images struggles -- the small-data regime
HDKD targets. Colour and brightness statistics carry no class information.

Everything is a pure function of ``(seed, split, index)``: the same config gives the same
images in every process and run. Records have paths ``synthetic:<split>/<index>``.
``class_imbalance`` > 1 makes class k about ``class_imbalance ** (k / (K - 1))`` times rarer
than class 0 (to exercise the weighted sampler / class weights).
"""

from __future__ import annotations

import numpy as np

from hdkd_lightning.data.base import SPLITS, Index, Record
from hdkd_lightning.errors import DataError

_SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}


def _symmetries(m: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(m, k)
        out += [r, r[:, ::-1]]
    return out


def _motif_bank(rng: np.random.Generator, count: int, cells: int, avoid: list[np.ndarray]) -> list:
    bank: list[np.ndarray] = []
    min_diff = max(4, cells * cells // 3)  # differ in a third of the cells under any symmetry
    tries = 0
    while len(bank) < count:
        tries += 1
        m = rng.random((cells, cells)) < 0.5
        if m.sum() < cells * cells * 0.35 or m.sum() > cells * cells * 0.65:
            continue
        if not (m.any(0).all() and m.any(1).all()):  # spans the whole grid
            continue
        ok = all(min(int((s != o).sum()) for s in _symmetries(m)) >= min_diff
                 for o in bank + avoid)
        if ok or tries > 20000:
            bank.append(m)
    return bank


class SyntheticSource:
    name = "synthetic"
    root = None
    expected_layout = "  (no files: images are generated from data.seed)"

    def __init__(self, num_classes: int = 4, train_samples: int = 480, val_samples: int = 160,
                 test_samples: int = 160, image_size: int = 64, seed: int = 0,
                 motif_cells: int = 5, clutter: int = 4, noise: float = 12.0,
                 class_imbalance: float = 1.0):
        if int(num_classes) < 2:
            raise DataError(f"data.num_classes={num_classes} must be at least 2.")
        for key, n in (("train_samples", train_samples), ("val_samples", val_samples),
                       ("test_samples", test_samples)):
            if int(n) < 0:
                raise DataError(f"data.{key}={n} must be >= 0.")
        if int(train_samples) < int(num_classes):
            raise DataError(f"data.train_samples={train_samples} must be at least "
                            f"data.num_classes={num_classes} (one image per class).")
        if int(image_size) < 16:
            raise DataError(f"data.image_size={image_size} is too small for synthetic (>= 16).")
        if float(class_imbalance) < 1.0:
            raise DataError(f"data.class_imbalance={class_imbalance} must be >= 1.")
        self.num_classes = int(num_classes)
        self.samples = {"train": int(train_samples), "val": int(val_samples),
                        "test": int(test_samples)}
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.motif_cells = int(motif_cells)
        self.clutter = int(clutter)
        self.noise = float(noise)
        self.class_imbalance = float(class_imbalance)
        self._motifs: tuple[list, list] | None = None

    def class_names(self) -> list[str]:
        return [f"class_{k}" for k in range(self.num_classes)]

    def _labels(self, split: str) -> np.ndarray:
        n = self.samples[split]
        k = self.num_classes
        w = self.class_imbalance ** (-np.arange(k) / max(k - 1, 1))
        counts = np.floor(w / w.sum() * n).astype(int)
        counts = np.maximum(counts, 1 if n >= k else 0)
        i = 0
        while counts.sum() < n:  # hand out the remainder, largest classes first
            counts[i % k] += 1
            i += 1
        while counts.sum() > n:
            counts[int(np.argmax(counts))] -= 1
        labels = np.repeat(np.arange(k), counts)
        np.random.default_rng([self.seed, 7, _SPLIT_ID[split]]).shuffle(labels)
        return labels

    def index(self):
        records = []
        for split in SPLITS:
            for i, y in enumerate(self._labels(split)):
                records.append(Record(f"synthetic:{split}/{i:05d}", int(y), None, split))
        return Index(records, self.class_names(), [], [
            f"synthetic: {self.num_classes} classes, {self.image_size}px, seed {self.seed}"])

    def motifs(self) -> tuple[list, list]:
        if self._motifs is None:
            rng = np.random.default_rng([self.seed, 11])
            classes = _motif_bank(rng, self.num_classes, self.motif_cells, [])
            distractors = _motif_bank(rng, max(4, self.num_classes), self.motif_cells, classes)
            self._motifs = (classes, distractors)
        return self._motifs

    def load(self, record: Record, max_pixels: int | None = None) -> np.ndarray:
        split, _, i = record.path.removeprefix("synthetic:").partition("/")
        if split not in _SPLIT_ID or not i.isdigit():
            raise DataError(f"{record.path!r} is not a synthetic record path "
                            f"(synthetic:<split>/<index>).")
        return self.generate(split, int(i), record.label)

    def generate(self, split: str, index: int, label: int) -> np.ndarray:
        import cv2

        s = self.image_size
        rng = np.random.default_rng([self.seed, _SPLIT_ID[split], index])
        classes, distractors = self.motifs()
        # smooth colour background
        low = rng.uniform(30, 120, size=(4, 4, 3)).astype(np.float32)
        img = cv2.resize(low, (s, s), interpolation=cv2.INTER_CUBIC)
        cell = max(2, round(s / 26))
        size = cell * self.motif_cells
        stamps = [classes[label]] * int(rng.integers(2, 4))
        stamps += [distractors[j] for j in rng.integers(0, len(distractors), self.clutter)]
        for j in rng.permutation(len(stamps)):
            m = np.rot90(stamps[j], int(rng.integers(0, 4)))
            if rng.random() < 0.5:
                m = m[:, ::-1]
            mask = np.kron(m, np.ones((cell, cell), dtype=bool))
            y, x = rng.integers(0, s - size + 1, size=2)
            colour = rng.uniform(130, 255, size=3).astype(np.float32)
            patch = img[y:y + size, x:x + size]
            patch[mask] = 0.15 * patch[mask] + 0.85 * colour
        img += rng.normal(0, self.noise, size=img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)
