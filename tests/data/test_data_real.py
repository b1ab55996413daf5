"""The shared real datasets (../shared/datasets), when present: counts match the files on disk."""

from __future__ import annotations

import csv

import pytest
from hdkd_data_fixtures import DATASETS

from hdkd_lightning.data.base import SPLITS
from hdkd_lightning.data.datamodule import HdkdDataModule
from hdkd_lightning.data.inspect import build_report

pytestmark = [
    pytest.mark.shared,
    pytest.mark.slow,
    pytest.mark.skipif(not DATASETS.is_dir(), reason=f"{DATASETS} is absent (the real datasets "
                                                     f"exist only on developer machines and CI)"),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("real-cache"))


def test_ham10000(cache_dir):
    root = DATASETS / "ham10000"
    dm = HdkdDataModule(source="ham10000", root=str(root), num_workers=0,
                        cache={"images": False, "dir": cache_dir})
    report = build_report(dm, full_check=False)
    rows = list(csv.DictReader(open(root / "HAM10000_metadata.csv")))
    assert report["total"] == len(rows) == 10015
    assert report["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    per_class = {c: sum(report["splits"][s][c] for s in SPLITS) for c in report["classes"]}
    assert per_class == {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113,
                         "nv": 6705, "vasc": 142}
    assert sum(report["groups"].values()) == len({r["lesion_id"] for r in rows}) == 7470
    assert report["groups_across_splits"] == 0
    assert report["bad_files"] == [] and report["missing_images"] == []
    assert report["unlisted_images"] == []
    assert report["duplicates_within_splits"] == 2 and report["duplicates_across_splits"] == 0
    for s, share in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert abs(report["totals"][s] / 10015 - share) < 0.01


def test_brain_tumor_counts_and_dedup(cache_dir):
    root = DATASETS / "brain_tumor_mri"
    on_disk = {(split, c.name): sum(1 for f in c.iterdir() if f.is_file())
               for split in ("Training", "Testing") for c in (root / split).iterdir()}
    # HDKD brief: Training 1321/1339/1591/1457; Testing 300/307/405/300 -- but the shared copy
    # has 306 meningioma test images (7,019 files in total, as its README says)
    assert [on_disk["Training", c] for c in ("glioma", "meningioma", "notumor", "pituitary")] == \
        [1321, 1339, 1591, 1457]
    assert sum(on_disk.values()) == 7019
    kw = dict(source="brain_tumor", root=str(root), num_workers=0,
              cache={"images": False, "dir": cache_dir})
    plain = build_report(HdkdDataModule(**kw), full_check=False)
    for c in plain["classes"]:
        assert plain["splits"]["train"][c] + plain["splits"]["val"][c] == on_disk["Training", c]
        assert plain["splits"]["test"][c] == on_disk["Testing", c]
    assert plain["duplicates_removed"] == 0 and plain["duplicates_across_splits"] > 100
    dedup = build_report(HdkdDataModule(dedup=True, **kw), full_check=False)
    assert dedup["duplicates_across_splits"] >= 200  # Training copies of Testing images
    assert dedup["duplicates_across_splits_kept"] >= 200  # ~216 Testing images have a copy
    assert dedup["duplicates_removed"] == dedup["duplicates_across_splits"] + dedup["duplicates_within_splits"]
    assert dedup["total"] == 7019 - dedup["duplicates_removed"]
    # after dedup no file content is in two places
    again = HdkdDataModule(dedup=True, **kw)
    paths = [r.path for s in SPLITS for r in again.split_records(s)]
    hashes = again.file_checker().hashes(paths)
    assert len(set(hashes.values())) == len(paths)
