"""Kills at any moment leave a usable last.ckpt; a resumed deterministic run equals an uninterrupted one."""

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import torch
from tests.app.conftest import TINY

from hdkd_lightning.checkpoints import read_checkpoint
from hdkd_lightning.checkpoints.io import AtomicCheckpointIO

DETERMINISTIC = TINY + ["model=student", "trainer.deterministic=true", "test=false", "trainer.max_epochs=4",
                        "model.optimizer.lr=1e-3"]


def _write_big(path):
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(150_000_000)}, path)  # ~600 MB, seconds to write


def test_kill_during_checkpoint_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.arange(10.0), "epoch": 3}, path)
    proc = mp.get_context("fork").Process(target=_write_big, args=(path,))
    proc.start()
    deadline = time.time() + 60
    while not list(tmp_path.glob(".last.ckpt.*.tmp")) and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    ckpt = read_checkpoint(path)
    assert ckpt["epoch"] == 3 and torch.equal(ckpt["weights"], torch.arange(10.0))


def _final_weights(run_dir):
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def _popen(runner, args):
    log = open(runner.root / f"popen-{time.time_ns()}.log", "w+")  # read back if the run ends early
    proc = subprocess.Popen([sys.executable, "-m", "hdkd_lightning.cli.train", *args], cwd=runner.cwd,
                            env=runner.env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            proc.log.seek(0)
            raise AssertionError(f"training ended ({proc.returncode}) before it could be killed:\n"
                                 f"{proc.log.read()[-4000:]}")
        assert time.time() < deadline, "timed out"
        time.sleep(0.002)


def test_sigkill_mid_epoch_and_mid_write_then_resume_equals_uninterrupted(runner):
    runner.run("train", DETERMINISTIC + ["task_name=crash_reference"])
    reference = _final_weights(runner.latest_run("crash_reference"))

    # 1. kill in the middle of epoch 1 (after the first last.ckpt exists)
    proc = _popen(runner, DETERMINISTIC + ["task_name=crash_me"])
    ckpt_dir = lambda: [p for p in (runner.log_dir / "crash_me").glob("runs/*/checkpoints")]
    _wait_for(lambda: any((d / "last.ckpt").is_file() for d in ckpt_dir()), proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = runner.latest_run("crash_me")
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] >= 0

    # 2. resume, and kill again while a checkpoint is being written
    proc = _popen(runner, DETERMINISTIC + ["task_name=crash_me", "ckpt_path=last"])
    _wait_for(lambda: bool(list((run / "checkpoints").glob(".*.ckpt.*.tmp"))), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survived = read_checkpoint(run / "checkpoints" / "last.ckpt")  # intact: the old or the new complete file
    assert "state_dict" in survived

    # 3. resume to the end
    runner.run("train", DETERMINISTIC + ["task_name=crash_me", "ckpt_path=last"])
    final = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert final["epoch"] == 3
    resumed = final["state_dict"]
    assert resumed.keys() == reference.keys()
    worst = max((resumed[k].float() - reference[k].float()).abs().max().item() for k in reference)
    assert worst == 0.0, f"resumed weights differ from the uninterrupted run by {worst}"


def test_sigkill_then_resume_in_the_given_run_dir(runner, tmp_path):
    """hydra.run.dir=<dir> ... then the same command with ckpt_path=last continues <dir>, not the task's latest."""
    run = tmp_path / "my_run"
    args = DETERMINISTIC + ["task_name=crash_dir", f"hydra.run.dir={run}"]
    proc = _popen(runner, args)
    _wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # unfinished
    runner.run("train", DETERMINISTIC + ["task_name=crash_dir"])  # a newer, complete run of the same task
    runner.run("train", args + ["ckpt_path=last"])
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "completed" and state["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 3
