"""The commands end to end, run as a user runs them (subprocesses, from an unrelated directory)."""

import csv
import json

import pytest
import torch
from tests.app.conftest import FOLDER, TINY

from hdkd_lightning.checkpoints import read_checkpoint


def _read_predictions(path):
    with open(path) as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def test_teacher_distill_chain_eval_and_predict(runner, image_folder, tmp_path):
    data = FOLDER + [f"data.root={image_folder}"]
    runner.run("train", data + ["model=teacher", "task_name=chain_teacher", "trainer.max_epochs=2"])
    teacher_run = runner.latest_run("chain_teacher")
    assert (teacher_run / "checkpoints" / "best.ckpt").is_file()
    # no teacher path: the latest chain_teacher run's best checkpoint is found
    runner.run("train", data + ["model=distill", "task_name=chain_hdkd", "model.teacher.experiment=chain_teacher"])
    run = runner.latest_run("chain_hdkd")
    ckpt = run / "checkpoints" / "best.ckpt"
    hp = read_checkpoint(ckpt)["hyper_parameters"]
    assert hp["teacher"]["source"] == str(teacher_run / "checkpoints" / "best.ckpt")
    assert hp["loss"]["lambda_feat"] == 10.0
    for name in ("metrics.json", "per_class.csv", "predictions.csv", "confusion_matrix.png", "splits.csv",
                 "config_resolved.yaml", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    train_metrics = runner.metrics(run)
    assert {"accuracy", "balanced_accuracy", "f1_macro", "auroc_macro", "per_class"} <= set(train_metrics)
    assert set(train_metrics["per_class"]) == {"benign", "malignant", "other"}

    eval_dir = tmp_path / "eval"
    runner.run("evaluate", [f"ckpt_path={ckpt}", "data=image_folder", f"data.root={image_folder}",
                            "data.num_workers=0", f"hydra.run.dir={eval_dir}", "trainer=cpu"])
    eval_metrics = runner.metrics(eval_dir)
    assert eval_metrics["accuracy"] == pytest.approx(train_metrics["accuracy"])
    assert eval_metrics["confusion_matrix"] == train_metrics["confusion_matrix"]

    out_csv = tmp_path / "pred.csv"
    runner.run("predict", [f"ckpt_path={ckpt}", f"input={image_folder / 'test'}", f"output={out_csv}"])
    predicted = _read_predictions(out_csv)
    evaluated = _read_predictions(eval_dir / "predictions.csv")
    assert len(predicted) == len(evaluated) == 18
    for path, row in evaluated.items():
        assert predicted[path]["predicted"] == row["predicted"]
        for cls in ("benign", "malignant", "other"):
            assert float(predicted[path][f"prob_{cls}"]) == pytest.approx(float(row[f"prob_{cls}"]), abs=1e-4)
    # flip TTA runs and still gives probabilities
    tta_csv = tmp_path / "tta.csv"
    runner.run("predict", [f"ckpt_path={ckpt}", f"input={image_folder / 'test' / 'benign'}", f"output={tta_csv}",
                           "tta_flip=true"])
    rows = list(_read_predictions(tta_csv).values())
    assert len(rows) == 6
    assert sum(float(rows[0][f"prob_{c}"]) for c in ("benign", "malignant", "other")) == pytest.approx(1, abs=1e-5)


def test_resume_continues_the_stopped_run(runner):
    runner.run("train", TINY + ["model=student", "task_name=resume_me"])
    run = runner.latest_run("resume_me")
    first = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert first["epoch"] == 0
    runner.run("train", TINY + ["model=student", "task_name=resume_me", "ckpt_path=last", "trainer.max_epochs=3"])
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")  # same run directory
    assert last["epoch"] == 2 and last["global_step"] == 3 * first["global_step"]
    assert last["optimizer_states"][0]["state"]  # optimizer state travelled
    with open(run / "csv" / "metrics.csv") as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("epoch")}
    assert {"0", "1", "2"} <= epochs


def test_ddp_on_cpu_matches_a_single_process_evaluation(runner, tmp_path):
    # odd counts: the sampler pads val and test with a repeat, the metrics must not count it
    runner.run("train", TINY + ["model=teacher", "task_name=ddp_tiny", "trainer=ddp_cpu", "trainer.devices=2",
                                "data.val_samples=25", "data.test_samples=25"])
    run = runner.latest_run("ddp_tiny")
    ddp = runner.metrics(run)
    data = ["data=synthetic", "data.train_samples=48", "data.val_samples=25", "data.test_samples=25",
            "data.num_workers=0", "trainer=cpu", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}"]
    single_dir = tmp_path / "single"
    runner.run("evaluate", data + [f"hydra.run.dir={single_dir}"])
    single = runner.metrics(single_dir)
    assert ddp["num_samples"] == single["num_samples"] == 25
    assert ddp["confusion_matrix"] == single["confusion_matrix"]
    for key in ("accuracy", "balanced_accuracy", "f1_macro"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6)
    # validation under DDP (one epoch: the weights of best.ckpt) equals a one-process run on val
    runner.run("evaluate", data + ["split=val", f"hydra.run.dir={tmp_path / 'single_val'}"])
    single_val = runner.metrics(tmp_path / "single_val")
    with open(next(run.glob("csv/**/metrics.csv"))) as f:
        logged = next(row for row in csv.DictReader(f) if row.get("val/accuracy"))
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro"):
        assert float(logged[f"val/{key}"]) == pytest.approx(single_val[key], abs=1e-6), key


def test_multirun_gives_each_job_its_own_directory(runner):
    runner.run("train", ["-m"] + TINY + ["model=teacher", "task_name=sweep_tiny", "seed=0,1"])
    sweeps = list((runner.log_dir / "sweep_tiny" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "metrics.json").is_file() and (job / "checkpoints" / "best.ckpt").is_file()


def test_sweep_with_ddp_is_refused_at_once(runner):
    proc = runner.run("train", ["-m"] + TINY + ["trainer=ddp_cpu", "trainer.devices=2", "task_name=bad_sweep",
                                                "seed=0,1"], check=False)
    assert proc.returncode != 0
    assert "multirun sweep (-m) cannot use DDP" in proc.stderr + proc.stdout
    assert not list((runner.log_dir / "bad_sweep").rglob("*.ckpt"))


def test_wandb_logger_works_offline(runner):
    runner.run("train", TINY + ["model=teacher", "task_name=wandb_tiny", "logger=wandb"])
    run = runner.latest_run("wandb_tiny")
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, "no offline wandb run written"
    assert (run / "wandb_run_id.txt").read_text().strip() in offline[0].name
    assert (run / "training_curves.png").is_file()  # the CSV log is kept beside wandb


@pytest.mark.parametrize("overrides, message", [
    (["experiment=no_such_experiment"], "no_such_experiment"),
    (["trainer.devices=64", "trainer=cpu"], "trainer.devices=64"),
    (["trainer.precision=16-mixed", "trainer=cpu"], "trainer.precision=16-mixed needs a GPU"),
    (["model=distill", "model.teacher.experiment=never_trained"], "hdkd-train experiment=never_trained"),
    (["model=student", "data.image_size=40"], "image size 40 is not supported"),
    (["data=brain_tumor", "data.root=/nonexistent/brain"], "data.root=/nonexistent/brain does not exist"),
])
def test_config_mistakes_fail_before_training(runner, overrides, message):
    base = TINY if not any(o.startswith("data=") for o in overrides) else ["experiment=demo"]
    proc = runner.run("train", base + overrides + ["task_name=mistake"], check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not list((runner.log_dir / "mistake").rglob("*.ckpt"))


def test_teacher_for_other_classes_is_refused(runner, teacher_run):
    # the tiny teacher has 4 synthetic classes; ask HDKD on 3 classes
    proc = runner.run("train", TINY + ["model=distill", "data.num_classes=3", "task_name=mismatch",
                                       f"model.teacher.ckpt_path={teacher_run / 'checkpoints' / 'best.ckpt'}"],
                      check=False)
    assert proc.returncode == 2
    out = proc.stderr + proc.stdout
    assert "has 4 classes but data=synthetic has 3" in out
    proc = runner.run("train", TINY + ["model=distill", "data.image_size=64", "task_name=mismatch",
                                       f"model.teacher.ckpt_path={teacher_run / 'checkpoints' / 'best.ckpt'}"],
                      check=False)
    assert proc.returncode == 2 and "image size 32 but data.image_size=64" in proc.stderr + proc.stdout


def test_convert_original_weights(runner, parity_dir, tmp_path):
    out = tmp_path / "teacher.ckpt"
    runner.run("convert", [f"input={parity_dir / 'official_teacher.pth'}", "arch=hdkd_teacher", f"output={out}",
                           "class_names=[glioma,meningioma,notumor,pituitary]", "image_size=224"])
    from hdkd_lightning.checkpoints import network_from_checkpoint

    net, meta = network_from_checkpoint(out)
    assert meta["class_names"] == ["glioma", "meningioma", "notumor", "pituitary"] and meta["image_size"] == 224
    expected = torch.load(parity_dir / "expected.pt", weights_only=True)
    with torch.no_grad():
        assert (net(expected["x"]) - expected["teacher_logits"]).abs().max() < 1e-4
    # usable as a teacher: refused here only because the tiny data has other classes and size
    proc = runner.run("train", TINY + ["model=distill", f"model.teacher.ckpt_path={out}", "task_name=conv"],
                      check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode == 2
    assert "classes ['glioma', 'meningioma', 'notumor', 'pituitary'] differ from data=synthetic" in out


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(runner, image_folder, tmp_path):
    import pickle

    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {}, "hdkd": {"x": _RunsCode(marker)}}, f)
    commands = [
        ("predict", [f"ckpt_path={evil}", f"input={image_folder / 'test'}", f"output={tmp_path / 'p.csv'}"]),
        ("evaluate", [f"ckpt_path={evil}", "data=image_folder", f"data.root={image_folder}", "trainer=cpu"]),
        ("train", TINY + ["model=distill", f"model.teacher.ckpt_path={evil}", "task_name=evil"]),
        ("train", TINY + ["model=teacher", f"ckpt_path={evil}", "task_name=evil_resume"]),
        ("convert", [f"input={evil}", "arch=hdkd_teacher", f"output={tmp_path / 'c.ckpt'}"]),
    ]
    for module, args in commands:
        proc = runner.run(module, args, check=False)
        assert proc.returncode == 2, (module, proc.stderr[-2000:])
        assert "refused to load" in proc.stderr + proc.stdout, module
        assert not marker.exists(), f"{module} executed code from the file"


def test_submitit_local_sweep_runs_two_jobs_end_to_end(runner):
    runner.run("train", ["-m", "hydra/launcher=submitit_local", *TINY, "model=teacher", "task_name=submitit_tiny",
                         "seed=0,1"])
    sweeps = list((runner.log_dir / "submitit_tiny" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        assert json.loads((job / "run.json").read_text())["status"] == "completed"
        assert (job / "metrics.json").is_file()
    assert list((sweeps[0] / ".submitit").rglob("*_result.pkl"))  # the jobs went through submitit


@pytest.mark.parametrize("launcher, tasks, allowed", [("basic", None, False), ("slurm_gpu", None, True),
                                                     ("slurm_gpu", 1, False)])
def test_a_ddp_sweep_is_allowed_only_with_one_slurm_task_per_device(launcher, tasks, allowed):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hdkd_lightning._paths import config_dir
    from hdkd_lightning.config import check_trainer_config, register_resolvers
    from hdkd_lightning.errors import ConfigError

    register_resolvers()
    overrides = [f"hydra/launcher={launcher}", "trainer.devices=2", "trainer.accelerator=cpu"]
    if tasks is not None:
        overrides.append(f"hydra.launcher.tasks_per_node={tasks}")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    cfg.hydra.mode = RunMode.MULTIRUN  # as in the job of a sweep (-m)
    HydraConfig.instance().set_config(cfg)
    try:
        if allowed:
            check_trainer_config(cfg.trainer)
        else:
            with pytest.raises(ConfigError, match="cannot use DDP with several processes here"):
                check_trainer_config(cfg.trainer)
    finally:
        HydraConfig.instance().cfg = None


def test_a_batch_job_log_has_one_plain_line_per_epoch(runner):
    """stdout is a pipe here, as under SLURM or nohup: the default progress callback prints epoch lines."""
    args = [a for a in TINY if not a.startswith("callbacks.rich_progress_bar")]
    proc = runner.run("train", args + ["model=student", "task_name=batch_log", "trainer.max_epochs=2"])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(" | ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], proc.stdout[-2000:]
    assert "train/loss" in lines[0] and "val/balanced_accuracy" in lines[0] and "ETA" in lines[0]
    assert "\r" not in proc.stdout and "\x1b[" not in proc.stdout
