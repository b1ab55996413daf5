"""The research workflow end to end: teacher selection, Optuna sweeps (stored and resumed), hdkd-report."""

from __future__ import annotations

import csv
import json
import shutil
import statistics

import pytest
import yaml
from tests.app.conftest import TINY


def _run_json(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def test_distill_takes_the_latest_completed_teacher_and_records_it(runner):
    runner.run("train", TINY + ["model=teacher", "task_name=pick_teacher"])
    done = runner.latest_run("pick_teacher")
    state = _run_json(done)
    assert state["status"] == "completed" and state["best_score"] is not None
    assert state["test"]["balanced_accuracy"] == pytest.approx(runner.metrics(done)["balanced_accuracy"])
    # newer runs that never finished, or failed, must not be chosen (their checkpoints are newer)
    for name, status in (("2999-01-01_00-00-00_000000", "running"), ("2999-01-02_00-00-00_000000", "failed")):
        copy = done.parent / name
        shutil.copytree(done, copy)
        (copy / "run.json").write_text(json.dumps({"status": status, "task_name": "pick_teacher"}))
    # a debug run gets its own task: never a teacher
    runner.run("train", TINY + ["model=teacher", "debug=limit", "trainer.max_epochs=1"])
    assert (runner.log_dir / "debug" / "runs").is_dir()

    proc = runner.run("train", TINY + ["model=distill", "model.teacher.experiment=pick_teacher", "task_name=picked"])
    best = done / "checkpoints" / "best.ckpt"
    out = proc.stdout + proc.stderr
    assert f"teacher: {best} (validation balanced accuracy {state['best_score']:.4f})" in out
    cfg = yaml.safe_load((runner.latest_run("picked") / "config_resolved.yaml").read_text())
    assert cfg["model"]["teacher"]["resolved"]["path"] == str(best)
    assert cfg["model"]["teacher"]["resolved"]["val_balanced_accuracy"] == pytest.approx(state["best_score"])


def test_no_completed_teacher_is_a_clear_error(runner):
    runner.run("train", TINY + ["model=teacher", "task_name=unfinished_teacher"])
    run = runner.latest_run("unfinished_teacher")
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    proc = runner.run("train", TINY + ["model=distill", "model.teacher.experiment=unfinished_teacher",
                                       "task_name=orphan"], check=False)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "no completed teacher run found for experiment 'unfinished_teacher'" in out
    assert "1 run(s) there are unfinished or failed" in out


def _sweep_dir(runner, task):
    sweeps = sorted((runner.log_dir / task / "multiruns").iterdir())
    assert len(sweeps) == 1
    return sweeps[0]


def test_optuna_sweep_runs_real_trials_and_a_stored_study_resumes(runner, teacher_run, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["-m", "hparams_search=optuna", *TINY, "model=distill", "task_name=optuna_tiny",
            f"model.teacher.ckpt_path={teacher_run / 'checkpoints' / 'best.ckpt'}",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=tiny"]
    # two epochs, validated after each: the objective must be the best of them, not the last or a test value
    proc = runner.run("train", args + ["hydra.sweeper.n_trials=2", "trainer.max_epochs=2"])
    sweep = _sweep_dir(runner, "optuna_tiny")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    scores = [_run_json(j)["best_score"] for j in jobs]
    assert all(_run_json(j)["status"] == "completed" for j in jobs)
    for job, score in zip(jobs, scores):
        (metrics_csv,) = job.glob("csv/**/metrics.csv")
        with open(metrics_csv) as f:
            val = [float(r["val/balanced_accuracy"]) for r in csv.DictReader(f) if r.get("val/balanced_accuracy")]
        assert len(val) == 2 and score == pytest.approx(max(val))
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"model.optimizer.lr", "model.loss.lambda_feat", "model.loss.alpha",
                                          "model.loss.tau"}
    assert result["best_value"] == pytest.approx(max(scores))
    assert "Best parameters" in proc.stdout + proc.stderr

    # the same command again continues the stored study with new points
    runner.run("train", args + ["hydra.sweeper.n_trials=1"])
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.trials
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[2].params != trials[0].params and trials[2].params != trials[1].params
    assert [t.value for t in trials[:2]] == pytest.approx(scores)


def test_optuna_searches_a_student_and_refuses_keys_it_does_not_have(runner):
    runner.run("train", ["-m", "hparams_search=optuna", *TINY, "model=student", "task_name=optuna_student",
                         "hydra.sweeper.n_trials=1"])
    result = yaml.safe_load((_sweep_dir(runner, "optuna_student") / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"model.optimizer.lr", "model.label_smoothing"}

    proc = runner.run("train", ["-m", "hparams_search=optuna", *TINY, "model=student", "task_name=optuna_bad",
                                "hydra.sweeper.n_trials=1", "model.loss.tau=choice(1.0,2.0)"], check=False)
    assert proc.returncode != 0
    assert "model.loss.tau is not a key of this config: model.loss does not exist" in proc.stdout + proc.stderr
    assert not list((runner.log_dir / "optuna_bad").rglob("*.ckpt"))  # no trial ran


# -- hdkd-report ---------------------------------------------------------------------------------

def _fake_run(root, name, model, seed, bal_acc, status="completed", lam=10.0, size=150, source="brain_tumor",
              teacher_ckpt=None, epochs=30):
    from omegaconf import OmegaConf

    run = root / name
    run.mkdir(parents=True)
    model_cfg = ({"_target_": "hdkd_lightning.lit.distill.DistillModule", "loss": {"lambda_feat": lam, "kind": "soft"},
                  "teacher": {"ckpt_path": str(teacher_ckpt or f"/somewhere/{seed}.ckpt")}}
                 if model == "distill" else
                 {"_target_": "hdkd_lightning.lit.teacher.TeacherModule", "net": {"arch": f"hdkd_{model}"}})
    cfg = {"seed": seed, "task_name": f"t_{model}_{seed}", "data": {"source": source, "seed": seed, "train_per_class": size,
                                                                     "root": "/data"}, "model": model_cfg,
           "trainer": {"max_epochs": epochs}, "paths": {"output_dir": str(run)}}
    OmegaConf.save(OmegaConf.create(cfg), run / "config_resolved.yaml")
    (run / "run.json").write_text(json.dumps({"status": status, "best_score": bal_acc + 0.01,
                                              **({"error": "boom"} if status == "failed" else {})}))
    if status == "completed":
        (run / "metrics.json").write_text(json.dumps({"balanced_accuracy": bal_acc, "accuracy": bal_acc + 0.05,
                                                      "f1_macro": bal_acc - 0.05, "auroc_macro": 0.9}))
    return run


def test_report_groups_by_setting_with_mean_std_over_seeds(tmp_path):
    from hdkd_lightning.cli.report import main

    root = tmp_path / "runs"
    values = {"teacher": [0.70, 0.74, 0.78], "student": [0.60, 0.61, 0.65], "hdkd": [0.71, 0.73, 0.80]}
    for model, accs in values.items():
        for seed, acc in enumerate(accs):
            _fake_run(root / "brain", f"{model}_{seed}", "distill" if model == "hdkd" else model, seed, acc)
    _fake_run(root / "brain", "logit_0", "distill", 0, 0.7, lam=0.0)
    _fake_run(root / "brain", "hdkd_broken", "distill", 3, 0.1, status="failed")
    _fake_run(root / "brain", "hdkd_killed", "distill", 4, 0.1, status="running")
    _fake_run(root / "ham", "student_0", "student", 0, 0.5, size=100, source="ham10000")
    out = tmp_path / "report"
    assert main([str(root / "brain"), str(root / "ham"), "--out", str(out), "--no-cost"]) == 0

    rows = {(r["panel"], r["model"]): r for r in csv.DictReader(open(out / "report.csv"))}
    assert set(rows) == {("brain_tumor, train 150/class", m) for m in ("teacher", "student", "hdkd", "logit-only")} | \
        {("ham10000, train 100/class", "student")}
    for model, accs in values.items():
        row = rows[("brain_tumor, train 150/class", model)]
        assert int(row["n"]) == 3
        assert float(row["balanced_accuracy_mean"]) == pytest.approx(statistics.fmean(accs))
        assert float(row["balanced_accuracy_std"]) == pytest.approx(statistics.stdev(accs))
        assert float(row["val_score_mean"]) == pytest.approx(statistics.fmean(accs) + 0.01)
    assert rows[("ham10000, train 100/class", "student")]["balanced_accuracy_std"] == ""  # n = 1
    md = (out / "report.md").read_text()
    assert "| brain_tumor, train 150/class | hdkd | 3 | 0.747 ± 0.047 |" in md
    assert "hdkd_broken`: failed (boom)" in md and "hdkd_killed`: running" in md
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert len(runs) == 11 and {r["seed"] for r in runs if r["model"] == "hdkd"} == {"0", "1", "2"}
    assert (out / "report.png").stat().st_size > 10_000


def test_report_labels_settings_that_differ_within_a_model(tmp_path):
    from hdkd_lightning.evaluation.comparison import build_comparison, find_runs, load_run

    for lam in (1.0, 10.0):
        for seed in (0, 1):
            _fake_run(tmp_path, f"l{lam}_{seed}", "distill", seed, 0.5 + lam / 100, lam=lam)
    report = build_comparison([load_run(d) for d in find_runs([tmp_path])], with_cost=False)
    assert [r["model"] for r in report["rows"]] == ["hdkd lambda_feat=1", "hdkd lambda_feat=10"]
    assert [r["n"] for r in report["rows"]] == [2, 2]


def test_report_tells_distillations_from_different_teachers_apart(tmp_path):
    from hdkd_lightning.evaluation.comparison import build_comparison, find_runs, load_run, write_comparison

    study = tmp_path / "study"
    for seed in (0, 1):
        for teacher, epochs in (("teacher", 30), ("teacher_e60", 60)):
            _fake_run(study, f"{teacher}/seed{seed}", "teacher", seed, 0.6, epochs=epochs)
            # the distillation runs record where the teacher was trained (not where it is now): copied run
            # folders are matched by their last folder names
            student = "hdkd" if teacher == "teacher" else "hdkd_teacher_e60"
            _fake_run(study, f"{student}/seed{seed}", "distill", seed, 0.7 if epochs == 30 else 0.8,
                      teacher_ckpt=f"/trained/elsewhere/{teacher}/seed{seed}/checkpoints/best.ckpt")
    report = build_comparison([load_run(d) for d in find_runs([study])], with_cost=False)
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"teacher max_epochs=30", "teacher max_epochs=60",
                         "hdkd teacher.max_epochs=30", "hdkd teacher.max_epochs=60"}
    assert rows["hdkd teacher.max_epochs=60"]["n"] == 2 and rows["hdkd teacher.max_epochs=60"]["balanced_accuracy_mean"] == 0.8
    assert report["repeated_seeds"] == []

    # without the teachers' folders the report cannot tell the two apart: it says so instead of averaging quietly
    runs = [load_run(d) for d in find_runs([study / "hdkd", study / "hdkd_teacher_e60"])]
    report = build_comparison(runs, with_cost=False)
    assert [r["n"] for r in report["rows"]] == [4]
    assert report["repeated_seeds"] == ["brain_tumor, train 150/class | hdkd"]
    write_comparison(report, tmp_path / "out")
    assert "two runs of one seed" in (tmp_path / "out" / "report.md").read_text()


def test_report_on_real_runs_counts_parameters_and_flops(runner, teacher_run, tmp_path):
    from hdkd_lightning.evaluation.comparison import build_comparison, load_run

    runner.run("train", TINY + ["model=student", "task_name=report_student"])
    report = build_comparison([load_run(teacher_run), load_run(runner.latest_run("report_student"))])
    rows = {r["model"]: r for r in report["rows"]}
    import timm

    student = timm.create_model("hdkd_student", num_classes=4, img_size=32)  # the tiny runs' size
    assert rows["teacher"]["params"] == 3_948_290  # docs/METHOD.md, 4 classes (no size-dependent parameters)
    assert rows["student"]["params"] == sum(p.numel() for p in student.parameters())
    assert 0 < rows["student"]["gflops"] < rows["teacher"]["gflops"]
    proc = runner.run("report", [str(teacher_run), str(tmp_path / "nothing_here")], check=False)
    assert proc.returncode == 2 and "not a directory" in proc.stderr
