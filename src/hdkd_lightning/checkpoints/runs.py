"""Where runs live, what state each is in, and how later commands find them.

Layout (``paths.log_dir`` defaults to ``./logs``)::

    <log_dir>/<task_name>/runs/<time>/            one hdkd-train run
        run.json                                  its state (below)
        checkpoints/best.ckpt, checkpoints/last.ckpt
        metrics.json, per_class.csv, predictions.csv, confusion_matrix.png, splits.csv
    <log_dir>/<task_name>/multiruns/<time>/<job>/  one job of a sweep, same content

``run.json`` is written atomically by ``hdkd-train``: ``status`` is ``running`` from the start
(again when the run is resumed), ``completed`` once training and the final test are done, and
``failed`` when the run stopped with an error (the message is kept). A run killed outright
(SIGKILL, power loss) stays ``running``: it is *unfinished*, and ``ckpt_path=last`` resumes
it. Other fields: ``task_name``, ``started_at`` / ``finished_at`` (UTC, ISO 8601), ``argv``,
``host``, ``monitor`` and ``best_score`` (the checkpoint callback's best validation value),
``best_checkpoint``, ``test`` (the headline test metrics), ``warnings`` (the test's caveats from
``metrics.json``, e.g. one class predicted for every image: "completed" is no verdict on the
model) and ``error``.

"Latest completed" (the teacher of a distillation run) is the completed run that finished
last. Runs written before ``run.json`` existed count as completed when their ``metrics.json``
(written at the very end of a run) and ``checkpoints/best.ckpt`` are present.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from hdkd_lightning.files import write_json_atomic

__all__ = ["RUN_FILE", "RunState", "read_run_state", "mark_run_started", "update_run", "mark_run_finished",
           "mark_run_failed",
           "iter_run_dirs", "find_latest_checkpoint", "find_latest_completed_run"]

RUN_FILE = "run.json"
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunState:
    """What ``run.json`` says about a run directory (``status`` ``unknown`` when there is none)."""

    run_dir: Path
    status: str
    data: Dict[str, Any]

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def finished_at(self) -> str:
        return str(self.data.get("finished_at") or "")


def read_run_state(run_dir: Path) -> RunState:
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("status") in (RUNNING, COMPLETED, FAILED):
        return RunState(run_dir, data["status"], data)
    # a run from before run.json: metrics.json is written last, so its presence means "done"
    if (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file():
        finished = datetime.fromtimestamp((run_dir / "metrics.json").stat().st_mtime, timezone.utc)
        return RunState(run_dir, COMPLETED, {"finished_at": finished.isoformat(timespec="seconds"), "legacy": True})
    return RunState(run_dir, "unknown", {})


def _write(run_dir: Path, data: Dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / RUN_FILE, data)


def mark_run_started(run_dir: Path, task_name: str, resumed_from: Optional[str] = None) -> None:
    """``status: running``; a resumed run keeps its first ``started_at`` and counts its resumes."""
    old = read_run_state(run_dir).data
    data = {"status": RUNNING, "task_name": task_name, "started_at": old.get("started_at") or _now(),
            "argv": list(sys.argv), "host": socket.gethostname(), "pid": os.getpid()}
    if resumed_from:
        data.update(resumed_from=str(resumed_from), resumes=int(old.get("resumes", 0)) + 1,
                    last_started_at=_now())
    _write(run_dir, data)


def update_run(run_dir: Path, **fields: Any) -> None:
    """Add ``fields`` to ``run.json`` without changing its state (e.g. the run's data record)."""
    data = dict(read_run_state(run_dir).data)
    data.update(fields)
    _write(run_dir, data)


def mark_run_finished(run_dir: Path, **fields: Any) -> None:
    data = dict(read_run_state(run_dir).data)
    data.update(fields, status=COMPLETED, finished_at=_now())
    data.pop("error", None)
    _write(run_dir, data)


def mark_run_failed(run_dir: Path, error: BaseException) -> None:
    data = dict(read_run_state(run_dir).data)
    data.update(status=FAILED, failed_at=_now(), error=f"{type(error).__name__}: {error}"[:2000])
    _write(run_dir, data)


def iter_run_dirs(log_dir: Path, task_name: str) -> Iterator[Path]:
    """The run directories of a task: single runs and sweep jobs."""
    root = Path(log_dir) / task_name
    for pattern in ("runs/*", "multiruns/*/*"):
        for d in sorted(root.glob(pattern)):
            if d.is_dir():
                yield d


def find_latest_checkpoint(log_dir: Path, task_name: str, name: str) -> Optional[Path]:
    """The most recently written ``checkpoints/<name>`` of ``task_name`` (any state: for resuming)."""
    candidates = [d / "checkpoints" / name for d in iter_run_dirs(log_dir, task_name)]
    candidates = [c for c in candidates if c.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def find_latest_completed_run(log_dir: Path, task_name: str) -> Optional[RunState]:
    """The completed run of ``task_name`` with a best checkpoint that finished last."""
    done: List[RunState] = [s for s in map(read_run_state, iter_run_dirs(log_dir, task_name))
                            if s.completed and (s.run_dir / "checkpoints" / "best.ckpt").is_file()]
    return max(done, key=lambda s: (s.finished_at, str(s.run_dir))) if done else None
