"""Settings that would give a wrong or stuck run are refused before anything is built."""

import json
import shutil

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tests.app.conftest import TINY

from hdkd_lightning._paths import config_dir
from hdkd_lightning.config import check_trainer_config, register_resolvers
from hdkd_lightning.errors import ConfigError


def _compose_train(overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("trainer, mode, refused", [
    ({"accelerator": "cpu", "devices": 2, "strategy": "ddp"}, "skip", True),
    ({"accelerator": "cpu", "devices": "2", "strategy": "ddp"}, "skip", True),
    ({"accelerator": "cpu", "devices": 1, "num_nodes": 2}, "skip", True),
    ({"accelerator": "cpu", "devices": 2, "strategy": "ddp"}, "error", False),
    ({"accelerator": "cpu", "devices": 1, "strategy": "ddp"}, "skip", False),  # one process: nothing to wait for
    ({"accelerator": "cpu", "devices": "auto"}, "skip", False),  # auto on the CPU is one process
])
def test_nonfinite_skip_is_refused_with_several_processes(monkeypatch, trainer, mode, refused):
    monkeypatch.setattr("os.cpu_count", lambda: 8)  # the device count must not be refused for the machine
    cfg = OmegaConf.create(trainer)
    if refused:
        with pytest.raises(ConfigError, match=r"model\.nonfinite_loss=skip .*use model\.nonfinite_loss=error, "
                                              r"or trainer\.devices=1"):
            check_trainer_config(cfg, nonfinite_loss=mode)
    else:
        check_trainer_config(cfg, nonfinite_loss=mode)


@pytest.mark.parametrize("overrides, message", [
    (["train=false"], "train=false tests a trained checkpoint but none was given: pass ckpt_path=<checkpoint>"),
    (["trainer=ddp_cpu", "trainer.devices=2", "model.nonfinite_loss=skip"], "model.nonfinite_loss=skip cannot run"),
])
def test_train_refuses_before_building_anything(monkeypatch, tmp_path, overrides, message):
    from hdkd_lightning.pipeline import run_train

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setenv("HDKD_LOG_DIR", str(tmp_path / "logs"))
    cfg = _compose_train(["experiment=demo", "data.num_workers=0", *overrides])
    with pytest.raises(ConfigError, match=message):
        run_train(cfg)
    assert not (tmp_path / "logs").exists()


def test_train_false_tests_the_given_checkpoint(runner, teacher_run, tmp_path):
    proc = runner.run("train", TINY + ["model=teacher", "task_name=untrained", "train=false"], check=False)
    assert proc.returncode == 2 and "pass ckpt_path=<checkpoint>" in proc.stderr
    assert not (runner.log_dir / "untrained").exists()
    # a checkpoint outside a run folder: its weights are tested, not freshly initialised ones
    ckpt = tmp_path / "teacher.ckpt"
    shutil.copy(teacher_run / "checkpoints" / "best.ckpt", ckpt)
    runner.run("train", TINY + ["model=teacher", "task_name=test_only", "train=false", f"ckpt_path={ckpt}"])
    tested = runner.metrics(runner.latest_run("test_only"))
    trained = runner.metrics(teacher_run)
    assert tested["confusion_matrix"] == trained["confusion_matrix"]
    assert tested["auroc_macro"] == pytest.approx(trained["auroc_macro"], abs=1e-6)
    assert json.loads((runner.latest_run("test_only") / "run.json").read_text())["status"] == "completed"
