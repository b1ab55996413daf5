"""benchmarks/study.py, the real-data study driver: its grid, and that it skips, resumes and restarts runs
correctly (the training itself is replaced by a stand-in here; the study never runs in CI)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest

STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("hdkd_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _args(tmp_path, **kw):
    base = dict(root=tmp_path / "data", out=tmp_path / "out", datasets=["brain", "ham10000"], seeds=[0, 1],
                sizes={}, models=["teacher", "student", "hdkd", "logit_only"], recipe_check=True, threads=1)
    base.update(kw)
    return Namespace(**base)


def test_grid_is_dataset_major_and_each_distillation_uses_its_own_teacher(study, tmp_path):
    jobs = study.build_jobs(_args(tmp_path, sizes={"brain": [150, 50]}))
    names = [j.name for j in jobs]
    # brain: 2 sizes x 2 seeds x 4 models + 2 recipe checks (seed 0); ham10000: 1 size x 2 seeds x 4 + 1
    assert len(jobs) == 16 + 2 + 8 + 1
    assert all(n.startswith("brain-") for n in names[:18]) and all(n.startswith("ham10000-") for n in names[18:])
    assert names[:6] == ["brain-n150/teacher/seed0", "brain-n150/teacher_adam_constant/seed0",
                         "brain-n150/student/seed0", "brain-n150/hdkd/seed0", "brain-n150/logit_only/seed0",
                         "brain-n50/teacher/seed0"]
    by_name = {j.name: j for j in jobs}
    for job in jobs:
        assert "recipe=cpu64" in job.overrides and "data.split_seed=0" in job.overrides
        seed = job.name.rsplit("seed", 1)[1]
        assert f"seed={seed}" in job.overrides and f"data.seed={seed}" in job.overrides
        if job.needs:
            teacher = by_name[job.needs]
            assert teacher.name == job.name.rsplit("/", 2)[0] + f"/teacher/seed{seed}"
            assert f"model.teacher.ckpt_path={teacher.run_dir / 'checkpoints' / 'best.ckpt'}" in job.overrides
    logit = by_name["ham10000-n100/logit_only/seed1"]
    assert "model.loss.lambda_feat=0" in logit.overrides and "experiment=distill_ham10000" in logit.overrides
    assert "data.train_per_class=50" in by_name["brain-n50/student/seed1"].overrides


def test_recipe_check_is_trained_for_seed_0_only_whatever_the_seed_order(study, tmp_path):
    later = [j.name for j in study.build_jobs(_args(tmp_path, datasets=["brain"], seeds=[2]))]
    assert later == ["brain-n150/teacher/seed2", "brain-n150/student/seed2", "brain-n150/hdkd/seed2",
                     "brain-n150/logit_only/seed2"]
    reordered = [j.name for j in study.build_jobs(_args(tmp_path, datasets=["brain"], seeds=[2, 0]))]
    assert [n for n in reordered if "adam_constant" in n] == ["brain-n150/teacher_adam_constant/seed0"]


def test_teacher_check_distils_a_seed_0_student_from_the_longer_trained_teacher(study, tmp_path):
    jobs = study.build_jobs(_args(tmp_path, datasets=["ham10000"], seeds=[0, 1], recipe_check=False,
                                  teacher_check=True))
    names = [j.name for j in jobs]
    assert names[:3] == ["ham10000-n100/teacher/seed0", "ham10000-n100/teacher_e60/seed0",
                         "ham10000-n100/hdkd_teacher_e60/seed0"]
    assert not [n for n in names if "e60" in n and n.endswith("seed1")]
    by_name = {j.name: j for j in jobs}
    long_teacher, student = by_name["ham10000-n100/teacher_e60/seed0"], by_name["ham10000-n100/hdkd_teacher_e60/seed0"]
    assert "trainer.max_epochs=60" in long_teacher.overrides and "experiment=teacher_ham10000" in long_teacher.overrides
    assert student.needs == long_teacher.name and "experiment=distill_ham10000" in student.overrides
    assert f"model.teacher.ckpt_path={long_teacher.run_dir / 'checkpoints' / 'best.ckpt'}" in student.overrides
    assert not any(o.startswith("trainer.max_epochs") for o in student.overrides)  # the student's recipe is unchanged


class _FakeTrain:
    """Stands in for ``hdkd-train``: records the command, writes what a finished run writes."""

    def __init__(self):
        self.commands = []

    def __call__(self, cmd, stdout=None, stderr=None, env=None):  # subprocess.Popen
        self.commands.append(cmd)
        run_dir = Path(next(a for a in cmd if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text(json.dumps({"status": "completed"}))
        return SimpleNamespace(wait=lambda timeout=None: 0, poll=lambda: 0)


class _TrainUntilStopped:
    """Stands in for ``hdkd-train`` processes that train until they are terminated."""

    def __init__(self):
        self.procs = []

    def __call__(self, cmd, stdout=None, stderr=None, env=None):
        stopped = threading.Event()
        proc = SimpleNamespace(cmd=cmd, stopped=stopped, terminate=stopped.set, kill=stopped.set,
                               poll=lambda: -15 if stopped.is_set() else None,
                               wait=lambda timeout=None: -15 if stopped.wait(timeout) else None)
        self.procs.append(proc)
        return proc


def test_finished_runs_are_skipped_checkpointed_ones_resume_and_empty_ones_restart(study, tmp_path, monkeypatch):
    args = _args(tmp_path, datasets=["brain"], seeds=[0], recipe_check=False, models=["teacher", "student", "hdkd"])
    fake = _FakeTrain()
    monkeypatch.setattr(subprocess, "Popen", fake)
    teacher, student, hdkd = study.build_jobs(args)
    lock = threading.Lock()

    teacher.run_dir.mkdir(parents=True)
    (teacher.run_dir / "run.json").write_text(json.dumps({"status": "completed"}))
    assert study.run_job(teacher, args, lock) == "completed" and fake.commands == []  # not run again

    (student.run_dir / "checkpoints").mkdir(parents=True)
    (student.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"stand-in")
    (student.run_dir / "run.json").write_text(json.dumps({"status": "failed"}))  # killed mid-run
    assert study.run_job(student, args, lock) == "completed"
    assert f"ckpt_path={student.run_dir / 'checkpoints' / 'last.ckpt'}" in fake.commands[-1]

    hdkd.run_dir.mkdir(parents=True)
    (hdkd.run_dir / "train.log").write_text("started, then killed before its first checkpoint")
    assert study.run_job(hdkd, args, lock) == "completed"
    assert not any(a.startswith("ckpt_path=") for a in fake.commands[-1])
    (aside,) = (args.out / "aside").iterdir()  # kept, but out of runs/ so that the report ignores it
    assert (aside / "train.log").is_file() and aside.name.startswith("brain-n150__hdkd__seed0.partial-")
    assert not list((args.out / "runs").rglob("*.partial-*"))


def test_study_json_keeps_one_record_per_invocation(study, tmp_path):
    args = _args(tmp_path, datasets=["brain"], seeds=[0], recipe_check=False, models=["teacher"])
    args.out.mkdir(parents=True)
    (job,) = study.build_jobs(args)
    earlier = {"started": "2026-01-01T00:00:00+00:00", "wall_seconds": 5.0, "ran": {}}
    # a file written by an older driver: the same invocation recorded after every run
    (args.out / "study.json").write_text(json.dumps({
        "history": [dict(earlier, wall_seconds=1.0), earlier], "invocation": earlier}))
    job.seconds = [3.0]
    for _ in range(3):  # every finished run writes the file again
        study.save_state(args, [job], started=1.0e9)
    data = json.loads((args.out / "study.json").read_text())
    assert data["history"] == [earlier]
    assert data["invocation"]["ran"] == {job.name: [3.0]}
    # each invocation names its CPU: a later session on another machine must not rename it
    assert data["invocation"]["machine"]["cpu_isa"] == study.machine()["cpu_isa"]
    assert data["jobs"][job.name]["seconds_this_invocation"] == [3.0]


def test_a_stopped_study_terminates_its_runs_and_records_their_time(study, tmp_path, monkeypatch):
    (tmp_path / "data" / "brain_tumor_mri").mkdir(parents=True)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0))  # image cache
    fake = _TrainUntilStopped()
    monkeypatch.setattr(subprocess, "Popen", fake)

    def kill_when_both_train():
        while len(fake.procs) < 2:
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill <driver>` or a scheduler's time limit does

    previous = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=kill_when_both_train, daemon=True).start()
    try:
        code = study.main(["--root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--datasets", "brain",
                           "--seeds", "0", "--models", "teacher", "student", "hdkd", "--jobs", "2"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130
    assert len(fake.procs) == 2 and all(p.stopped.is_set() for p in fake.procs)  # hdkd never started
    data = json.loads((tmp_path / "out" / "study.json").read_text())
    ran = data["invocation"]["ran"]
    assert set(ran) == {"brain-n150/teacher/seed0", "brain-n150/student/seed0"}
    assert all(len(secs) == 1 and secs[0] >= 0.2 for secs in ran.values())  # recorded once each
    assert data["jobs"]["brain-n150/teacher/seed0"]["status"] == "interrupted"
    assert data["jobs"]["brain-n150/hdkd/seed0"]["status"] == "absent"  # not started: nothing on disk


def test_keep_text_copies_each_completed_runs_text_artefacts_with_its_predictions(study, tmp_path, capsys):
    (tmp_path / "data" / "brain_tumor_mri").mkdir(parents=True)
    runs = tmp_path / "out" / "runs" / "brain-n150"
    done, running = runs / "student" / "seed0", runs / "hdkd" / "seed0"
    for run, status in ((done, "completed"), (running, "running")):
        (run / "csv").mkdir(parents=True)
        (run / "checkpoints").mkdir()
        (run / "run.json").write_text(json.dumps({"status": status}))
        for name in ("config_resolved.yaml", "metrics.json", "per_class.csv", "predictions.csv", "csv/metrics.csv",
                     "confusion_matrix.png", "checkpoints/best.ckpt"):
            (run / name).write_text(f"{name} of {run.parent.name}")
    dest = tmp_path / "docs" / "results" / "runs"
    # --dry-run: copies without training anything (no subprocess is started: the data folder is empty)
    assert study.main(["--root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--datasets", "brain",
                       "--seeds", "0", "--models", "student", "hdkd", "--dry-run", "--keep-text", str(dest)]) == 0
    assert "text artefacts of 1 completed run(s) copied" in capsys.readouterr().out
    kept = dest / "brain-n150" / "student" / "seed0"
    assert sorted(p.name for p in kept.iterdir()) == ["config_resolved.yaml", "epoch_metrics.csv", "metrics.json",
                                                      "per_class.csv", "predictions.csv", "run.json"]
    assert (kept / "predictions.csv").read_text() == "predictions.csv of student"
    assert (kept / "epoch_metrics.csv").read_text() == "csv/metrics.csv of student"
    assert not (dest / "brain-n150" / "hdkd").exists()  # still training: nothing to keep yet
