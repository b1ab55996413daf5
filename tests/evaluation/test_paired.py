"""evaluation/paired.py: the paired hierarchical bootstrap against a plain loop, and the pairing of runs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from hdkd_lightning.evaluation.paired import (
    PairingError,
    Predictions,
    balanced_accuracy,
    pair_predictions,
    paired_bootstrap,
    read_predictions,
)


def _made_up_seeds(rng, sizes, num_classes=3):
    """Per seed: labels (the last class rare, so that resamples sometimes miss it) and two models' correctness."""
    seeds = []
    for n in sizes:
        labels = rng.choice(num_classes, size=n, p=[0.55, 0.4, 0.05])
        model = rng.random(n) < 0.75
        base = rng.random(n) < 0.6
        seeds.append((labels, model, base))
    return seeds


def _loop_balanced_accuracy(labels, correct, num_classes):
    recalls = []
    for c in range(num_classes):
        members = [i for i in range(len(labels)) if labels[i] == c]
        if members:
            recalls.append(sum(bool(correct[i]) for i in members) / len(members))
    return sum(recalls) / len(recalls)


def _loop_bootstrap(seeds, num_classes, resamples, seed):
    """The same draws as paired_bootstrap (its docstring), scored one resample and one seed at a time."""
    rng = np.random.default_rng(seed)
    n_seeds, longest = len(seeds), max(len(s[0]) for s in seeds)
    drawn = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    uniforms = [rng.random((resamples, longest)) for _ in range(n_seeds)]
    stats = []
    for b in range(resamples):
        total = 0.0
        for slot in range(n_seeds):
            labels, model, base = seeds[drawn[b, slot]]
            n = len(labels)
            idx = [min(int(u * n), n - 1) for u in uniforms[slot][b, :n]]
            total += (_loop_balanced_accuracy(labels[idx], model[idx], num_classes)
                      - _loop_balanced_accuracy(labels[idx], base[idx], num_classes))
        stats.append(total / n_seeds)
    return np.percentile(stats, [2.5, 97.5])


def test_paired_bootstrap_matches_a_plain_loop_with_the_same_draws():
    rng = np.random.default_rng(7)
    seeds = _made_up_seeds(rng, sizes=[60, 45, 52])  # test sets of different sizes are allowed
    result = paired_bootstrap(seeds, num_classes=3, resamples=300, seed=3)
    # the point estimates: sklearn's balanced accuracy of each model, seed by seed
    expected = [balanced_accuracy_score(lab, np.where(m, lab, (lab + 1) % 3))
                - balanced_accuracy_score(lab, np.where(b, lab, (lab + 1) % 3)) for lab, m, b in seeds]
    assert result["differences"] == pytest.approx(expected, abs=1e-12)
    assert result["mean"] == pytest.approx(np.mean(expected), abs=1e-12)
    low, high = _loop_bootstrap(seeds, 3, resamples=300, seed=3)
    assert (result["low"], result["high"]) == pytest.approx((low, high), abs=1e-12)
    assert result["low"] < result["mean"] < result["high"]
    assert (result["resamples"], result["seed"], result["level"]) == (300, 3, 0.95)
    # the same seed gives the same interval; another seed a different one
    assert paired_bootstrap(seeds, 3, 300, 3)["low"] == result["low"]
    assert paired_bootstrap(seeds, 3, 300, 4)["low"] != result["low"]


def test_identical_models_differ_by_exactly_zero_and_a_better_model_is_ahead():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    right = rng.random(200) < 0.6
    same = paired_bootstrap([(labels, right, right)] * 3, 4, resamples=200)
    assert same["differences"] == [0.0, 0.0, 0.0] and same["low"] == same["high"] == 0.0
    better = paired_bootstrap([(labels, right | (labels == 0), right)] * 2, 4, resamples=200)
    assert better["low"] > 0  # the model is right on everything the baseline gets right, and more
    assert paired_bootstrap([(labels, right, right)], 4, resamples=0)["low"] is None


def test_balanced_accuracy_leaves_out_absent_classes():
    labels = np.array([0, 0, 2, 2, 2])
    correct = np.array([True, False, True, True, False])
    assert balanced_accuracy(labels, correct, 4) == pytest.approx((0.5 + 2 / 3) / 2)


def _write_predictions(path, rows, classes=("a", "b")):
    path.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,predicted," + ",".join(f"prob_{c}" for c in classes)]
    lines += [f"{p},{label},{pred}," + ",".join("0.5" for _ in classes) for p, label, pred in rows]
    (path / "predictions.csv").write_text("\n".join(lines) + "\n")


def test_runs_pair_by_image_path_under_their_own_data_roots(tmp_path):
    _write_predictions(tmp_path / "m", [("/data/x/Testing/1.jpg", "a", "a"), ("/data/x/Testing/2.jpg", "b", "a"),
                                        ("/data/x/Testing/3.jpg", "", "b")])
    _write_predictions(tmp_path / "s", [("/mnt/y/Testing/2.jpg", "b", "b"), ("/mnt/y/Testing/1.jpg", "a", "b"),
                                        ("/mnt/y/Testing/3.jpg", "", "a")])
    model, base = read_predictions(tmp_path / "m", "/data/x/"), read_predictions(tmp_path / "s", "/mnt/y")
    assert model.keys == ("Testing/1.jpg", "Testing/2.jpg") and model.unlabelled == {"Testing/3.jpg"}
    labels, model_right, base_right = pair_predictions(model, base)
    assert labels.tolist() == [0, 1] and model_right.tolist() == [True, False] and base_right.tolist() == [False, True]
    assert read_predictions(tmp_path / "nothing") is None
    with pytest.raises(PairingError, match="tested on different images: 2 labelled images only in the first"):
        pair_predictions(model, read_predictions(tmp_path / "s"), "runs/m", "runs/s")  # roots not taken off


def test_pairs_that_cannot_be_compared_are_refused_by_name():
    def preds(keys, labels, classes=("a", "b")):
        return Predictions(tuple(keys), np.array(labels), np.array(labels), classes, frozenset())

    with pytest.raises(PairingError, match="runs/hdkd/seed0 and runs/student/seed0 label the same image differently"):
        pair_predictions(preds(["1", "2"], [0, 1]), preds(["2", "1"], [0, 0]), "runs/hdkd/seed0", "runs/student/seed0")
    with pytest.raises(PairingError, match="different classes"):
        pair_predictions(preds(["1"], [0]), preds(["1"], [0], ("a", "c")))
    with pytest.raises(PairingError, match="1 labelled images only in the first, 0 only in the second"):
        pair_predictions(preds(["1", "2"], [0, 1]), preds(["1"], [0]))
