"""The data record: image identity across roots and dataset names, fingerprints, the teacher leak check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hdkd_data_fixtures import dm_kwargs, make_ham, write_image

from hdkd_lightning.checkpoints.teacher import TeacherSpec, check_teacher_data, teacher_experiment_for
from hdkd_lightning.data.datamodule import HdkdDataModule
from hdkd_lightning.data.provenance import count_seen, image_keys, key_set
from hdkd_lightning.errors import ConfigError


def _dm(root, tmp_path, source="ham10000", **kw):
    dm = HdkdDataModule(source=source, root=str(root), **dm_kwargs(tmp_path, **kw))
    dm.setup()
    return dm


def test_an_image_is_known_by_its_content_and_its_isic_id():
    assert image_keys("/a/HAM10000_images_part_1/ISIC_0024306.jpg", "ab12") == ("b2:ab12", "isic:ISIC_0024306")
    assert image_keys("/b/x/isic_0024306.png", None) == ("isic:ISIC_0024306",)  # re-encoded by a mirror
    assert image_keys("/c/Tr-gl_0001.jpg", "cd34") == ("b2:cd34",)
    assert image_keys("synthetic:train/00001", None) == ("path:synthetic:train/00001",)
    assert count_seen([("b2:x", "isic:ISIC_1"), ("b2:y",), ("isic:ISIC_2",)], {"isic:ISIC_1", "isic:ISIC_2"}) == 2


def test_the_same_images_under_another_root_are_the_same_images(tmp_path):
    ham = make_ham(tmp_path / "ham")
    copy = tmp_path / "copy"
    shutil.copytree(ham, copy)
    a, b = _dm(ham, tmp_path), _dm(copy, tmp_path)
    ra, rb = a.data_record("ham10000"), b.data_record("ham10000")
    assert ra["split"]["fingerprint"] == rb["split"]["fingerprint"]
    assert ra["images"] == rb["images"]
    # an image folder of the same files, renamed (no ISIC id): still the same by content
    folder = tmp_path / "folder"
    for i, r in enumerate(a.split_records("test")):
        dest = folder / "test" / f"c{r.label}" / f"img{i}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(r.path, dest)
    keys = _dm_paths_keys(folder)
    assert count_seen(keys, key_set(ra, "test")) == len(a.split_records("test"))
    assert count_seen(keys, key_set(ra, "train")) == 0


def _dm_paths_keys(folder: Path):
    files = sorted(folder.rglob("*.jpg"))
    from hdkd_lightning.data.io import file_hash

    return [image_keys(str(p), file_hash(p)) for p in files]


def test_seeds_change_the_training_subset_never_validation_and_test(tmp_path):
    ham = make_ham(tmp_path / "ham", per_class=(12, 12, 12, 12, 12, 12, 12))
    r0 = _dm(ham, tmp_path, train_per_class=4, seed=0).data_record("ham10000")
    r1 = _dm(ham, tmp_path, train_per_class=4, seed=1).data_record("ham10000")  # data.split_seed: default 0
    assert r0["split"]["fingerprint"] == r1["split"]["fingerprint"]
    assert r0["subset"]["fingerprint"] != r1["subset"]["fingerprint"]
    assert r0["subset"]["train_per_class"] == 4 and r0["split"]["seed"] == 0
    follow = _dm(ham, tmp_path, train_per_class=4, seed=1, split_seed=None).data_record("ham10000")
    assert follow["split"]["fingerprint"] != r0["split"]["fingerprint"]  # null follows data.seed, as before
    assert "ISIC_" in r0["splits_csv"] and r0["splits_csv"].startswith("path,label,split,group")


def _teacher(record):
    return TeacherSpec(Path("t.ckpt"), "hdkd_teacher", {"num_classes": 7}, {}, None, None, record=record)


def test_the_leak_check_refuses_a_teacher_that_trained_on_evaluation_images(tmp_path, caplog):
    ham = make_ham(tmp_path / "ham", per_class=(12, 12, 12, 12, 12, 12, 12))
    student = _dm(ham, tmp_path)
    eval_keys = {s: list(student.image_keys(student.split_records(s)).values()) for s in ("val", "test")}
    same_split = _dm(ham, tmp_path, train_per_class=5, seed=3).data_record("ham10000")
    assert "passed" in check_teacher_data(_teacher(same_split), eval_keys, "ham10000")["leak_check"]
    other_split = _dm(ham, tmp_path, split_seed=5).data_record("ham10000")
    with pytest.raises(ConfigError, match=r"trained on \d+ of this run's \d+ validation/test images"):
        check_teacher_data(_teacher(other_split), eval_keys, "ham10000")
    # a teacher of ISIC 2018 (whose training set is HAM10000): the same images by their ISIC ids
    isic = tmp_path / "isic" / "ISIC2018_Task3_Training_Input"
    for r in student.split_records("test")[:3]:
        write_image(isic / Path(r.path).name)  # other bytes, same image id
    isic_record = {"data": {"name": "isic2018"}, "split": {"seed": 0},
                   "images": {"train": sorted(k for p in isic.iterdir() for k in image_keys(str(p), "zz" + p.stem))}}
    with pytest.raises(ConfigError, match="3 of this run's"):
        check_teacher_data(_teacher(isic_record), eval_keys, "ham10000")
    with caplog.at_level("WARNING", logger="hdkd_lightning"):
        assert "not possible" in check_teacher_data(_teacher(None), eval_keys, "ham10000")["leak_check"]
    assert "cannot be checked" in caplog.text


def test_the_default_teacher_experiment_follows_the_data():
    assert teacher_experiment_for("ham10000") == "teacher_ham10000"
    assert teacher_experiment_for("isic2018") == "teacher_isic"
    assert teacher_experiment_for("brain_tumor") == "teacher_brain"
    assert teacher_experiment_for("image_folder") == "teacher_image_folder"
    for name in ("ham10000", "isic2018", "brain_tumor"):
        conf = Path(__file__).resolve().parents[2] / "conf" / "experiment" / f"{teacher_experiment_for(name)}.yaml"
        assert conf.is_file(), conf
