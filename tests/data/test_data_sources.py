"""Each source on a tiny dataset in its real layout, through the DataModule."""

from __future__ import annotations

import pytest
from hdkd_data_fixtures import HAM_CLASSES, dm_kwargs, make_image_folder, make_isic, write_image

from hdkd_lightning.data.base import SPLITS
from hdkd_lightning.data.datamodule import HdkdDataModule


def _by_split(dm):
    return {s: dm.split_records(s) for s in SPLITS}


def _groups_disjoint(splits):
    seen = {}
    for s, records in splits.items():
        for r in records:
            if r.group is not None:
                assert seen.setdefault(r.group, s) == s, f"group {r.group} in {seen[r.group]} and {s}"


def test_ham_layout_classes_groups_and_ratios(ham_root, tmp_path):
    dm = HdkdDataModule(source="ham10000", root=str(ham_root), **dm_kwargs(tmp_path))
    assert dm.class_names == HAM_CLASSES  # before setup: no image opened
    dm.setup()
    splits = _by_split(dm)
    assert sum(len(v) for v in splits.values()) == 37
    assert all(len(v) > 0 for v in splits.values())
    _groups_disjoint(splits)
    assert {r.label for r in splits["train"]} == set(range(7))  # every class trains
    assert 0.55 <= len(splits["train"]) / 37 <= 0.85
    # the lower-case part folder was found, lesions are the groups
    assert any("ham10000_images_part_2" in r.path for r in splits["train"] + splits["test"])
    assert all(r.group.startswith("HAM_") for v in splits.values() for r in v)
    # a different split seed gives a different but still grouped split
    dm2 = HdkdDataModule(source="ham10000", root=str(ham_root), split_seed=1, **dm_kwargs(tmp_path))
    dm2.setup()
    _groups_disjoint(_by_split(dm2))
    assert [r.path for r in dm2.split_records("test")] != [r.path for r in splits["test"]]


def test_ham_flat_folder_and_duplicate_copies(tmp_path):
    from hdkd_data_fixtures import make_ham

    root = make_ham(tmp_path / "flat")
    # move everything into one flat folder, keep a second copy of one image elsewhere
    flat = root / "images"
    flat.mkdir()
    for p in sorted(root.glob("*/ISIC_*.jpg")):
        p.rename(flat / p.name)
    dm = HdkdDataModule(source="ham10000", root=str(root), **dm_kwargs(tmp_path))
    dm.setup()
    assert sum(len(dm.split_records(s)) for s in SPLITS) == 37


def test_isic_official_splits_and_class_order(tmp_path):
    root = make_isic(tmp_path / "isic")
    dm = HdkdDataModule(source="isic2018", root=str(root), **dm_kwargs(tmp_path))
    assert dm.class_names == HAM_CLASSES
    dm.setup()
    splits = _by_split(dm)
    assert [len(splits[s]) for s in SPLITS] == [28, 7, 14]
    assert all("Validation_Input" in r.path for r in splits["val"])
    assert all("Test_Input" in r.path for r in splits["test"])
    # labels follow the one-hot columns mapped onto the lower-case HAM order
    mel = HAM_CLASSES.index("mel")
    assert sum(r.label == mel for r in splits["train"]) == 4


def test_isic_carves_missing_official_sets_grouped(tmp_path):
    root = make_isic(tmp_path / "isic", train_per_class=8, official_val=False, official_test=False)
    dm = HdkdDataModule(source="isic2018", root=str(root), **dm_kwargs(tmp_path))
    dm.setup()
    splits = _by_split(dm)
    assert sum(len(v) for v in splits.values()) == 56
    assert all(len(v) > 0 for v in splits.values())
    _groups_disjoint(splits)
    assert all("Training_Input" in r.path for v in splits.values() for r in v)


def test_brain_tumor_val_carved_from_training(brain_root, tmp_path):
    dm = HdkdDataModule(source="brain_tumor", root=str(brain_root), val_fraction=0.3,
                        **dm_kwargs(tmp_path))
    assert dm.class_names == ["glioma", "meningioma", "notumor", "pituitary"]
    dm.setup()
    splits = _by_split(dm)
    assert len(splits["test"]) == 9 and all("/Testing/" in r.path for r in splits["test"])
    assert len(splits["train"]) + len(splits["val"]) == 25
    assert all("/Training/" in r.path for r in splits["train"] + splits["val"])
    for label in range(4):  # stratified: every class in val
        assert any(r.label == label for r in splits["val"])


@pytest.mark.parametrize("with_val", [False, True])
def test_image_folder(tmp_path, with_val):
    root = make_image_folder(tmp_path / "if", val=2 if with_val else 0)
    write_image(root / "train" / "benign" / ".ipynb_checkpoints" / "hidden.png")
    (root / "train" / ".DS_Store").write_bytes(b"\0")
    dm = HdkdDataModule(source="image_folder", root=str(root), **dm_kwargs(tmp_path))
    dm.setup()
    splits = _by_split(dm)
    assert dm.class_names == ["benign", "malignant"]
    assert len(splits["test"]) == 6
    assert len(splits["val"]) == (4 if with_val else 2)
    assert len(splits["train"]) == (16 if with_val else 14)
    assert not any("checkpoint" in r.path for v in splits.values() for r in v)


def test_synthetic_is_deterministic_and_configurable(tmp_path):
    kw = dict(dm_kwargs(tmp_path), image_size=24, num_classes=3, train_samples=12,
              val_samples=6, test_samples=6)
    a = HdkdDataModule(source="synthetic", **kw)
    b = HdkdDataModule(source="synthetic", **kw)
    a.setup(), b.setup()
    assert a.class_names == ["class_0", "class_1", "class_2"]
    assert [len(a.split_records(s)) for s in SPLITS] == [12, 6, 6]
    xa = next(iter(a.test_dataloader()))["image"]
    xb = next(iter(b.test_dataloader()))["image"]
    assert xa.shape == (4, 3, 24, 24) and (xa == xb).all()
    c = HdkdDataModule(source="synthetic", **dict(kw, seed=5))
    c.setup()
    assert not (next(iter(c.test_dataloader()))["image"] == xa).all()
