"""The real-data study (docs/RESULTS.md): does HDKD beat the plain student when data are scarce?

    .venv/bin/python benchmarks/study.py --root ../shared/datasets --out study

Runs ``hdkd-train`` for every (dataset, training-set size, seed, model) of the grid below with
the ``recipe=cpu64`` config, then ``hdkd-report`` over all runs (``<out>/report/``).

* Datasets: Brain Tumor MRI (``data.dedup=true``, official test set) and HAM10000 (splits
  grouped by lesion). Training sets: ``data.train_per_class`` (``--sizes``); validation and
  test are the same whatever the size and seed (``data.split_seed=0``).
* Models: the teacher, the plain student (no distillation), HDKD (logit + feature
  distillation) and logit-only distillation (``model.loss.lambda_feat=0``). Each distillation
  run uses the teacher of its own dataset, size and seed.
* Seeds (``--seeds``): ``seed`` and ``data.seed`` together, i.e. initialisation, the training
  subset, augmentation and batch order.
* ``--recipe-check`` also trains, for seed 0, the teacher with the original recipe (Adam 1e-3,
  constant learning rate): the "before" of the recipe choice, judged on validation only.
* ``--teacher-check`` also trains, for seed 0, a teacher for twice the epochs (60) and the HDKD
  student distilled from it (the student's own recipe unchanged): does a stronger teacher make a
  better student? Judged on validation only.

Resumable: each run lives in ``<out>/runs/<dataset>-n<size>/<model>/seed<k>/``. A run whose
``run.json`` says ``completed`` is skipped; one with ``checkpoints/last.ckpt`` continues from it
(``ckpt_path=<that file>``); a run folder without a checkpoint is moved aside
(``<out>/aside/*.partial-<time>``) and started again. Stop the study at any moment (Ctrl-C, or
``kill`` / a scheduler's SIGTERM to the driver): it terminates its runs, records how long each had
trained in ``study.json``, and exits 130; run the same command to continue.

``--keep-text DIR`` copies the text artefacts of every completed run of the grid (:data:`KEPT`: run.json,
the resolved config, metrics.json, per_class.csv, predictions.csv, the per-epoch log as
epoch_metrics.csv) to ``DIR/<dataset>-n<size>/<model>/seed<k>/``: after training, or, with
``--dry-run``, without training anything (``--keep-text docs/results/runs`` is how the study's runs are
committed). ``hdkd-report DIR`` rebuilds every table from them, the paired differences from
predictions.csv.

``--jobs 2`` (default) trains two runs at a time with one thread each: on the 2-core machines
this project is measured on that trained 10-30% more images per second than one run with two
threads. Every run's output goes to ``<out>/logs/<run>.log``; ``<out>/study.json`` records the
machine (CPU model and flags), the grid, and the wall time of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

DATASETS = {
    # name: (experiment suffix, data overrides with {root}, default training-set sizes)
    "brain": ("brain", ["data.root={root}/brain_tumor_mri", "data.dedup=true"], [150]),
    "ham10000": ("ham10000", ["data.root={root}/ham10000"], [100]),
}
MODELS = {
    # name: (experiment prefix, extra overrides, needs the teacher)
    "teacher": ("teacher", [], False),
    "student": ("student", [], False),
    "hdkd": ("distill", [], True),
    "logit_only": ("distill", ["model.loss.lambda_feat=0"], True),
}
# extra seed-0 runs: option -> [(label, experiment prefix, extra overrides, label of its teacher or None)]
CHECKS = {
    "recipe_check": [("teacher_adam_constant", "teacher", ["model.optimizer._target_=torch.optim.Adam",
                                                           "model.optimizer.weight_decay=0.0", "model.scheduler=null"], None)],
    "teacher_check": [("teacher_e60", "teacher", ["trainer.max_epochs=60"], None),
                      ("hdkd_teacher_e60", "distill", [], "teacher_e60")],
}
# what --keep-text keeps of a completed run (file in the run -> name kept): small text files from
# which hdkd-report rebuilds every table, predictions.csv for its paired differences
KEPT = {"run.json": "run.json", "config_resolved.yaml": "config_resolved.yaml", "metrics.json": "metrics.json",
        "per_class.csv": "per_class.csv", "predictions.csv": "predictions.csv", "csv/metrics.csv": "epoch_metrics.csv"}
COMMON = ["recipe=cpu64", "data.split_seed=0", "callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false"]


@dataclass
class Job:
    name: str
    run_dir: Path
    overrides: List[str]
    needs: Optional[str] = None  # name of the teacher job
    status: str = "pending"
    seconds: List[float] = field(default_factory=list)
    started: Optional[float] = None  # while it trains
    proc: Optional[subprocess.Popen] = None


def run_state(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status", "unknown")
    except (OSError, ValueError):
        return "absent"


def machine() -> Dict[str, object]:
    from hdkd_lightning.bench.machine import machine_info

    return machine_info()


def build_jobs(args) -> List[Job]:
    jobs: List[Job] = []
    # dataset by dataset, then seed by seed: a study cut off early has every seed of the first
    # dataset (a mean and a std) rather than one seed of each
    for ds in args.datasets:
        _, data_overrides, default_sizes = DATASETS[ds]
        for seed in args.seeds:
            for size in args.sizes.get(ds, default_sizes):
                base = f"{ds}-n{size}"
                common = [*COMMON, *[o.format(root=args.root) for o in data_overrides], f"data.train_per_class={size}",
                          f"seed={seed}", f"data.seed={seed}"]
                for model in args.models:
                    prefix, extra, needs_teacher = MODELS[model]
                    jobs.append(_job(args, ds, base, seed, common, model, prefix, extra,
                                     "teacher" if needs_teacher else None))
                    # seed 0 only (not the first seed listed): `--seeds 2` after a cut-off study must
                    # not train a second check; right after the teacher, so that the choice is seen early
                    if model == "teacher" and seed == 0:
                        for option, runs in CHECKS.items():
                            if getattr(args, option, False):
                                jobs.extend(_job(args, ds, base, seed, common, *run) for run in runs)
    return jobs


def _job(args, ds: str, base: str, seed: int, common: List[str], label: str, prefix: str, extra: List[str],
         teacher_label: Optional[str]) -> Job:
    """The run ``<base>/<label>/seed<seed>``, distilled from ``<base>/<teacher_label>/seed<seed>`` if given."""
    name = f"{base}/{label}/seed{seed}"
    overrides = [f"experiment={prefix}_{DATASETS[ds][0]}", *common, *extra, f"task_name=study_{ds}_{label}"]
    teacher = f"{base}/{teacher_label}/seed{seed}" if teacher_label else None
    if teacher:
        overrides.append(f"model.teacher.ckpt_path={args.out / 'runs' / teacher / 'checkpoints' / 'best.ckpt'}")
    return Job(name, args.out / "runs" / name, overrides, teacher)


def run_job(job: Job, args, lock: threading.Lock) -> str:
    state = run_state(job.run_dir)
    if state == "completed":
        return "completed"
    overrides = list(job.overrides)
    last = job.run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        overrides.append(f"ckpt_path={last}")
        what = f"resuming from {last.name}"
    else:
        if job.run_dir.exists():  # started but no checkpoint yet: keep it aside (out of runs/, so
            # that the report does not list it), start again
            aside = args.out / "aside" / f"{job.name.replace('/', '__')}.partial-{datetime.now():%Y%m%d-%H%M%S}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            job.run_dir.rename(aside)
        what = "starting"
    overrides.append(f"hydra.run.dir={job.run_dir}")
    log_file = args.out / "logs" / f"{job.name.replace('/', '__')}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
    cmd = [sys.executable, "-m", "hdkd_lightning.cli.train", *overrides]
    with lock:
        print(f"[{datetime.now():%H:%M:%S}] {what}: {job.name}", flush=True)
    job.started = time.time()
    with open(log_file, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        job.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        code = job.proc.wait()
    with lock:  # an interrupted study records the time itself (stop_running); count it once
        _record_time(job)
        if job.status == "interrupted":
            return "interrupted"
    status = run_state(job.run_dir) if code == 0 else "failed"
    with lock:
        print(f"[{datetime.now():%H:%M:%S}] {status} ({job.seconds[-1] / 60:.1f} min): {job.name}"
              + ("" if code == 0 else f"  exit {code}, see {log_file}"), flush=True)
    return status


def _record_time(job: Job) -> None:
    """Add the time since the job started to its record, once (the caller holds the lock)."""
    if job.started is not None:
        job.seconds.append(round(time.time() - job.started, 1))
        job.started = None


def stop_running(jobs: List[Job], lock: threading.Lock) -> List[str]:
    """Stop the training processes of an interrupted study and record how long each had trained.

    Each run keeps its ``last.ckpt``, so the next invocation resumes it.
    """
    names = []
    for job in jobs:
        with lock:
            job.status = "interrupted"
            _record_time(job)
        if job.proc is not None and job.proc.poll() is None:
            job.proc.terminate()  # the run saves nothing more; its last.ckpt is where it resumes
            try:
                job.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.proc.kill()
        names.append(job.name)
    return names


def keep_text(jobs: List[Job], dest: Path) -> List[str]:
    """Copy the :data:`KEPT` files of every completed run to ``dest/<run name>/``; the names copied."""
    copied = []
    for job in jobs:
        if run_state(job.run_dir) != "completed":
            continue
        target = dest / job.name
        target.mkdir(parents=True, exist_ok=True)
        for source, name in KEPT.items():
            if (job.run_dir / source).is_file():
                shutil.copyfile(job.run_dir / source, target / name)
        copied.append(job.name)
    return copied


def save_state(args, jobs: List[Job], started: float) -> None:
    data = {"command": " ".join(sys.argv), "machine": machine(),
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
            "wall_seconds_this_invocation": round(time.time() - started, 1),
            "jobs": {j.name: {"status": j.status, "seconds_this_invocation": j.seconds} for j in jobs}}
    path = args.out / "study.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    # one record per invocation (keyed by its start), the latest write winning: a record written
    # again, or by two drivers sharing one --out, replaces the earlier one instead of piling up
    records = {h["started"]: h for h in old.get("history", [])}
    if old.get("invocation"):
        records[old["invocation"]["started"]] = old["invocation"]
    records.pop(data["started"], None)
    data["history"] = sorted(records.values(), key=lambda h: h["started"])
    # the machine goes into each invocation's record too: sessions land on different CPUs, and a
    # run's time means nothing without the CPU it ran on
    data["invocation"] = {"started": data["started"], "wall_seconds": data["wall_seconds_this_invocation"],
                          "machine": data["machine"], "ran": {j.name: j.seconds for j in jobs if j.seconds}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/datasets"),
                        help="folder holding brain_tumor_mri/ and ham10000/")
    parser.add_argument("--out", type=Path, default=Path("study"), help="where runs, logs and the report go")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sizes", nargs="*", default=[], metavar="DATASET=N[,N]",
                        help="training images per class, e.g. brain=150,50 ham10000=100")
    parser.add_argument("--recipe-check", action="store_true",
                        help="also train the seed-0 teacher with the original recipe (constant Adam 1e-3)")
    parser.add_argument("--teacher-check", action="store_true",
                        help="also train a seed-0 teacher for 60 epochs and the HDKD student distilled from it")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    parser.add_argument("--keep-text", type=Path, default=None, metavar="DIR",
                        help="copy each completed run's text artefacts (predictions.csv included) to DIR/<run>/, "
                             "e.g. docs/results/runs; with --dry-run, without training")
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    args.out = args.out.resolve()
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    sizes: Dict[str, List[int]] = {}
    for item in args.sizes:
        ds, _, values = item.partition("=")
        if ds not in DATASETS or not values:
            parser.error(f"--sizes {item}: expected DATASET=N[,N] with DATASET one of {list(DATASETS)}")
        sizes[ds] = [int(v) for v in values.split(",")]
    args.sizes = sizes
    for ds in args.datasets:
        folder = args.root / DATASETS[ds][1][0].split("{root}/")[1]
        if not folder.is_dir():
            parser.error(f"--root {args.root}: {folder} does not exist (the study needs {ds} there)")

    jobs = build_jobs(args)
    by_name = {j.name: j for j in jobs}
    print(f"machine: {machine()}", flush=True)
    for j in jobs:
        j.status = run_state(j.run_dir)
    if args.dry_run:
        for j in jobs:
            print(f"{j.status:>10}  {j.name}")
        if args.keep_text:
            _report_kept(keep_text(jobs, args.keep_text), args.keep_text)
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # the image caches first, one dataset at a time (parallel runs would build the same cache twice)
    for ds in args.datasets:
        data_overrides = [o.format(root=args.root) for o in DATASETS[ds][1]]
        data_config = "brain_tumor" if ds == "brain" else ds
        subprocess.run([sys.executable, "-m", "hdkd_lightning.cli.data", "cache", f"data={data_config}",
                        *data_overrides, "data.image_size=64", "-q"], check=True)
    lock = threading.Lock()
    pending = [j for j in jobs if j.status != "completed"]
    for j in jobs:
        if j.status == "completed":
            print(f"done already: {j.name}")
    running: Dict[Future, Job] = {}
    # SIGTERM (kill, a batch scheduler's time limit) stops the study like Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= args.jobs:
                    break
                dep = by_name.get(job.needs) if job.needs else None
                if dep is not None and dep.status in ("failed", "blocked"):
                    job.status = "blocked"
                    pending.remove(job)
                    print(f"blocked (its teacher failed): {job.name}", flush=True)
                    continue
                if dep is not None and dep.status != "completed":
                    continue
                pending.remove(job)
                job.status = "running"
                running[pool.submit(run_job, job, args, lock)] = job
            if not running:
                if pending:  # only jobs waiting for a teacher that is not scheduled: cannot happen
                    raise RuntimeError(f"unschedulable runs: {[j.name for j in pending]}")
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                try:
                    job.status = fut.result()
                except Exception as exc:  # noqa: BLE001 - keep the other runs going
                    job.status = "failed"
                    print(f"failed to run {job.name}: {exc!r}", flush=True)
            save_state(args, jobs, started)
    except KeyboardInterrupt:
        stopped = stop_running(list(running.values()), lock)
        save_state(args, jobs, started)
        print(f"study stopped; {', '.join(stopped) or 'no run'} interrupted (recorded in study.json). "
              "Run the same command to continue: finished runs are skipped, the rest resume.", flush=True)
        pool.shutdown(wait=False, cancel_futures=True)
        return 130
    pool.shutdown()
    save_state(args, jobs, started)
    failed = [j.name for j in jobs if j.status != "completed"]
    print(f"study: {len(jobs) - len(failed)} of {len(jobs)} runs completed in "
          f"{(time.time() - started) / 3600:.2f} h (this invocation)", flush=True)
    if failed:
        print("not completed: " + ", ".join(failed), flush=True)
    report = subprocess.run([sys.executable, "-m", "hdkd_lightning.cli.report", str(args.out / "runs"),
                             f"--out={args.out / 'report'}"])
    if args.keep_text:
        _report_kept(keep_text(jobs, args.keep_text), args.keep_text)
    return 1 if failed or report.returncode else 0


def _report_kept(names: List[str], dest: Path) -> None:
    print(f"text artefacts of {len(names)} completed run(s) copied to {dest}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
