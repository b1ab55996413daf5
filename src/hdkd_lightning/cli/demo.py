"""hdkd-demo (``make demo``): teacher, plain student and HDKD student on the synthetic dataset.

Runs three ``hdkd-train`` jobs (``experiment=demo`` with ``model=teacher``, ``student``,
``distill``; the HDKD job uses the teacher just trained), then prints one table with the test
metrics, parameter counts and inference speed of each, and the paths of every artefact.
Extra arguments are passed to all three jobs (e.g. ``hdkd-demo trainer.max_epochs=2``).

The student and HDKD jobs use a higher learning rate (1e-3) and a 1-epoch warm-up instead of
the paper's 5e-5 / 5 epochs, because the demo trains for a few epochs instead of 200.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List

# the teacher is the costliest network per epoch; it gets fewer epochs to keep the demo short
STAGES = [
    ("teacher", "teacher", ["trainer.max_epochs=6"]),
    ("student", "student", ["model.optimizer.lr=1e-3", "model.scheduler.warmup_t=1", "trainer.max_epochs=10"]),
    ("hdkd", "distill", ["model.optimizer.lr=1e-3", "model.scheduler.warmup_t=1", "trainer.max_epochs=10"]),
]


HELP = """usage: hdkd-demo [key=value ...]

Teacher, plain student and HDKD student trained on the synthetic dataset (no download), then one
table that compares them: test metrics, parameter counts, inference speed, and where every file is.

It runs hdkd-train three times with experiment=demo: model=teacher, model=student, model=distill
(the HDKD job learns from the teacher just trained). The student and HDKD jobs use a learning rate
of 1e-3 and a 1-epoch warm-up instead of the paper's 5e-5 and 5 epochs, because the demo trains
for a few epochs instead of 200. Runs go to logs/demo/<time>/ (HDKD_LOG_DIR=<folder> replaces logs/).

Every key=value is passed to the three hdkd-train jobs (see hdkd-train --help).

Examples:
  hdkd-demo
  hdkd-demo trainer.max_epochs=2          # a quicker look
  hdkd-demo data.train_samples=240 seed=1

Exit status: 0 done; 2 a mistake in the command line or the data (one line says what to fix); 1 a bug
(a traceback). When a training job fails, the demo stops with that job's exit status."""


def stage_overrides(name: str, model: str, overrides: List[str], extra: List[str], root: Path) -> List[str]:
    """The hdkd-train command line of one stage, runs under ``root`` (the user's keys last: they win)."""
    args = ["experiment=demo", f"model={model}", f"task_name=demo_{name}", f"hydra.run.dir={root / name}",
            *overrides, *extra]
    if model == "distill":
        args.append(f"model.teacher.ckpt_path={root / 'teacher' / 'checkpoints' / 'best.ckpt'}")
    return args


def _inference_speed(ckpt: Path, batch: int = 32, repeats: int = 5) -> float:
    import torch

    from hdkd_lightning.checkpoints import network_from_checkpoint

    net, meta = network_from_checkpoint(ckpt)
    x = torch.randn(batch, 3, meta["image_size"], meta["image_size"])
    times = []
    with torch.inference_mode():
        net(x)
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return batch / sorted(times)[len(times) // 2]


def main(argv: List[str] = None) -> None:
    extra = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in extra):
        print(HELP)
        return
    from hdkd_lightning.cli._common import fail, precheck, prepare_process
    from hdkd_lightning.errors import UserError

    prepare_process()
    root = Path(os.environ.get("HDKD_LOG_DIR", "logs")).resolve() / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:  # a mistake in the extra keys: one line now, not after the teacher has trained
        for name, model, overrides in STAGES:
            precheck("train", stage_overrides(name, model, overrides, extra, root))
    except UserError as exc:
        fail("hdkd-demo", str(exc))
    train = [sys.executable, "-m", "hdkd_lightning.cli.train"]
    rows: Dict[str, Dict] = {}
    started = time.time()
    for name, model, overrides in STAGES:
        run_dir = root / name
        cmd = train + stage_overrides(name, model, overrides, extra, root)
        print(f"\n=== demo: training {name} ({' '.join(cmd[3:])})", flush=True)
        t0 = time.time()
        job = subprocess.run(cmd)
        if job.returncode != 0:  # the job printed its own error (one line, or a bug's traceback) above
            print(f"hdkd-demo: the {name} job failed (exit status {job.returncode}); stopping", file=sys.stderr)
            sys.exit(job.returncode)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        ckpt = run_dir / "checkpoints" / "best.ckpt"
        rows[name] = {"metrics": metrics, "run_dir": str(run_dir), "checkpoint": str(ckpt),
                      "train_minutes": (time.time() - t0) / 60, "img_s": _inference_speed(ckpt)}
    _report(rows, root, time.time() - started)


def _report(rows: Dict[str, Dict], root: Path, seconds: float) -> None:
    import rich
    from rich.table import Table

    table = Table(title=f"HDKD demo on synthetic data ({seconds / 60:.1f} min)")
    for col in ("model", "accuracy", "balanced acc.", "macro F1", "params", "img/s (batch 32)", "minutes"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, r in rows.items():
        m = r["metrics"]
        table.add_row(name, f"{m['accuracy']:.3f}", f"{m['balanced_accuracy']:.3f}", f"{m['f1_macro']:.3f}",
                      f"{m.get('params', 0) / 1e6:.2f} M", f"{r['img_s']:.0f}", f"{r['train_minutes']:.1f}")
    rich.print(table)
    gain = rows["hdkd"]["metrics"]["balanced_accuracy"] - rows["student"]["metrics"]["balanced_accuracy"]
    rich.print(f"HDKD vs plain student, balanced accuracy: {gain:+.3f}")
    for name, r in rows.items():
        rich.print(f"[bold]{name}[/]: {r['run_dir']}  (metrics.json, per_class.csv, predictions.csv, "
                   f"confusion_matrix.png, checkpoints/best.ckpt)")
    summary = root / "demo_summary.json"
    summary.write_text(json.dumps(rows, indent=2))
    rich.print(f"summary: {summary}")


if __name__ == "__main__":
    main()
