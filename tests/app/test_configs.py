"""Every shipped config composes, and the modules run one fast_dev_run batch."""


import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hdkd_lightning._paths import config_dir
from hdkd_lightning.config import register_resolvers

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def _compose(name, overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(name, overrides=overrides)


def test_all_issue_experiments_exist():
    required = {"teacher_isic", "teacher_ham10000", "teacher_brain", "student_isic", "student_ham10000",
                "student_brain", "distill", "distill_isic", "distill_ham10000", "distill_brain", "demo"}
    assert required <= set(EXPERIMENTS)
    for group, options in {"trainer": {"default", "cpu", "gpu", "ddp", "ddp_cpu"},
                           "logger": {"csv", "tensorboard", "wandb"}, "hparams_search": {"optuna"}}.items():
        assert options <= {p.stem for p in (config_dir() / group).glob("*.yaml")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = _compose("train", [f"experiment={experiment}"])
    assert cfg.task_name == experiment or experiment in ("distill", "demo")
    assert cfg.model._target_.startswith("hdkd_lightning.lit.")
    assert cfg.data._target_ == "hdkd_lightning.data.datamodule.HdkdDataModule"
    if experiment.startswith("distill"):
        assert cfg.model.loss.lambda_feat == 10.0 and cfg.model.loss.alpha == 0.5 and cfg.model.loss.tau == 1.0
        assert cfg.model.teacher.experiment.startswith("teacher_")
        assert cfg.model.optimizer.lr == 5e-5 and cfg.model.optimizer.weight_decay == 0.05
    if experiment.startswith("teacher"):
        assert cfg.model.optimizer._target_ == "torch.optim.Adam" and cfg.model.optimizer.lr == 1e-3


@pytest.mark.parametrize("data, dedup", [("brain_tumor", True), ("ham10000", False), ("isic2018", False),
                                         ("image_folder", False)])
def test_only_brain_tumor_drops_byte_identical_copies_by_default(data, dedup):
    assert _compose("train", [f"data={data}"]).data.dedup is dedup


def test_distill_is_hdkd_on_isic():
    cfg = _compose("train", ["experiment=distill"])
    assert cfg.data.source == "isic2018" and cfg.model.teacher.experiment == "teacher_isic"
    assert cfg.trainer.max_epochs == 200 and cfg.data.batch_size == 16


def test_seeds_never_recarve_validation_and_test_and_the_teacher_follows_the_data():
    cfg = _compose("train", ["model=distill", "data=ham10000", "seed=3", "data.seed=3"])
    assert cfg.data.split_seed == 0
    assert cfg.model.teacher.experiment is None  # resolved from the data: teacher_ham10000, not teacher_isic


@pytest.mark.parametrize("name", ["eval", "predict", "convert"])
def test_other_entry_configs_compose(name):
    overrides = {"eval": ["ckpt_path=x.ckpt"], "predict": ["ckpt_path=x", "input=y"],
                 "convert": ["input=x", "output=y"]}[name]
    assert _compose(name, overrides) is not None


def _tiny_datamodule(tmp_path):
    cfg = _compose("train", ["experiment=demo", "data.image_size=32", "data.train_samples=32",
                             "data.val_samples=16", "data.test_samples=16", "data.num_workers=0",
                             f"data.cache.dir={tmp_path}"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return cfg, dm


@pytest.mark.parametrize("model", ["teacher", "student"])
def test_teacher_module_fast_dev_run(tmp_path, model):
    from hdkd_lightning.lit.teacher import TeacherModule
    from hdkd_lightning.pipeline.build import net_spec as _net_spec

    cfg, dm = _tiny_datamodule(tmp_path)
    mcfg = _compose("train", [f"model={model}", "trainer.max_epochs=3"]).model
    module = TeacherModule(net=_net_spec(mcfg.net, dm.num_classes, 32), class_names=dm.class_names,
                           optimizer=mcfg.optimizer, scheduler=mcfg.scheduler)
    from hdkd_lightning.evaluation.callback import TestArtefacts

    artefacts = TestArtefacts(tmp_path / "test")
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, callbacks=[artefacts])
    before = [p.detach().clone() for p in module.net.parameters()]
    trainer.fit(module, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.net.parameters()))
    trainer.test(module, datamodule=dm)
    assert (tmp_path / "test" / "metrics.json").is_file()
    assert artefacts.results["num_samples"] == dm.batch_size  # fast_dev_run: one test batch


def test_distill_module_fast_dev_run_keeps_teacher_frozen(tmp_path):
    import timm

    from hdkd_lightning.lit.distill import DistillModule
    from hdkd_lightning.pipeline.build import net_spec as _net_spec

    cfg, dm = _tiny_datamodule(tmp_path)
    mcfg = _compose("train", ["model=distill"]).model
    teacher_spec = _net_spec(_compose("train", ["model=teacher"]).model.net, dm.num_classes, 32)
    module = DistillModule(student=_net_spec(mcfg.student, dm.num_classes, 32), teacher=teacher_spec,
                           class_names=dm.class_names, optimizer=mcfg.optimizer, scheduler=mcfg.scheduler,
                           loss=mcfg.loss)
    teacher_net = timm.create_model(teacher_spec["arch"], **teacher_spec["kwargs"])
    module.load_teacher_state(teacher_net.state_dict())
    t_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    trainer = pl.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    # not in the optimizer, no grads, eval mode (BN running stats unchanged)
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in module.teacher.parameters()}
    assert all(p.grad is None for p in module.teacher.parameters())
    assert not module.teacher.training
    module.train()
    assert not module.teacher.training and module.student.training
    assert all(torch.equal(t_before[k], v) for k, v in module.teacher.state_dict().items())
    logged = set(trainer.callback_metrics)
    assert {"train/loss_ce", "train/loss_kd", "train/loss_feat", "train/loss_logit"} <= logged


def test_each_network_runs_once_per_distillation_step(tmp_path):
    """Count forward calls of every conv stage during one training step."""
    import timm

    from hdkd_lightning.distillation import distill_forward
    from hdkd_lightning.losses import HdkdLoss

    teacher = timm.create_model("hdkd_teacher", num_classes=3, img_size=32).eval()
    student = timm.create_model("hdkd_student_distilled", num_classes=3, img_size=32).train()
    calls = {"teacher": 0, "student": 0, "dflt": 0}
    teacher.stages[0].register_forward_hook(lambda *a: calls.__setitem__("teacher", calls["teacher"] + 1))
    student.stages[0].register_forward_hook(lambda *a: calls.__setitem__("student", calls["student"] + 1))
    student.dflt.register_forward_hook(lambda *a: calls.__setitem__("dflt", calls["dflt"] + 1))
    loss, parts, _ = distill_forward(student, teacher, HdkdLoss(), torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert calls == {"teacher": 1, "student": 1, "dflt": 1}


@pytest.mark.parametrize("experiment, kind", [("distill_brain", "distill"), ("teacher_brain", "supervised"),
                                              ("student_ham10000", "supervised")])
def test_optuna_search_space_keys_exist_for_each_model_kind(experiment, kind):
    from omegaconf import OmegaConf

    from hdkd_lightning.sweeps import model_kind

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "hparams_search=optuna"],
                      return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert model_kind(cfg) == kind
    space = cfg.search_space[kind]
    assert len(space) >= 2
    for entry in space.values():
        assert OmegaConf.select(cfg, entry.key, default="MISSING") != "MISSING", f"searched key {entry.key} missing"


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_nonfinite_loss_stops_with_the_components_or_skips(tmp_path, mode):
    from hdkd_lightning.lit.teacher import TeacherModule
    from hdkd_lightning.pipeline.build import net_spec as _net_spec

    cfg, dm = _tiny_datamodule(tmp_path)
    mcfg = _compose("train", ["model=teacher"]).model
    module = TeacherModule(net=_net_spec(mcfg.net, dm.num_classes, 32), class_names=dm.class_names,
                           optimizer=mcfg.optimizer, nonfinite_loss=mode)
    module.net.register_forward_hook(lambda m, i, out: out * float("nan"))
    before = [p.detach().clone() for p in module.net.parameters()]
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path)
    if mode == "error":
        with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 0, global step 0: loss_ce=nan"):
            trainer.fit(module, datamodule=dm)
    else:
        trainer.fit(module, datamodule=dm)
        # both steps skipped: no gradient, no update
        assert all(torch.equal(a, b) for a, b in zip(before, module.net.parameters()))


def test_deferred_nonfinite_check_stops_before_any_checkpoint(tmp_path, monkeypatch):
    """On accelerators the loss is not read every step; a NaN still stops the run before a checkpoint."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from hdkd_lightning.lit.nonfinite import NonFiniteLossGuard
    from hdkd_lightning.lit.teacher import TeacherModule
    from hdkd_lightning.pipeline.build import net_spec as _net_spec

    monkeypatch.setattr(NonFiniteLossGuard, "defer", lambda self, loss: True)
    cfg, dm = _tiny_datamodule(tmp_path)
    mcfg = _compose("train", ["model=teacher"]).model
    module = TeacherModule(net=_net_spec(mcfg.net, dm.num_classes, 32), class_names=dm.class_names,
                           optimizer=mcfg.optimizer)
    calls = {"n": 0}

    def nan_on_first_call(m, i, out):
        calls["n"] += 1
        return out * float("nan") if calls["n"] == 1 else out
    module.net.register_forward_hook(nan_on_first_call)
    ckpt_dir = tmp_path / "ckpt"
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0, accelerator="cpu", logger=False,
                         enable_progress_bar=False, log_every_n_steps=50, default_root_dir=tmp_path,
                         callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True)])
    with pytest.raises(FloatingPointError, match=r"non-finite loss in 2 training step\(s\) up to epoch 0"):
        trainer.fit(module, datamodule=dm)
    # the epoch's second step ran (the NaN was not read within the step); the count was read at the epoch's end
    assert calls["n"] == len(dm.train_dataloader()) == 2
    assert not ckpt_dir.exists() or not any(ckpt_dir.iterdir())


def test_search_space_entry_the_model_lacks_is_refused_before_a_trial():
    import optuna

    from hdkd_lightning.errors import ConfigError
    from hdkd_lightning.sweeps import suggest_search_space

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=teacher_brain", "hparams_search=optuna",
                                          "+search_space.supervised.tau={key: model.loss.tau, type: float, low: 1, high: 2}"],
                      return_hydra_config=True)
    trial = optuna.create_study().ask()
    with pytest.raises(ConfigError, match=r"the sweep searches model\.loss\.tau, which model=teacher does not have"):
        suggest_search_space(cfg, trial)
    ok = optuna.create_study().ask()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        good = compose("train", overrides=["experiment=teacher_brain", "hparams_search=optuna"], return_hydra_config=True)
    suggest_search_space(good, ok)
    assert set(ok.params) == {"model.optimizer.lr", "model.label_smoothing"}
    assert 1e-4 <= ok.params["model.optimizer.lr"] <= 3e-3
