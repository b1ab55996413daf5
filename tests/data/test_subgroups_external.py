"""Subgroup results from HAM10000's metadata, and a HAM10000 model scored on an ISIC 2018 layout made of
HAM images (external data whose overlap with the model's training images is counted), as a user runs them."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hdkd_data_fixtures import HAM_CLASSES, ISIC_COLUMNS, make_ham

COMMON = ["data.image_size=32", "data.num_workers=0", "trainer=cpu", "trainer.max_epochs=1",
          "callbacks.rich_progress_bar=null", "data.batch_size=16", "report.bootstrap=50",
          "report.subgroup_min_images=3", "report.gradcam_per_class=0"]


def _run(tmp_path: Path, module: str, args, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, HDKD_LOG_DIR=str(tmp_path / "logs"), HDKD_CACHE_DIR=str(tmp_path / "cache"),
               WANDB_MODE="offline", WANDB_SILENT="true")
    proc = subprocess.run([sys.executable, "-m", f"hdkd_lightning.cli.{module}", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _latest(tmp_path: Path, task: str) -> Path:
    return max((tmp_path / "logs" / task / "runs").iterdir(), key=lambda p: p.stat().st_mtime)


def _rows(path: Path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _isic_from_ham(ham: Path, splits_csv: Path, out: Path) -> int:
    """An ISIC 2018 layout of the same photographs: all of them as ISIC training images, the HAM run's training
    images also as the official ISIC test set, one of them under another name. Returns how many of the ISIC test
    images the model trained on (all of them)."""
    rows = _rows(splits_csv)
    folders = {"Training": rows,
               "Test": [r for r in rows if r["split"] == "train"]}
    for word, chosen in folders.items():
        images, truth = out / f"ISIC2018_Task3_{word}_Input", out / f"ISIC2018_Task3_{word}_GroundTruth"
        images.mkdir(parents=True)
        truth.mkdir()
        lines = []
        for i, r in enumerate(chosen):
            name = Path(r["path"]).stem if not (word == "Test" and i == 0) else "ISIC_9999999"  # renamed copy
            shutil.copyfile(ham / r["path"], images / f"{name}.jpg")
            lines.append([name] + ["1.0" if c.lower() == r["label"] else "0.0" for c in ISIC_COLUMNS])
        with open(truth / f"ISIC2018_Task3_{word}_GroundTruth.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([["image", *ISIC_COLUMNS], *lines])
    return len(folders["Test"])


def test_subgroups_from_ham_metadata_and_external_evaluation_on_isic(tmp_path):
    ham = make_ham(tmp_path / "ham", per_class=(8,) * 7)
    meta = ham / "HAM10000_metadata.csv"
    rows = _rows(meta)
    for i, r in enumerate(rows):  # two sexes, a few ages and sites
        r.update(sex="female" if i % 2 else "male", age=str(25 + 10 * (i % 5)), localization=["back", "face"][i % 2])
    with open(meta, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    _run(tmp_path, "train", COMMON + ["model=teacher", "data=ham10000", f"data.root={ham}", "task_name=ham_tiny"])
    run = _latest(tmp_path, "ham_tiny")
    metrics = json.loads((run / "metrics.json").read_text())
    subgroups = metrics["subgroups"]
    assert set(subgroups["attributes"]) == {"sex", "age", "site", "dx_type"}
    assert metrics["subgroup_source"] == str(meta.resolve())
    sexes = {g["value"]: g for g in subgroups["attributes"]["sex"]}
    assert set(sexes) == {"female", "male"} and sum(g["n"] for g in sexes.values()) == metrics["num_samples"]
    assert (run / "subgroups.csv").is_file() and (run / "subgroups.png").is_file()
    assert "Subgroups" in (run / "report.html").read_text()

    isic = tmp_path / "isic"
    seen = _isic_from_ham(ham, run / "splits.csv", isic)
    ckpt = run / "checkpoints" / "best.ckpt"
    _run(tmp_path, "evaluate", ["data=isic2018", f"data.root={isic}", f"ckpt_path={ckpt}", "data.num_workers=0",
                                "report.bootstrap=50", "report.gradcam_per_class=0"])
    external = json.loads((_latest(tmp_path, "eval") / "metrics.json").read_text())
    assert external["external_data"] is True and external["num_samples"] == seen
    assert external["images_seen_in_training"] == {"test": seen}  # the renamed copy counts too
    assert "class_map" not in external  # identical class names: nothing to map
    page = (_latest(tmp_path, "eval") / "report.html").read_text()
    assert "external data" in page.lower() and f"{seen} of" in page

    # a class map naming a class these data do not have: one line, exit 2, before any file is read
    proc = _run(tmp_path, "evaluate", ["data=isic2018", f"data.root={isic}", f"ckpt_path={ckpt}",
                                       "eval.class_map={MELANOMA:mel}"], check=False)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "eval.class_map: 'MELANOMA' is not a class of data=isic2018" in errors[0]
    assert HAM_CLASSES[0] in errors[0]  # the classes to choose from
