"""Checkpoints hold each network once; older checkpoints (with a second copy) still load; a resume
may switch ``compile`` on or off."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from hdkd_lightning.checkpoints import network_from_checkpoint, read_checkpoint
from hdkd_lightning.checkpoints.io import AtomicCheckpointIO
from hdkd_lightning.data.datamodule import HdkdDataModule
from hdkd_lightning.lit.distill import DistillModule
from hdkd_lightning.lit.teacher import TeacherModule

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
KW = {"num_classes": 3, "img_size": 32}


@pytest.fixture
def dm(tmp_path):
    return HdkdDataModule(source="synthetic", num_classes=3, train_samples=12, val_samples=6, test_samples=6,
                          image_size=32, batch_size=6, num_workers=0, cache={"dir": str(tmp_path / "cache")})


def _teacher(compile=False):
    return TeacherModule(net={"arch": "hdkd_teacher", "kwargs": KW}, class_names=["a", "b", "c"], optimizer=ADAM,
                         compile=compile)


def _fit(module, dm, root, epochs, ckpt_path=None):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, plugins=[AtomicCheckpointIO()],
                         callbacks=[ModelCheckpoint(dirpath=root, filename="last", save_top_k=1, monitor=None,
                                                    enable_version_counter=False)])
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    return root / "last.ckpt"


def _assert_each_network_once(state_dict, prefixes):
    keys = list(state_dict)
    assert len(keys) == sum(len(net.state_dict()) for net in prefixes.values()), "keys beyond the networks' own"
    assert not [k for k in keys if k.startswith("_")], "a network is saved twice"
    for prefix, net in prefixes.items():
        assert sorted(k[len(prefix):] for k in keys if k.startswith(prefix)) == sorted(net.state_dict())


@pytest.mark.parametrize("compile", [False, True])
def test_teacher_checkpoint_holds_its_network_once(compile, dm, tmp_path, one_thread, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    module = _teacher(compile)
    sd = read_checkpoint(_fit(module, dm, tmp_path, 1))["state_dict"]
    _assert_each_network_once(sd, {"net.": module.net})


def test_distill_checkpoint_holds_student_and_teacher_once(dm, tmp_path, one_thread):
    module = DistillModule(student={"arch": "hdkd_student_distilled", "kwargs": KW},
                           teacher={"arch": "hdkd_teacher", "kwargs": KW}, class_names=["a", "b", "c"], optimizer=ADAM,
                           compile=True)
    module.load_teacher_state(_teacher().net.state_dict())
    sd = module.state_dict()
    _assert_each_network_once(sd, {"student.": module.student, "teacher.": module.teacher})


def test_a_checkpoint_with_the_old_second_copy_still_loads_and_resumes(dm, tmp_path, one_thread):
    module = _teacher()
    path = _fit(module, dm, tmp_path / "a", 1)
    ckpt = torch.load(path, weights_only=True)
    net_keys = [k for k in ckpt["state_dict"] if k.startswith("net.")]
    # what the previous version wrote: net.* plus _train_net.* (or _train_net._orig_mod.* with compile)
    for k in net_keys:
        ckpt["state_dict"]["_train_net." + k[4:]] = ckpt["state_dict"][k].clone()
        ckpt["state_dict"]["_train_net._orig_mod." + k[4:]] = ckpt["state_dict"][k].clone()
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    net, meta = network_from_checkpoint(old)
    assert all(torch.equal(v, ckpt["state_dict"]["net." + k]) for k, v in net.state_dict().items())
    resumed = _teacher()
    out = _fit(resumed, dm, tmp_path / "b", 2, ckpt_path=str(old))
    new = read_checkpoint(out)
    assert new["epoch"] == 1
    _assert_each_network_once(new["state_dict"], {"net.": resumed.net})


@pytest.mark.parametrize("first, second", [(False, True), (True, False)])
def test_resume_may_switch_compile(first, second, dm, tmp_path, one_thread, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    path = _fit(_teacher(first), dm, tmp_path / "a", 1)
    module = _teacher(second)
    out = _fit(module, dm, tmp_path / "b", 2, ckpt_path=str(path))
    ckpt = read_checkpoint(out)
    assert ckpt["epoch"] == 1 and ckpt["hyper_parameters"]["compile"] is second
    _assert_each_network_once(ckpt["state_dict"], {"net.": module.net})
    assert module.compiled.built is second  # the compiled wrapper really ran the steps
