"""Tiny datasets in the real layouts (real file names and CSV columns), built per test."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
DATASETS = SHARED / "datasets"
HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
ISIC_COLUMNS = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]

_counter = [0]


def write_image(path: Path, size=(20, 16), mode="RGB", fmt=None, seed=None) -> Path:
    """A small random (hence unique) image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _counter[0] += 1
    rng = np.random.default_rng(seed if seed is not None else _counter[0])
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    img.save(path, format=fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None))
    return path


def dm_kwargs(tmp_path: Path, **kw) -> dict:
    base = dict(num_workers=0, image_size=32, batch_size=4, cache={"dir": str(tmp_path / "cache")})
    base.update(kw)
    return base


def make_ham(root: Path, per_class=(6, 5, 5, 4, 5, 8, 4), lower_case_part2=True) -> Path:
    """HAM10000 layout: metadata CSV + two part folders; lesions of 1-3 images."""
    rows = []
    n = 24306
    lesion = 0
    for c, count in zip(HAM_CLASSES, per_class):
        made = 0
        while made < count:
            k = min(1 + lesion % 3, count - made)
            for _ in range(k):
                rows.append((f"HAM_{lesion:07d}", f"ISIC_{n:07d}", c))
                n += 1
            made += k
            lesion += 1
    part1 = root / "HAM10000_images_part_1"
    part2 = root / ("ham10000_images_part_2" if lower_case_part2 else "HAM10000_images_part_2")
    for i, (_, image_id, _) in enumerate(rows):
        write_image((part1 if i % 2 == 0 else part2) / f"{image_id}.jpg")
    with open(root / "HAM10000_metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        for lesion_id, image_id, dx in rows:
            w.writerow([lesion_id, image_id, dx, "histo", "50.0", "male", "back"])
    return root


def make_isic(root: Path, train_per_class=4, val_per_class=1, test_per_class=2,
              official_val=True, official_test=True, groupings=True) -> Path:
    n = [24306]

    def split(word: str, per_class: int, with_lesions: bool):
        folder = root / f"ISIC2018_Task3_{word}_Input"
        gt_dir = root / f"ISIC2018_Task3_{word}_GroundTruth"
        gt_dir.mkdir(parents=True, exist_ok=True)
        (folder).mkdir(parents=True, exist_ok=True)
        (folder / "LICENSE.txt").write_text("CC BY-NC")
        rows, lesions = [], []
        for col in ISIC_COLUMNS:
            for j in range(per_class):
                image = f"ISIC_{n[0]:07d}"
                n[0] += 1
                write_image(folder / f"{image}.jpg")
                rows.append([image] + [("1.0" if c == col else "0.0") for c in ISIC_COLUMNS])
                lesions.append([image, f"HAM_{col}_{j // 2}", "histopathology"])
        with open(gt_dir / f"ISIC2018_Task3_{word}_GroundTruth.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", *ISIC_COLUMNS])
            w.writerows(rows)
        if with_lesions:
            with open(root / "ISIC2018_Task3_Training_LesionGroupings.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["image", "lesion_id", "diagnosis_confirm_type"])
                w.writerows(lesions)

    split("Training", train_per_class, groupings)
    if official_val:
        split("Validation", val_per_class, False)
    if official_test:
        split("Test", test_per_class, False)
    return root


BRAIN_CLASSES = {"glioma": "gl", "meningioma": "me", "notumor": "no", "pituitary": "pi"}


def make_brain(root: Path, train=(6, 6, 7, 6), test=(2, 2, 3, 2)) -> Path:
    for (cls, code), ntr, nte in zip(BRAIN_CLASSES.items(), train, test):
        for i in range(ntr):
            write_image(root / "Training" / cls / f"Tr-{code}_{i:04d}.jpg",
                        mode="L" if i % 2 else "RGB")
        for i in range(nte):
            write_image(root / "Testing" / cls / f"Te-{code}_{i:04d}.jpg")
    return root


def make_image_folder(root: Path, classes=("benign", "malignant"), train=8, test=3, val=0) -> Path:
    for c in classes:
        for i in range(train):
            write_image(root / "train" / c / f"{c}_{i}.png")
        for i in range(test):
            write_image(root / "test" / c / f"{c}_t{i}.png")
        for i in range(val):
            write_image(root / "val" / c / f"{c}_v{i}.png")
    return root


@pytest.fixture
def ham_root(tmp_path):
    return make_ham(tmp_path / "ham")


@pytest.fixture
def brain_root(tmp_path):
    return make_brain(tmp_path / "brain")


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HDKD_CACHE_DIR", str(tmp_path / "envcache"))
    return tmp_path / "envcache"


os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
