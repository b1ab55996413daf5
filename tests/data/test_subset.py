"""Limited-data training sets: val/test fixed, stratified, group-aware, nested, recorded, inspectable."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from hdkd_data_fixtures import dm_kwargs, make_ham

from hdkd_lightning.data.base import Record
from hdkd_lightning.data.datamodule import HdkdDataModule
from hdkd_lightning.data.subset import SubsetSpec, select_training_subset
from hdkd_lightning.errors import DataError


def _dm(root, tmp_path, **kw):
    dm = HdkdDataModule(source="ham10000", root=str(root), **dm_kwargs(tmp_path, **kw))
    dm.setup()
    return dm


def _paths(dm, split):
    return [r.path for r in dm.split_records(split)]


@pytest.fixture
def big_ham(tmp_path):
    # 7 classes, 16-30 images each, lesions of 1-3 images
    return make_ham(tmp_path / "ham", per_class=(16, 20, 24, 16, 20, 30, 16))


def test_val_and_test_do_not_change_with_the_subset(big_ham, tmp_path):
    full = _dm(big_ham, tmp_path)
    small = _dm(big_ham, tmp_path, train_per_class=3)
    frac = _dm(big_ham, tmp_path, train_fraction=0.5)
    for split in ("val", "test"):
        assert _paths(full, split) == _paths(small, split) == _paths(frac, split)
    assert len(_paths(small, "train")) < len(_paths(frac, "train")) < len(_paths(full, "train"))
    assert set(_paths(small, "train")) <= set(_paths(full, "train"))


def test_per_class_counts_groups_whole_and_nested(big_ham, tmp_path):
    full = _dm(big_ham, tmp_path)
    train = full.split_records("train")
    lesion_size = Counter(r.group for r in train)
    subsets = {}
    for n in (2, 4, 6):
        dm = _dm(big_ham, tmp_path, train_per_class=n)
        kept = dm.split_records("train")
        counts = Counter(r.label for r in kept)
        for c in range(7):
            # at least n (or all the class has), overshooting by less than one lesion (max 3 images)
            have = sum(1 for r in train if r.label == c)
            assert min(n, have) <= counts[c] < min(n, have) + 3
        # a lesion is taken whole or not at all
        kept_groups = Counter(r.group for r in kept)
        assert all(kept_groups[g] == lesion_size[g] for g in kept_groups)
        subsets[n] = {r.path for r in kept}
    assert subsets[2] <= subsets[4] <= subsets[6]  # nested for one seed
    frac = [{r.path for r in _dm(big_ham, tmp_path, train_fraction=f).split_records("train")} for f in (0.25, 0.5)]
    assert frac[0] <= frac[1]
    other_seed = {r.path for r in _dm(big_ham, tmp_path, train_per_class=4, seed=1, split_seed=0).split_records("train")}
    assert other_seed != subsets[4]  # data.seed draws another subset...
    assert _paths(_dm(big_ham, tmp_path, train_per_class=4, seed=1, split_seed=0), "test") == _paths(full, "test")


def test_subset_is_recorded_in_splits_csv_and_reused(big_ham, tmp_path):
    dm = _dm(big_ham, tmp_path, train_per_class=3)
    out = dm.write_splits(tmp_path / "run")
    rows = list(csv.DictReader(open(out)))
    by_split = Counter(r["split"] for r in rows)
    assert by_split["train"] == len(dm.split_records("train")) and by_split["unused"] > 0
    assert len(rows) == len({r["path"] for r in rows}) == 142  # every image of the dataset, once
    assert {r["path"] for r in rows if r["split"] == "unused"}.isdisjoint(
        {r["path"] for r in rows if r["split"] != "unused"})
    again = _dm(big_ham, tmp_path, split_file=str(out))
    for split in ("train", "val", "test"):
        assert _paths(again, split) == _paths(dm, split)


def test_more_than_a_class_has_takes_all_with_a_warning(tmp_path):
    root = make_ham(tmp_path / "ham", per_class=(3, 12, 12, 12, 12, 12, 12))
    with pytest.warns(UserWarning, match=r"data.train_per_class=8: .*akiec \(\d+\)"):
        dm = _dm(root, tmp_path, train_per_class=8)
    full = _dm(root, tmp_path)
    akiec = [r for r in full.split_records("train") if r.label == 0]
    assert [r for r in dm.split_records("train") if r.label == 0] == akiec


@pytest.mark.parametrize("kw, match", [
    (dict(train_per_class=5, train_fraction=0.5), "set one of them"),
    (dict(train_per_class=0), r"train_per_class=0 must be a whole number >= 1"),
    (dict(train_per_class=2.5), r"train_per_class=2.5 must be a whole number"),
    (dict(train_fraction=0.0), r"train_fraction=0.0 must be in \(0, 1\]"),
    (dict(train_fraction=1.5), r"train_fraction=1.5 must be in \(0, 1\]"),
])
def test_bad_subset_settings_are_refused_by_key(tmp_path, kw, match):
    with pytest.raises(DataError, match=match):
        HdkdDataModule(source="synthetic", **dm_kwargs(tmp_path, **kw))


def test_mixed_class_group_counts_for_its_majority_class():
    train = [Record("a1", 0, "A"), Record("a2", 0, "A"), Record("a3", 1, "A"), Record("b", 1, None)]
    picked = select_training_subset(train, ["x", "y"], SubsetSpec(per_class=1), seed=0)
    assert {r.path for r in picked.kept} == {"a1", "a2", "a3", "b"}  # lesion A whole (class x), b for y
    assert picked.unused == []


def test_inspect_shows_the_subset(big_ham, tmp_path):
    from hdkd_lightning.cli.data import main

    report_file = tmp_path / "report.json"
    code = main(["inspect", "data=ham10000", f"data.root={big_ham}", "data.train_per_class=2",
                 f"data.cache.dir={tmp_path / 'c'}", "--quick", "-q", "--json", str(report_file)])
    assert code == 0
    report = json.loads(report_file.read_text())
    assert report["subset"] == "data.train_per_class=2"
    assert report["total_unused"] > 0
    assert all(2 <= n < 5 for n in report["splits"]["train"].values())
    assert sum(report["unused"].values()) == report["total_unused"]
