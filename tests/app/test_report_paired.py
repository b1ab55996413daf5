"""hdkd-report's paired differences and learning curve on made-up run folders (predictions.csv written
here, no training)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
# how often each model is right, by training images per class: the curve the report should draw
SKILL = {"teacher": {50: 0.62, 150: 0.72}, "student": {50: 0.50, 150: 0.62}, "hdkd": {50: 0.58, 150: 0.68}}


def _run(root, name, model, seed, size, labels, rng, data_root="/data/brain", skill=None, extra=None,
         predictions=True, images=None):
    """A completed run folder: config, run.json, predictions.csv and the metrics.json that goes with it."""
    from omegaconf import OmegaConf

    run = root / name
    run.mkdir(parents=True)
    model_cfg = ({"_target_": "hdkd_lightning.lit.distill.DistillModule", "loss": {"lambda_feat": 10.0, "kind": "soft"},
                  "teacher": {"ckpt_path": f"/trained/brain-n{size}/teacher/seed{seed}/checkpoints/best.ckpt"}}
                 if model == "hdkd" else
                 {"_target_": "hdkd_lightning.lit.teacher.TeacherModule", "net": {"arch": f"hdkd_{model}"}})
    model_cfg.update({"optimizer": {"_target_": "torch.optim.AdamW"}}, **(extra or {}))
    cfg = {"seed": seed, "data": {"source": "brain_tumor", "seed": seed, "train_per_class": size, "root": data_root},
           "model": model_cfg, "trainer": {"max_epochs": 30}}
    OmegaConf.save(OmegaConf.create(cfg), run / "config_resolved.yaml")
    right = rng.random(len(labels)) < (skill if skill is not None else SKILL[model][size])
    predicted = np.where(right, labels, (labels + 1 + rng.integers(0, 3, len(labels))) % 4)
    bal = balanced_accuracy_score(labels, predicted)
    (run / "run.json").write_text(json.dumps({"status": "completed", "best_score": bal}))
    (run / "metrics.json").write_text(json.dumps({"balanced_accuracy": bal, "accuracy": float(right.mean()),
                                                  "f1_macro": bal, "auroc_macro": 0.9}))
    if predictions:
        names = images or [f"Testing/{CLASSES[c]}/{i:04d}.jpg" for i, c in enumerate(labels)]
        with open(run / "predictions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "predicted", *[f"prob_{c}" for c in CLASSES]])
            for path, label, pred in zip(names, labels, predicted):
                w.writerow([f"{data_root}/{path}", CLASSES[label], CLASSES[pred], *["0.25"] * 4])
    return bal


def _study(root, sizes=(50, 150), seeds=(0, 1, 2), n_images=240):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n_images)  # one test split for every run, as in the study
    scores = {}
    for size in sizes:
        for seed in seeds:
            for model in ("teacher", "student", "hdkd"):
                # one run trained with the dataset elsewhere: its images still pair by their path under data.root
                data_root = "/elsewhere/brain_tumor_mri" if (model, seed, size) == ("hdkd", 1, 150) else "/data/brain"
                scores[(model, size, seed)] = _run(root, f"brain-n{size}/{model}/seed{seed}", model, seed, size, labels,
                                                   rng, data_root=data_root)
    return labels, scores


def test_report_pairs_each_model_with_the_student_seed_by_seed_and_draws_the_learning_curve(tmp_path):
    from hdkd_lightning.cli.report import main

    labels, scores = _study(tmp_path / "runs")
    rng = np.random.default_rng(1)
    # a recipe check at one size only: its own row and comparison, but no line on the curve
    _run(tmp_path / "runs", "brain-n150/teacher_adam/seed0", "teacher", 0, 150, labels, rng,
         extra={"optimizer": {"_target_": "torch.optim.Adam"}})
    out = tmp_path / "report"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--no-cost"]) == 0

    paired = {(r["panel"], r["model"]): r for r in csv.DictReader(open(out / "paired.csv"))}
    assert set(paired) == {("brain_tumor, train 50/class", "teacher"), ("brain_tumor, train 50/class", "hdkd"),
                           ("brain_tumor, train 150/class", "teacher optimizer=AdamW"),
                           ("brain_tumor, train 150/class", "hdkd"), ("brain_tumor, train 150/class", "teacher optimizer=Adam")}
    for size in (50, 150):
        for model in ("teacher", "hdkd"):
            label = "teacher optimizer=AdamW" if (model, size) == ("teacher", 150) else model
            row = paired[(f"brain_tumor, train {size}/class", label)]
            assert row["baseline"] == "student" and row["seeds"] == "0 1 2" and row["test_images"] == "240 240 240"
            # per seed: exactly the difference of the two runs' balanced accuracies on their whole test sets
            expected = [scores[(model, size, s)] - scores[("student", size, s)] for s in range(3)]
            assert [float(d) for d in row["differences"].split()] == pytest.approx(expected, abs=1e-12)
            assert float(row["mean_difference"]) == pytest.approx(np.mean(expected), abs=1e-12)
            assert float(row["ci_low"]) <= float(row["mean_difference"]) <= float(row["ci_high"])
            assert int(row["model_ahead"]) == sum(d > 0 for d in expected)
            assert int(row["baseline_ahead"]) == sum(d < 0 for d in expected)
            assert (row["resamples"], row["bootstrap_seed"]) == ("2000", "0")
    assert paired[("brain_tumor, train 150/class", "teacher optimizer=Adam")]["seeds"] == "0"

    md = (out / "report.md").read_text()
    assert "## Paired differences" in md and "![paired differences per seed, mean and interval](paired.png)" in md
    assert "## Learning curve" in md and "![learning curve](learning_curve.png)" in md
    assert "brain_tumor at 50, 150" in md
    hdkd = paired[("brain_tumor, train 150/class", "hdkd")]
    per_seed = ", ".join(f"{float(d) * 100:+.1f} (seed {s})" for s, d in zip("012", hdkd["differences"].split()))
    assert (f"| brain_tumor, train 150/class | hdkd | student | 3 | {per_seed} | "
            f"**{float(hdkd['mean_difference']) * 100:+.1f}** | {float(hdkd['ci_low']) * 100:+.1f} to "
            f"{float(hdkd['ci_high']) * 100:+.1f} | {hdkd['model_ahead']} / {hdkd['baseline_ahead']} / 0 |") in md
    for name in ("paired.png", "learning_curve.png"):
        assert (out / name).stat().st_size > 20_000


def test_the_curve_joins_one_model_across_sizes_with_its_paired_difference(tmp_path):
    from hdkd_lightning.evaluation.comparison import build_comparison, find_runs, load_run

    labels, scores = _study(tmp_path)
    _run(tmp_path, "brain-n150/teacher_adam/seed0", "teacher", 0, 150, labels, np.random.default_rng(2),
         extra={"optimizer": {"_target_": "torch.optim.Adam"}})
    report = build_comparison([load_run(d) for d in find_runs([tmp_path])], with_cost=False, resamples=200)
    curve = report["curves"]["brain_tumor"]
    assert curve["sizes"] == [50.0, 150.0]
    # the grid's teacher is "teacher optimizer=AdamW" at 150 (two teachers there) and "teacher" at 50:
    # one line, under its short name; the Adam teacher, at one size only, is not a line
    assert [line["label"] for line in curve["lines"]] == ["teacher", "student", "hdkd"]
    for line in curve["lines"]:
        assert line["sizes"] == [50.0, 150.0]
        for size, mean, values in zip((50, 150), line["means"], line["values"]):
            assert values == pytest.approx([scores[(line["label"], size, s)] for s in range(3)])
            assert mean == pytest.approx(np.mean(values))
    hdkd = curve["lines"][2]["difference"]
    paired = {(c["train_per_class"], c["model"]): c for c in report["paired"]["comparisons"]}
    assert hdkd["baseline"] == "student" and hdkd["sizes"] == [50.0, 150.0]
    assert hdkd["mean"] == [paired[(50, "hdkd")]["mean"], paired[(150, "hdkd")]["mean"]]
    assert hdkd["low"] == [paired[(50, "hdkd")]["low"], paired[(150, "hdkd")]["low"]]
    assert curve["lines"][1]["difference"] is None  # the baseline itself


def test_runs_without_predictions_or_on_other_images_are_named_not_paired(tmp_path):
    from hdkd_lightning.cli.report import main

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 120)
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        _run(runs, f"brain-n150/student/seed{seed}", "student", seed, 150, labels, rng)
        _run(runs, f"brain-n150/teacher/seed{seed}", "teacher", seed, 150, labels, rng, predictions=seed != 2)
        # seed 1's HDKD run was tested on other images (another split)
        other = [f"Testing/other/{i}.jpg" for i in range(120)] if seed == 1 else None
        _run(runs, f"brain-n150/hdkd/seed{seed}", "hdkd", seed, 150, labels, rng, images=other)
    # a panel whose runs predate predictions.csv (the committed runs of docs/results/runs)
    for seed in (0, 1):
        for model in ("student", "hdkd"):
            _run(runs, f"brain-n50/{model}/seed{seed}", model, seed, 50, labels, rng, predictions=False)
    out = tmp_path / "report"
    assert main([str(runs), "--out", str(out), "--no-cost"]) == 0
    paired = {r["model"]: r for r in csv.DictReader(open(out / "paired.csv"))}
    assert set(paired) == {"teacher", "hdkd"}  # only the 150/class panel
    assert paired["teacher"]["seeds"] == "0 1" and paired["hdkd"]["seeds"] == "0 2"
    md = (out / "report.md").read_text()
    assert "brain_tumor, train 150/class | teacher: no predictions.csv for seed(s) 2" in md
    assert (f"brain_tumor, train 150/class | hdkd vs student, seed 1: refused, {runs}/brain-n150/hdkd/seed1 and "
            f"{runs}/brain-n150/student/seed1 were tested on different images") in md
    assert "brain_tumor, train 50/class: none of its 4 runs has a predictions.csv" in md

    # the teacher as the baseline; a name that is no row is said, per panel
    assert main([str(runs / "brain-n150"), "--out", str(out), "--no-cost", "--baseline", "teacher"]) == 0
    paired = {r["model"]: r for r in csv.DictReader(open(out / "paired.csv"))}
    assert set(paired) == {"student", "hdkd"} and paired["student"]["baseline"] == "teacher"
    assert paired["student"]["seeds"] == "0 1" and int(paired["student"]["baseline_ahead"]) == 2 - int(
        paired["student"]["model_ahead"]) - int(paired["student"]["tied"])
    assert main([str(runs / "brain-n150"), "--out", str(out), "--no-cost", "--baseline", "nobody"]) == 0
    assert "brain_tumor, train 150/class: no row 'nobody' to compare with" in (out / "report.md").read_text()
    assert not (out / "paired.csv").exists() and not (out / "paired.png").exists()  # the earlier ones are gone
