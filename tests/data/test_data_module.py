"""The DataModule contract: batches, splits files, dedup, cache, sampler, weights, SMOTE."""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hdkd_data_fixtures import dm_kwargs, make_image_folder, write_image

from hdkd_lightning.data.base import SPLITS
from hdkd_lightning.data.datamodule import HdkdDataModule
from hdkd_lightning.errors import DataError


def _synthetic(tmp_path, **kw):
    base = dict(dm_kwargs(tmp_path), image_size=24, num_classes=3, train_samples=30,
                val_samples=9, test_samples=9)
    base.update(kw)
    return HdkdDataModule(source="synthetic", **base)


def test_batches_and_idempotent_setup(tmp_path):
    dm = _synthetic(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    state = dm.prepared
    dm.setup("test")
    assert dm.prepared is state  # second setup reuses everything
    assert dm.num_classes == 3 and dm.in_chans == 3 and dm.image_size == 24
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "path"}
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (4, 3, 24, 24)
    assert batch["label"].dtype == torch.long and isinstance(batch["path"], list)
    assert batch["image"].mean().abs() < 3  # normalised
    test_paths = [p for b in dm.test_dataloader() for p in b["path"]]
    assert test_paths == [r.path for r in dm.split_records("test")]  # record order, no shuffle
    pred = [p for b in dm.predict_dataloader() for p in b["path"]]
    assert pred == test_paths


def test_class_weights_and_weighted_sampler(tmp_path):
    dm = _synthetic(tmp_path, class_imbalance=4.0, train_samples=60, sampler="weighted")
    dm.setup()
    counts = dm.class_counts("train")
    assert counts[0] > counts[2]
    w = dm.class_weights()
    assert w.dtype == torch.float32 and w.shape == (3,)
    assert torch.isclose(w.mean(), torch.tensor(1.0)) and w[2] > w[0]
    assert torch.allclose(w * torch.tensor(counts, dtype=torch.float32),
                          (w * torch.tensor(counts, dtype=torch.float32))[0])
    loader = dm.train_dataloader()
    labels = Counter(int(y) for _ in range(10) for b in loader for y in b["label"])
    share = np.array([labels[k] for k in range(3)]) / sum(labels.values())
    assert np.all(np.abs(share - 1 / 3) < 0.08), share  # balanced draws

    from hdkd_lightning.data.samplers import DistributedWeightedSampler

    weights = torch.rand(101)
    ranks = [DistributedWeightedSampler(weights, num_replicas=3, rank=r, seed=7) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    parts = [list(s) for s in ranks]
    assert all(len(p) == 34 for p in parts)
    single = DistributedWeightedSampler(weights, num_replicas=1, rank=0, seed=7, num_samples=102)
    single.set_epoch(2)
    merged = [parts[i % 3][i // 3] for i in range(102)]
    assert merged == list(single)  # each rank takes its share of the same weighted draw
    ranks[0].set_epoch(3)
    assert list(ranks[0]) != parts[0]


def test_write_splits_and_reuse_exactly(ham_root, tmp_path):
    dm = HdkdDataModule(source="ham10000", root=str(ham_root), **dm_kwargs(tmp_path))
    dm.setup()
    out = dm.write_splits(tmp_path / "run")
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["path", "label", "split", "group"]
    assert rows[0]["label"] in dm.class_names and not os.path.isabs(rows[0]["path"])
    # another seed would split differently; the split file wins
    moved = tmp_path / "moved_ham"
    shutil.copytree(ham_root, moved)  # relative paths: works under another root
    dm2 = HdkdDataModule(source="ham10000", root=str(moved), seed=123, split_file=str(out),
                         **dm_kwargs(tmp_path))
    dm2.setup()
    for s in SPLITS:
        a = [(Path(r.path).relative_to(ham_root.resolve()), r.label, r.group) for r in dm.split_records(s)]
        b = [(Path(r.path).relative_to(moved.resolve()), r.label, r.group) for r in dm2.split_records(s)]
        assert a == b
    # a split file listing an image the dataset lacks is refused, naming it
    (moved / "HAM10000_images_part_1" / Path(rows[0]["path"]).name).unlink(missing_ok=True)
    first = rows[0]["path"]
    (Path(moved) / first).unlink(missing_ok=True)
    with pytest.raises(DataError, match="split_file"):
        HdkdDataModule(source="ham10000", root=str(moved), split_file=str(out),
                       on_bad_image="skip", **dm_kwargs(tmp_path)).setup()


def test_dedup_test_copy_wins_and_counts(brain_root, tmp_path):
    from hdkd_lightning.data.inspect import build_report

    test_img = brain_root / "Testing" / "glioma" / "Te-gl_0000.jpg"
    shutil.copy(test_img, brain_root / "Training" / "glioma" / "Tr-gl_9000.jpg")
    shutil.copy(test_img, brain_root / "Training" / "glioma" / "Tr-gl_9001.jpg")
    shutil.copy(brain_root / "Training" / "pituitary" / "Tr-pi_0000.jpg",
                brain_root / "Training" / "pituitary" / "Tr-pi_9000.jpg")
    plain = HdkdDataModule(source="brain_tumor", root=str(brain_root), **dm_kwargs(tmp_path))
    assert sum(len(plain.split_records(s)) for s in SPLITS) == 37
    dm = HdkdDataModule(source="brain_tumor", root=str(brain_root), dedup=True, **dm_kwargs(tmp_path))
    dm.setup()
    paths = [r.path for s in SPLITS for r in dm.split_records(s)]
    assert len(paths) == 34
    assert str(test_img.resolve()) in [r.path for r in dm.split_records("test")]
    assert not any("Tr-gl_900" in p for p in paths)
    assert sum("Tr-pi_0000" in p or "Tr-pi_9000" in p for p in paths) == 1
    report = build_report(dm)
    assert report["duplicates_across_splits"] == 2
    assert report["duplicates_across_splits_kept"] == 1
    assert report["duplicates_within_splits"] == 1 and report["duplicates_removed"] == 3
    assert report["splits"]["test"]["glioma"] == 2


def test_cache_build_reuse_invalidate_and_equal_to_decoding(tmp_path):
    root = make_image_folder(tmp_path / "if", train=4, test=2)
    kw = dm_kwargs(tmp_path)
    cached = HdkdDataModule(source="image_folder", root=str(root), **kw)
    cached.prepare_data()
    folders = list((tmp_path / "cache" / "images").iterdir())
    assert len(folders) == 1 and (folders[0] / "index.json").is_file()
    decoded = HdkdDataModule(source="image_folder", root=str(root),
                             **dict(kw, cache={"images": False, "dir": str(tmp_path / "cache")}))
    a = next(iter(cached.test_dataloader()))
    b = next(iter(decoded.test_dataloader()))
    assert a["path"] == b["path"] and torch.equal(a["image"], b["image"])
    # reuse: a second DataModule does not rebuild
    mtime = (folders[0] / "images.u8").stat().st_mtime_ns
    HdkdDataModule(source="image_folder", root=str(root), **kw).prepare_data()
    assert (folders[0] / "images.u8").stat().st_mtime_ns == mtime
    # a changed file selects a new cache; the stale one is removed
    target = root / "train" / "benign" / "benign_0.png"
    write_image(target, seed=999)
    os.utime(target, ns=(1, 1))
    changed = HdkdDataModule(source="image_folder", root=str(root), **kw)
    changed.prepare_data()
    now = list((tmp_path / "cache" / "images").iterdir())
    assert len(now) == 1 and now[0] != folders[0]
    # another size: its own folder
    HdkdDataModule(source="image_folder", root=str(root), **dict(kw, image_size=16)).prepare_data()
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 2


def test_checks_are_cached_between_runs(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "if", train=3, test=1)
    HdkdDataModule(source="image_folder", root=str(root), **dm_kwargs(tmp_path)).setup()
    import hdkd_lightning.data.checks as checks

    def boom(*a, **k):
        raise AssertionError("re-checked a file that did not change")

    monkeypatch.setattr(checks, "check_image", boom)
    HdkdDataModule(source="image_folder", root=str(root), **dm_kwargs(tmp_path)).setup()


def test_from_paths_and_eval_transform(tmp_path):
    from hdkd_lightning.data.io import load_rgb
    from hdkd_lightning.data.transforms import build_eval_transform

    files = [write_image(tmp_path / "in" / f"{i}.jpg", size=(40, 30)) for i in range(3)]
    write_image(tmp_path / "in" / "sub" / "x.png")
    dm = HdkdDataModule.from_paths([tmp_path / "in"], image_size=32, batch_size=2)
    batches = list(dm.predict_dataloader())
    paths = [p for b in batches for p in b["path"]]
    assert len(paths) == 4 and all((b["label"] == -1).all() for b in batches)
    pipe = build_eval_transform(32)
    x = pipe(image=load_rgb(files[0]))["image"]
    assert x.shape == (3, 32, 32) and torch.allclose(batches[0]["image"][0], x)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="broken.jpg"):
        HdkdDataModule.from_paths(tmp_path / "in", image_size=32)


def test_smote_adds_minority_images(tmp_path):
    dm = _synthetic(tmp_path, class_imbalance=3.0, train_samples=30, smote=True)
    with pytest.warns(UserWarning, match="not recommended"):
        dm.setup()
    counts = dm.class_counts("train")
    assert counts[0] == counts[1] == counts[2]
    assert len(dm.split_records("train")) == 30  # SMOTE images are not real records
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 24, 24)


@pytest.mark.parametrize("name", ["ham10000", "isic2018", "brain_tumor", "image_folder", "synthetic"])
def test_configs_instantiate(name, tmp_path):
    import hydra

    from hdkd_lightning.cli.data import compose

    cfg = compose([f"data={name}", f"data.root={tmp_path}", "data.cache.dir=" + str(tmp_path)])
    assert cfg.data.batch_size == 16 and cfg.data.image_size == (64 if name == "synthetic" else 224)
    first = cfg.data.transforms.train[0]["_target_"]
    assert first == ("albumentations.RandomRotate90" if name == "synthetic" else "albumentations.Rotate")
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, HdkdDataModule) and dm.num_workers >= 0
    if name == "synthetic":
        assert dm.num_classes == 4
    elif name in ("ham10000", "isic2018"):
        assert dm.num_classes == 7
    else:
        with pytest.raises(DataError, match="layout"):
            _ = dm.class_names


def test_bad_config_keys_are_named(tmp_path):
    with pytest.raises(DataError, match="data.on_bad_image"):
        _synthetic(tmp_path, on_bad_image="ignore")
    with pytest.raises(DataError, match="data.sampler"):
        _synthetic(tmp_path, sampler="balanced")
    with pytest.raises(DataError, match="unknown data key"):
        HdkdDataModule(source="ham10000", root=str(tmp_path), num_classes=3)
    with pytest.raises(DataError, match="data.root is not set"):
        HdkdDataModule(source="brain_tumor")
