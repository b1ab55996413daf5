"""Bad data: a clear error at setup naming the files, their count and the fix (or skip)."""

from __future__ import annotations

import csv
import warnings

import pytest
from hdkd_data_fixtures import dm_kwargs, make_image_folder, make_isic, write_image

from hdkd_lightning.data.base import SPLITS
from hdkd_lightning.data.datamodule import HdkdDataModule
from hdkd_lightning.errors import DataError


def _dm(source, root, tmp_path, **kw):
    return HdkdDataModule(source=source, root=str(root), **dm_kwargs(tmp_path, **kw))


def _total(dm):
    return sum(len(dm.split_records(s)) for s in SPLITS)


def test_truncated_and_fake_images_error_then_skip(tmp_path):
    root = make_image_folder(tmp_path / "if", train=5, test=2)
    good = root / "train" / "benign" / "benign_0.png"
    data = write_image(root / "train" / "benign" / "big.jpg", size=(64, 64)).read_bytes()
    (root / "train" / "benign" / "big.jpg").write_bytes(data[: len(data) // 2])
    (root / "test" / "malignant" / "fake.png").write_text("this is text")
    with pytest.raises(DataError) as e:
        _dm("image_folder", root, tmp_path).setup()
    msg = str(e.value)
    assert "2 unreadable" in msg and "big.jpg" in msg and "fake.png" in msg
    assert "data.on_bad_image=skip" in msg
    with pytest.warns(UserWarning, match="big.jpg"):
        dm = _dm("image_folder", root, tmp_path, on_bad_image="skip")
        dm.setup()
    assert _total(dm) == 5 * 2 + 2 * 2
    assert str(good.resolve()) in [r.path for r in dm.split_records("train") + dm.split_records("val")]


def test_truncation_missed_by_header_check_is_caught_by_cache_build(tmp_path):
    root = make_image_folder(tmp_path / "if", train=4, test=1)
    bmp = write_image(root / "train" / "benign" / "scan.bmp", size=(64, 64))
    bmp.write_bytes(bmp.read_bytes()[:-2000])
    with pytest.raises(DataError, match="scan.bmp"):
        _dm("image_folder", root, tmp_path).setup()
    with pytest.warns(UserWarning, match="scan.bmp"):
        dm = _dm("image_folder", root, tmp_path, on_bad_image="skip")
        dm.setup()
    assert _total(dm) == 10
    # the failure is remembered: the next run reports it at the check, before any decode
    with pytest.raises(DataError, match="scan.bmp"):
        _dm("image_folder", root, tmp_path, cache={"images": False, "dir": str(tmp_path / "cache")}).setup()


def test_many_bad_files_listed_first_few_and_count(tmp_path):
    root = make_image_folder(tmp_path / "if", train=3, test=1)
    for i in range(8):
        (root / "train" / "benign" / f"bad_{i}.jpg").write_bytes(b"")
    with pytest.raises(DataError) as e:
        _dm("image_folder", root, tmp_path).setup()
    assert "8 unreadable" in str(e.value) and "and 3 more" in str(e.value)



def test_oversized_image_hint_names_the_data_key_and_a_limit_that_admits_it(tmp_path):
    """In a training config the limit is data.max_image_pixels: the fix gives the value that admits the image."""
    import re

    root = make_image_folder(tmp_path / "if", train=3, test=1)  # 20x16 = 320 pixels each
    write_image(root / "train" / "benign" / "large.png", size=(30, 20))  # 600 pixels
    with pytest.raises(DataError) as e:
        _dm("image_folder", root, tmp_path, max_image_pixels=400).setup()
    hint = re.search(r"(\S+)=(\d+) to admit them", str(e.value))
    assert hint and hint.group(1) == "data.max_image_pixels" and "data.on_bad_image=skip" in str(e.value)
    dm = _dm("image_folder", root, tmp_path, max_image_pixels=int(hint.group(2)))
    dm.setup()
    assert _total(dm) == 3 * 2 + 1 * 2 + 1


def test_a_bad_input_file_of_a_command_without_bad_file_keys_names_none():
    """hdkd-export reads its parity images with key_prefix=None: it has no on_bad_image / max_image_pixels key."""
    from hdkd_lightning.data.base import Problem, problems_message

    bad = [Problem("unreadable", "/in/a.png", "cannot decode", pixels=None),
           Problem("unreadable", "/in/b.png", "600 pixels exceeds the limit of 400 pixels", pixels=600)]
    assert "on_bad_image=skip" in problems_message(bad, key_prefix="") and \
        "data." not in problems_message(bad, key_prefix="")
    assert " max_image_pixels=600 " in problems_message(bad, key_prefix="")
    bare = problems_message(bad, key_prefix=None)
    assert "on_bad_image" not in bare and "max_image_pixels" not in bare and "Fix: replace or delete" in bare
    # files already being skipped: the fix does not suggest skipping them, the pixel limit stays
    skipping = problems_message(bad, key_prefix="data.", skipping=True)
    assert "on_bad_image" not in skipping and " data.max_image_pixels=600 " in skipping

def _rewrite_csv(path, edit):
    rows = list(csv.reader(open(path)))
    rows = edit(rows)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def test_ham_missing_image_unlisted_image_unknown_label(ham_root, tmp_path):
    meta = ham_root / "HAM10000_metadata.csv"
    rows = list(csv.reader(open(meta)))
    (ham_root / "HAM10000_images_part_1" / f"{rows[1][1]}.jpg").unlink()  # row without image
    write_image(ham_root / "HAM10000_images_part_1" / "ISIC_9999999.jpg")  # image without row
    _rewrite_csv(meta, lambda r: r[:3] + [[r[3][0], r[3][1], "melanoma?"] + r[3][3:]] + r[4:])
    with pytest.raises(DataError) as e:
        _dm("ham10000", ham_root, tmp_path).setup()
    msg = str(e.value)
    assert f"image_id '{rows[1][1]}' has no image file" in msg and "HAM10000_metadata.csv:2" in msg
    assert "ISIC_9999999.jpg" in msg and "no row in HAM10000_metadata.csv" in msg
    assert "'melanoma?'" in msg and "not one of" in msg
    with pytest.warns(UserWarning):
        dm = _dm("ham10000", ham_root, tmp_path, on_bad_image="skip")
        dm.setup()
    assert _total(dm) == 37 - 2


def test_isic_not_one_hot_is_unknown_label(tmp_path):
    root = make_isic(tmp_path / "isic", official_val=False, official_test=False)
    gt = root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    _rewrite_csv(gt, lambda r: r[:1] + [[r[1][0]] + ["1.0"] * 7] + r[2:])
    with pytest.raises(DataError, match="not one-hot"):
        _dm("isic2018", root, tmp_path).setup()


def test_empty_class_missing_root_wrong_layout(tmp_path, ham_root):
    root = make_image_folder(tmp_path / "if", train=3, test=1)
    (root / "train" / "empty_class").mkdir()
    (root / "train" / "empty_class" / ".DS_Store").write_bytes(b"\0")
    with pytest.raises(DataError, match="empty class 'empty_class'"):
        _dm("image_folder", root, tmp_path).setup()
    with pytest.raises(DataError, match=r"does not exist.*\n.*Expected layout"):
        _dm("brain_tumor", tmp_path / "nowhere", tmp_path).setup()
    with pytest.raises(DataError) as e:
        _dm("brain_tumor", ham_root, tmp_path).setup()
    assert "Training/" in str(e.value) and "HAM10000_metadata.csv" in str(e.value)
    with pytest.raises(DataError, match="no HAM10000_metadata.csv"):
        _dm("ham10000", root, tmp_path).setup()
    with pytest.raises(DataError, match="ISIC2018_Task3_Training_Input"):
        _dm("isic2018", ham_root, tmp_path).setup()


def test_odd_but_valid_files_are_fine(tmp_path):
    root = make_image_folder(tmp_path / "if", train=3, test=1)
    import numpy as np
    from PIL import Image

    write_image(root / "train" / "benign" / "gray scan é.png", mode="L")
    write_image(root / "train" / "benign" / "rgba.png", mode="RGBA")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("CMYK").save(
        root / "train" / "malignant" / "cmyk.jpg")
    write_image(root / "train" / "malignant" / "png_named.jpg", fmt="PNG")
    (root / "train" / "malignant" / "README.txt").write_text("ignored")
    import os

    os.symlink(root / "train", root / "train" / "malignant" / "loop")  # symlink loop
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm = _dm("image_folder", root, tmp_path)
        dm.setup()
    names = {r.path.rsplit("/", 1)[-1] for s in SPLITS for r in dm.split_records(s)}
    assert {"gray scan é.png", "rgba.png", "cmyk.jpg", "png_named.jpg"} <= names
    assert _total(dm) == 3 * 2 + 1 * 2 + 4  # the loop adds nothing
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)
