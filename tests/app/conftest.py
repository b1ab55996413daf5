"""Helpers to run the real commands on tiny synthetic data in a temporary log directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

# 32 px images, a few dozen samples, one epoch: seconds per run on 2 CPU cores
TINY = ["experiment=demo", "data.image_size=32", "data.train_samples=48", "data.val_samples=24",
        "data.test_samples=24", "data.num_workers=0", "trainer.max_epochs=1", "callbacks.rich_progress_bar=null",
        "data.batch_size=16", "report.bootstrap=200"]


class Runner:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_dir = root / "logs"
        self.env = dict(os.environ, HDKD_LOG_DIR=str(self.log_dir), HDKD_CACHE_DIR=str(root / "cache"),
                        WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="1")
        self.cwd = root / "elsewhere"  # commands must work from any directory
        self.cwd.mkdir(parents=True, exist_ok=True)

    def run(self, module: str, args: List[str], check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", f"hdkd_lightning.cli.{module}", *args], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-5000:]}")
        return proc

    def latest_run(self, task: str) -> Path:
        runs = sorted((self.log_dir / task / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
        return runs[-1]

    @staticmethod
    def metrics(run_dir: Path) -> dict:
        return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def runner(tmp_path_factory) -> Runner:
    return Runner(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="session")
def teacher_run(runner) -> Path:
    """One trained tiny teacher (task teacher_tiny), shared by the distillation tests."""
    runner.run("train", TINY + ["model=teacher", "task_name=teacher_tiny", "trainer.max_epochs=2"])
    return runner.latest_run("teacher_tiny")


def make_image_folder(root: Path, classes=("benign", "malignant", "other"), n_train=14, n_test=6, size=40) -> Path:
    """The original code's layout, train/<class>/*.png and test/<class>/*.png, with learnable images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                img[..., k % 3] += np.uint8(120)  # class = dominant colour channel
                Image.fromarray(img).save(folder / f"{split}_{name}_{i:03d}.png")
    return root


FOLDER = ["data=image_folder", "data.image_size=32", "data.num_workers=0", "trainer=cpu", "trainer.max_epochs=1",
          "callbacks.rich_progress_bar=null", "data.batch_size=8", "report.bootstrap=200"]


@pytest.fixture(scope="session")
def image_folder(runner) -> Path:
    return make_image_folder(runner.root / "folder_data")


@pytest.fixture(scope="session")
def folder_runs(runner, image_folder):
    """Teacher, plain student and HDKD trained for a moment on the 3-class image folder (best checkpoints)."""
    data = FOLDER + [f"data.root={image_folder}"]
    runner.run("train", data + ["model=teacher", "task_name=ship_teacher"])
    runner.run("train", data + ["model=student", "task_name=ship_student"])
    runner.run("train", data + ["model=distill", "task_name=ship_hdkd", "model.teacher.experiment=ship_teacher"])
    return {kind: runner.latest_run(f"ship_{kind}") / "checkpoints" / "best.ckpt"
            for kind in ("teacher", "student", "hdkd")}


def tiny_checkpoint(path: Path) -> Path:
    """A project checkpoint of a small untrained teacher (3 classes, 32 px), written without training."""
    import timm
    import torch

    import hdkd_lightning  # noqa: F401  (registers the networks with timm)
    from hdkd_lightning.checkpoints.format import META_KEY, build_meta

    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "img_size": 32, "depths": [1, 1, 1]}
    net = timm.create_model("hdkd_teacher", **kwargs).eval()
    torch.save({META_KEY: build_meta("teacher", "hdkd_teacher", kwargs, ["a", "b", "c"], 32, prefix="net."),
                "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    return path
