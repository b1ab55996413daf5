"""Reporting end to end: every run's artefacts, calibration stored and used, training curves across a
resume, hdkd-explain."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from tests.app.conftest import FOLDER, TINY

from hdkd_lightning.checkpoints import read_checkpoint


def _probs(path):
    with open(path) as fh:
        return {r["path"]: [float(v) for k, v in r.items() if k.startswith("prob_")] for r in csv.DictReader(fh)}


def test_a_training_run_leaves_every_artefact_and_curves_over_a_resume(runner):
    runner.run("train", TINY + ["model=student", "task_name=curves"])
    run = runner.latest_run("curves")
    runner.run("train", TINY + ["model=student", "task_name=curves", "ckpt_path=last", "trainer.max_epochs=3"])
    for name in ("metrics.json", "per_class.csv", "predictions.csv", "confusion_matrix.png", "roc_curves.png",
                 "pr_curves.png", "reliability.png", "report.html", "training_curves.png"):
        assert (run / name).is_file(), name
    from hdkd_lightning.evaluation.figures import read_epoch_metrics

    series = read_epoch_metrics(run / "csv" / "metrics.csv")
    assert [e for e, _ in series["val/balanced_accuracy"]] == [0, 1, 2]  # the whole history, resume included
    assert [e for e, _ in series["train/loss_epoch"]] == [0, 1, 2]
    metrics = runner.metrics(run)
    assert metrics["calibration"]["bins"] == 15 and metrics["confidence_intervals"]["resamples"] == 200
    assert {"sensitivity", "specificity", "ppv", "npv"} <= set(metrics["per_class"]["class_0"])


def _plain_ece(probs, labels, bins=15):
    conf, pred = probs.max(1), probs.argmax(1)
    which = np.clip(np.floor(conf * bins).astype(int), 0, bins - 1)  # bins [k/15, (k+1)/15), 1.0 in the last
    return sum(abs((pred[which == k] == labels[which == k]).mean() - conf[which == k].mean()) * (which == k).mean()
               for k in range(bins) if (which == k).any())


def test_calibration_is_fitted_on_val_stored_and_used_by_predict(runner, folder_runs, image_folder, tmp_path):
    # six epochs: better than chance on validation (after one, the fit runs to its bound and is refused)
    runner.run("train", FOLDER + [f"data.root={image_folder}", "model=distill", "task_name=calibrated_hdkd",
                                  "model.teacher.experiment=ship_teacher", "trainer.max_epochs=6"])
    ckpt = tmp_path / "hdkd.ckpt"
    shutil.copy(runner.latest_run("calibrated_hdkd") / "checkpoints" / "best.ckpt", ckpt)
    before = read_checkpoint(ckpt)
    eval_dir = tmp_path / "eval"
    runner.run("evaluate", [f"ckpt_path={ckpt}", "data=image_folder", f"data.root={image_folder}", "data.num_workers=0",
                            "trainer=cpu", f"hydra.run.dir={eval_dir}", "calibrate=true"])
    after = read_checkpoint(ckpt)
    t = after["hdkd"]["temperature"]
    assert 0.05 <= t <= 20 and after["hdkd"]["calibration"]["fitted_on"] == "val"
    assert all((after["state_dict"][k] == v).all() for k, v in before["state_dict"].items())  # weights untouched
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["temperature"] == pytest.approx(t) and "ece_uncalibrated" in cal
    # both ECEs against a plain numpy computation on the written predictions (15 equal-width bins)
    with open(eval_dir / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    names = [k[len("prob_"):] for k in rows[0] if k.startswith("prob_")]
    probs = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    labels = np.array([names.index(r["label"]) for r in rows])
    with np.errstate(divide="ignore"):  # a probability that underflowed to 0 stays 0
        uncalibrated = np.exp(t * np.log(probs))  # p = softmax(z / T)  =>  softmax(z) = softmax(T log p)
    uncalibrated /= uncalibrated.sum(1, keepdims=True)
    assert cal["ece"] == pytest.approx(_plain_ece(probs, labels), abs=2e-6)
    assert cal["ece_uncalibrated"] == pytest.approx(_plain_ece(uncalibrated, labels), abs=2e-5)
    assert metrics["temperature_fit"]["val_ece_after"] <= metrics["temperature_fit"]["val_ece_before"] + 1e-9
    out = tmp_path / "pred.csv"
    runner.run("predict", [f"ckpt_path={ckpt}", f"input={image_folder / 'test'}", f"output={out}"])
    reference, got = _probs(eval_dir / "predictions.csv"), _probs(out)
    for path, probs in reference.items():
        assert got[path] == pytest.approx(probs, abs=1e-4)
    proc = runner.run("evaluate", [f"ckpt_path={ckpt}", "data=image_folder", f"data.root={image_folder}",
                                   "split=val", "calibrate=true", "trainer=cpu"], check=False)
    assert proc.returncode == 2 and "calibrate=true fits the temperature on the validation split" in \
        proc.stdout + proc.stderr


def test_explain_writes_one_png_per_image_and_an_index(runner, folder_runs, image_folder, tmp_path):
    out = tmp_path / "cam"
    runner.run("explain", [f"ckpt_path={folder_runs['hdkd']}", f"input={image_folder / 'test' / 'benign'}",
                           f"output_dir={out}", "target=malignant"])
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert len(rows) == 6 and {r["target"] for r in rows} == {"malignant"}
    assert all((out / r["png"]).stat().st_size > 5_000 for r in rows)
    assert "<img" in (out / "index.html").read_text()
    proc = runner.run("explain", [f"ckpt_path={folder_runs['hdkd']}", f"input={image_folder}", f"output_dir={out}",
                                  "target=tumour"], check=False)
    assert proc.returncode == 2 and "target=tumour: choose pred or one of the model's classes" in \
        proc.stdout + proc.stderr
