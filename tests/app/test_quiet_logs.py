"""What a tiny training run prints: each event once, no known third-party noise, one line per user error; and
the tiny model, which predicts one class for every test image, is called out in run.json."""

from __future__ import annotations

import json
import re
from collections import Counter

from tests.app.conftest import TINY

_TIME = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]")  # Hydra's timestamp: the same event twice differs only there


def _event(line: str) -> str:
    """A log line without its decoration, so that "INFO: x" and "[time][logger][INFO] - x" compare equal."""
    line = _TIME.sub("", line.strip())
    line = re.sub(r"^\[[\w.]+\]\[(INFO|WARNING|ERROR)\] - ", "", line)
    return re.sub(r"^(INFO|WARNING|ERROR): ", "", line)


def test_a_tiny_run_prints_each_event_once_and_no_known_noise(runner):
    proc = runner.run("train", TINY + ["task_name=quiet_logs"])
    lines = (proc.stdout + proc.stderr).splitlines()
    info = [_event(line) for line in lines if "INFO" in line]
    assert info, "no INFO lines at all: the check below would prove nothing"
    twice = [text for text, n in Counter(info).items() if n > 1]
    assert not twice, f"logged more than once: {twice}"
    text = "\n".join(lines)
    assert "LeafSpec" not in text and "litlogger" not in text
    assert "Total FLOPs" not in text

    run = runner.latest_run("quiet_logs")
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "completed"
    # the tiny teacher predicts one class for all 24 test images (a collapse the run must not hide)
    assert state["warnings"] and "for every one of the 24 images" in state["warnings"][0]
    assert runner.metrics(run)["warnings"] == state["warnings"]


def test_a_user_error_is_one_line(runner):
    proc = runner.run("train", TINY + ["data.batch_size=0", "task_name=quiet_error"], check=False)
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "batch_size=0" in line]
    assert errors == ["hdkd-train: error: data.batch_size=0 must be >= 1."]
