"""Per-image attributes for subgroup results: from HAM10000's CSV, ISIC 2018's groupings, or data.metadata_csv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hdkd_data_fixtures import dm_kwargs, make_ham, make_image_folder, make_isic

from hdkd_lightning.data.datamodule import HdkdDataModule
from hdkd_lightning.data.metadata import age_band
from hdkd_lightning.errors import DataError


def _write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _dm(root, tmp_path, source, **kw):
    kwargs = dm_kwargs(tmp_path, cache={"images": False, "dir": str(tmp_path / "c")}, **kw)
    dm = HdkdDataModule(source=source, root=str(root), **kwargs)
    dm.prepare_data()
    return dm


def test_age_bands():
    assert [age_band(a) for a in ("5.0", "29.9", "30", "44", "45.0", "74.5", "75", "85.0")] == \
        ["<30", "<30", "30-44", "30-44", "45-59", "60-74", "75+", "75+"]
    assert age_band("") == age_band("n/a") == age_band("-3") == "unknown"


def test_ham10000_images_carry_sex_age_band_site_and_diagnosis_type(tmp_path):
    ham = make_ham(tmp_path / "ham")
    csv_file = ham / "HAM10000_metadata.csv"
    rows = list(csv.reader(open(csv_file)))
    rows[1][4:7] = ["", "unknown", "lower extremity"]  # age missing, sex unknown, a site with a space
    _write_csv(csv_file, rows[0], rows[1:])
    dm = _dm(ham, tmp_path, "ham10000")
    meta = dm.image_metadata
    assert len(meta) == sum(len(dm.split_records(s)) for s in ("train", "val", "test"))
    first = next(p for p in meta if Path(p).stem == rows[1][1])
    assert meta[first] == {"sex": "unknown", "age": "unknown", "site": "lower extremity", "dx_type": "histo"}
    other = next(p for p in meta if Path(p).stem == rows[2][1])
    assert meta[other] == {"sex": "male", "age": "45-59", "site": "back", "dx_type": "histo"}
    assert dm.metadata_source == str(csv_file.resolve())


def test_isic2018_training_images_carry_the_diagnosis_confirmation_type(tmp_path):
    dm = _dm(make_isic(tmp_path / "isic"), tmp_path, "isic2018")
    meta = dm.image_metadata
    train_like = [p for p in meta if "Training_Input" in p]
    assert train_like and all(meta[p] == {"dx_type": "histopathology"} for p in train_like)
    assert not any("Test_Input" in p for p in meta)  # the official test set has no groupings


def test_an_image_folder_gets_its_attributes_from_data_metadata_csv(tmp_path):
    root = make_image_folder(tmp_path / "folder", train=8, test=3)
    files = sorted(p for p in root.rglob("*.png"))
    rows = [[p.name if i % 3 else p.stem, ("F" if i % 2 else "M"), str(20 + 5 * i), f"patient{i}",
             ("scanner A" if i < 10 else "")] for i, p in enumerate(files)]
    rows[0][0] = files[0].relative_to(root).as_posix()  # a path relative to data.root also names the image
    rows.append(["not_in_the_data.png", "F", "40", "x", "scanner B"])
    many_ids = tmp_path / "meta.csv"
    _write_csv(many_ids, ["file", "sex", "age", "patient", "scanner"], rows)
    # a column with more distinct values than a subgroup can use (one per image) is left out
    import hdkd_lightning.data.metadata as metadata

    old, metadata.MAX_VALUES = metadata.MAX_VALUES, 10
    try:
        dm = _dm(root, tmp_path, "image_folder", metadata_csv=str(many_ids))
    finally:
        metadata.MAX_VALUES = old
    meta = dm.image_metadata
    assert len(meta) == len(files)
    assert meta[str(files[0])] == {"sex": "M", "age": "<30", "scanner": "scanner A"}
    assert meta[str(files[-1])]["scanner"] == "unknown" and meta[str(files[-1])]["age"] == "75+"
    notes = " ".join(dm.prepared.notes)
    assert "['patient']" in notes and "1 row(s) name no image" in notes
    assert dm.metadata_source == str(many_ids)


@pytest.mark.parametrize("content, expected", [
    (None, "no such file"),
    ("name,sex\na.png,F\n", "no key column"),
    ("file,sex\nnothing.png,F\n", "none of its 1 rows names an image"),
    ("file,sex\nbenign_0.png,F\nbenign_0,M\n", "an image an earlier row already names"),
])
def test_a_bad_metadata_csv_is_refused_naming_the_key(tmp_path, content, expected):
    root = make_image_folder(tmp_path / "folder", train=4, test=2)
    path = tmp_path / "meta.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as info:
        _dm(root, tmp_path, "image_folder", metadata_csv=str(path))
    assert "data.metadata_csv=" in str(info.value) and expected in str(info.value)


def test_ham10000s_own_csv_given_to_isic2018_gives_hams_attributes_not_the_label(tmp_path):
    ham = make_ham(tmp_path / "ham")
    isic = tmp_path / "isic"
    make_isic(isic)
    # name the ISIC training images as HAM's, so that HAM's CSV describes them
    ham_ids = [r["image_id"] for r in csv.DictReader(open(ham / "HAM10000_metadata.csv"))]
    dm = _dm(isic, tmp_path, "isic2018", metadata_csv=str(ham / "HAM10000_metadata.csv"))
    meta = dm.image_metadata
    described = [p for p in meta if Path(p).stem in ham_ids]
    assert described and all(set(meta[p]) == {"sex", "age", "site", "dx_type"} for p in described)
    assert all(meta[p]["dx_type"] == "histo" for p in described)  # HAM's value replaces the groupings'
