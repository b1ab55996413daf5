"""Metrics agree with scikit-learn, survive missing classes, and the artefact files are complete."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from hdkd_lightning.evaluation import metrics as M
from hdkd_lightning.evaluation.artefacts import RESULT_KEYS, write_evaluation_artefacts, write_predictions_csv
from hdkd_lightning.evaluation.console import format_metrics_table
from hdkd_lightning.evaluation.metrics import ClassificationMetrics, compute_metrics
from hdkd_lightning.evaluation.uploads import log_artefacts

NAMES = ["akiec", "bcc", "bkl", "mel", "nv"]


def imbalanced(n=300, c=5, seed=0, absent_target=(), never_predicted=(), skill=1.5):
    """Imbalanced labels and softmax probabilities that are informative but imperfect."""
    g = torch.Generator().manual_seed(seed)
    prior = torch.tensor([0.6 ** i for i in range(c)])
    prior[list(absent_target)] = 0
    labels = torch.multinomial(prior / prior.sum(), n, replacement=True, generator=g)
    logits = torch.randn(n, c, generator=g)
    logits[torch.arange(n), labels] += skill
    logits[:, list(never_predicted)] = -1e4
    return labels, torch.softmax(logits, dim=1)


def scored(labels, probs, names=NAMES, chunks=1):
    m = ClassificationMetrics(len(names), names)
    for lab, p in zip(labels.chunk(chunks), probs.chunk(chunks)):
        m.update(p, lab)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return m.compute()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scalars_and_confusion_matrix_match_sklearn(seed):
    labels, probs = imbalanced(seed=seed)
    y, p = labels.numpy(), probs.numpy()
    pred = p.argmax(1)
    r = scored(labels, probs)
    assert r["accuracy"] == pytest.approx((pred == y).mean(), abs=1e-6)
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-6)
    assert r["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)
    assert r["precision_macro"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0), abs=1e-6)
    assert r["recall_macro"] == pytest.approx(recall_score(y, pred, average="macro"), abs=1e-6)
    assert r["auroc_macro"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-6)
    assert r["confusion_matrix"] == confusion_matrix(y, pred, labels=range(5)).tolist()
    assert r["num_samples"] == len(y)
    f1_pc = f1_score(y, pred, average=None, labels=range(5), zero_division=0)
    for i, name in enumerate(NAMES):
        row = r["per_class"][name]
        assert row["f1"] == pytest.approx(f1_pc[i], abs=1e-6)
        assert row["support"] == int((y == i).sum())
        assert row["auroc"] == pytest.approx(roc_auc_score(y == i, p[:, i]), abs=1e-6)


def test_balanced_accuracy_when_a_class_is_never_predicted():
    labels, probs = imbalanced(seed=3, never_predicted=[1])
    y, pred = labels.numpy(), probs.numpy().argmax(1)
    assert 1 in y and 1 not in pred
    r = scored(labels, probs)
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-6)
    assert r["per_class"]["bcc"]["sensitivity"] == 0.0
    assert r["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-6)


def test_class_absent_from_targets_is_left_out_like_sklearn_and_does_not_crash():
    # class 2 never in the targets but sometimes predicted; class 4 in neither
    labels, probs = imbalanced(n=200, seed=4, absent_target=[2, 4], never_predicted=[4], skill=0.3)
    y, p = labels.numpy(), probs.numpy()
    pred = p.argmax(1)
    assert 2 in pred and 2 not in y and 4 not in y and 4 not in pred
    m = ClassificationMetrics(5, NAMES)
    m.update(probs, labels)
    with pytest.warns(UserWarning, match="absent from the targets"):
        r = m.compute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the predicted-only class
        expected_bacc = balanced_accuracy_score(y, pred)
        expected_f1 = f1_score(y, pred, average="macro", zero_division=0)
    # torchmetrics' macro accuracy would count class 2 as recall 0; we must not
    assert r["balanced_accuracy"] == pytest.approx(expected_bacc, abs=1e-6)
    assert r["f1_macro"] == pytest.approx(expected_f1, abs=1e-6)
    present = [0, 1, 3]
    expected_auroc = np.mean([roc_auc_score(y == i, p[:, i]) for i in present])
    assert r["auroc_macro"] == pytest.approx(expected_auroc, abs=1e-6)
    assert math.isnan(r["per_class"]["bkl"]["auroc"]) and math.isnan(r["per_class"]["nv"]["auroc"])
    assert r["per_class"]["bkl"]["support"] == 0
    assert r["classes_absent_from_targets"] == ["bkl", "nv"]


def test_single_class_in_targets_gives_nan_auroc_not_an_error():
    probs = torch.softmax(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)), 1)
    labels = torch.zeros(10, dtype=torch.long)
    m = ClassificationMetrics(3, ["a", "b", "c"])
    m.update(probs, labels)
    s = m.scalars("val")
    assert torch.isnan(s["val/auroc_macro"])
    with pytest.warns(UserWarning):
        r = m.compute()
    assert math.isnan(r["auroc_macro"])
    assert r["balanced_accuracy"] == pytest.approx((probs.argmax(1) == 0).float().mean().item())


def test_batched_updates_equal_one_update_and_merged_processes():
    labels, probs = imbalanced(n=257, seed=5)
    whole = scored(labels, probs)
    batched = scored(labels, probs, chunks=7)
    assert json.dumps(whole, sort_keys=True) == json.dumps(batched, sort_keys=True)
    # two "processes" each holding half the data, merged as a DDP gather would
    a, b = ClassificationMetrics(5, NAMES), ClassificationMetrics(5, NAMES)
    a.update(probs[:128], labels[:128])
    b.update(probs[128:], labels[128:])
    for name, metric in a.collection.items(keep_base=True):
        metric.merge_state(b.collection[name])
    merged = a.compute()
    for k in M.SCALAR_KEYS:
        assert merged[k] == pytest.approx(whole[k], abs=1e-6)
    assert merged["confusion_matrix"] == whole["confusion_matrix"]


def test_scalars_are_device_tensors_matching_compute_and_reset_works():
    labels, probs = imbalanced(n=64, seed=6)
    m = ClassificationMetrics(5, NAMES)
    with pytest.raises(RuntimeError, match="before any update"):
        m.compute()
    m.update(probs.to(torch.bfloat16), labels)  # mixed-precision outputs are accepted
    s = m.scalars("val")
    assert set(s) == {f"val/{k}" for k in M.SCALAR_KEYS}
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in s.values())
    r = m.compute()
    for k in M.SCALAR_KEYS:
        assert s[f"val/{k}"].item() == pytest.approx(r[k])
    m.reset()
    m.update(probs[:10], labels[:10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class may be absent from 10 samples
        assert m.compute()["num_samples"] == 10
    with pytest.raises(ValueError, match="shape"):
        m.update(probs[:, :3], labels)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_write_evaluation_artefacts(tmp_path):
    from PIL import Image

    labels, probs = imbalanced(n=40, seed=7)
    labels[3] = -1  # unknown label: in predictions.csv, not in the metrics
    paths = [f"img/{i:03d}.jpg" for i in range(40)]
    out = tmp_path / "eval" / "test"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = write_evaluation_artefacts(out, NAMES, paths, labels, probs,
                                            extra={"split": "test", "checkpoint": Path("/x/best.ckpt"), "params": 123})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "per_class.csv", "predictions.csv", "confusion_matrix.png", "roc_curves.png", "pr_curves.png",
         "reliability.png", "report.html"])  # no temp files left

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == result
    for key in ("class_names", "num_samples", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro",
                "f1_macro", "auroc_macro", "per_class", "confusion_matrix"):
        assert key in saved
    assert saved["split"] == "test" and saved["checkpoint"] == "/x/best.ckpt" and saved["params"] == 123
    assert set(saved) == set(RESULT_KEYS) | {"split", "checkpoint", "params"}
    assert saved["num_samples"] == 39 and saved["num_unlabelled"] == 1
    assert np.sum(saved["confusion_matrix"]) == 39
    # identical to what the streaming metrics log
    keep = labels >= 0
    streamed = scored(labels[keep], probs[keep], chunks=4)
    for k in M.SCALAR_KEYS:
        assert saved[k] == pytest.approx(streamed[k], abs=1e-7)

    per_class = read_csv(out / "per_class.csv")
    assert list(per_class[0]) == ["class", "sensitivity", "specificity", "ppv", "npv", "f1", "auroc", "support"]
    assert [r["class"] for r in per_class] == NAMES
    assert [int(r["support"]) for r in per_class] == [saved["per_class"][n]["support"] for n in NAMES]

    preds = read_csv(out / "predictions.csv")
    assert list(preds[0]) == ["path", "label", "predicted"] + [f"prob_{n}" for n in NAMES]
    assert len(preds) == 40
    assert [r["path"] for r in preds] == paths
    assert preds[3]["label"] == "" and preds[0]["label"] == NAMES[labels[0]]
    got = np.array([[float(r[f"prob_{n}"]) for n in NAMES] for r in preds], dtype=np.float32)
    np.testing.assert_array_equal(got, probs.numpy())  # float32 round-trips exactly
    assert [r["predicted"] for r in preds] == [NAMES[i] for i in probs.argmax(1).tolist()]

    with Image.open(out / "confusion_matrix.png") as img:
        img.verify()
    with Image.open(out / "confusion_matrix.png") as img:
        assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 200


def test_bad_inputs_fail_before_anything_is_written(tmp_path):
    labels, probs = imbalanced(n=12, seed=8)
    with pytest.raises(ValueError, match="softmax"):
        write_evaluation_artefacts(tmp_path / "a", NAMES, [str(i) for i in range(12)], labels, probs * 3 - 1)
    with pytest.raises(ValueError, match="overwrite"):
        write_evaluation_artefacts(tmp_path / "a", NAMES, [str(i) for i in range(12)], labels, probs,
                                   extra={"accuracy": 1.0})
    with pytest.raises(ValueError, match="no labelled"):
        write_evaluation_artefacts(tmp_path / "a", NAMES, [str(i) for i in range(12)],
                                   torch.full((12,), -1), probs)
    with pytest.raises(ValueError, match="class indices"):
        compute_metrics(NAMES, torch.full((12,), 5), probs)
    assert not (tmp_path / "a").exists()


def test_write_predictions_csv_without_labels(tmp_path):
    probs = torch.softmax(torch.randn(3, 2, dtype=torch.float64), 1)
    path = write_predictions_csv(tmp_path / "p.csv", ["benign", "malignant"], ["a.png", "b.png", "c.png"], probs)
    rows = read_csv(path)
    assert [r["label"] for r in rows] == ["", "", ""]
    assert float(rows[1]["prob_malignant"]) == probs[1, 1].item()  # float64 kept at full precision
    with pytest.raises(ValueError, match="paths"):
        write_predictions_csv(tmp_path / "q.csv", ["benign", "malignant"], ["a.png"], probs)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("artefacts")
    labels, probs = imbalanced(n=30, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = write_evaluation_artefacts(out, NAMES, [str(i) for i in range(30)], labels, probs)
    return result, out


def test_log_artefacts_none_and_csv_logger(artefacts, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    result, out = artefacts
    log_artefacts(None, result, out)
    logger = CSVLogger(tmp_path / "logs", name="")
    log_artefacts(logger, result, out)
    rows = read_csv(Path(logger.log_dir) / "metrics.csv")
    assert float(rows[0]["test/balanced_accuracy"]) == pytest.approx(result["balanced_accuracy"])
    assert float(rows[0]["test/per_class/mel/f1"]) == pytest.approx(result["per_class"]["mel"]["f1"])


def test_log_artefacts_media_for_wandb_and_tensorboard(artefacts, tmp_path):
    import wandb
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    result, out = artefacts
    wb = mock.Mock(spec=WandbLogger)
    log_artefacts(wb, result, out)
    wb.log_metrics.assert_called_once()
    assert "test/auroc_macro" in wb.log_metrics.call_args.args[0]
    media = wb.experiment.log.call_args.args[0]
    assert isinstance(media["test/confusion_matrix"], wandb.Image)
    assert isinstance(media["test/per_class"], wandb.Table)
    assert media["test/per_class"].columns == ["class", "sensitivity", "specificity", "ppv", "npv", "f1", "auroc",
                                               "support"]

    tb = TensorBoardLogger(tmp_path / "tb", name="")
    with mock.patch.object(type(tb.experiment), "add_image", autospec=True) as add_image:
        log_artefacts(tb, result, out, log_scalars=False)
    (_, tag, image), kwargs = add_image.call_args
    assert tag == "test/confusion_matrix" and image.ndim == 3 and image.shape[2] == 3
    assert kwargs["dataformats"] == "HWC"


def test_rich_table_shows_classes_and_scalars(artefacts):
    from rich.console import Console

    result, _ = artefacts
    console = Console(record=True, width=140)
    console.print(format_metrics_table(result, "test split"))
    text = console.export_text()
    assert "test split" in text and all(name in text for name in NAMES)
    assert f"{result['balanced_accuracy']:.4f}" in text and f"{result['f1_macro']:.4f}" in text
