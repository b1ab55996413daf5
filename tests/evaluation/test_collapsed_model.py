"""A model that predicts one class for every image is called out: log, metrics.json, report.html, Grad-CAM page."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest

from hdkd_lightning.evaluation.artefacts import EvaluationOptions, write_evaluation_artefacts
from hdkd_lightning.evaluation.metrics import collapse_warning, collapsed_prediction
from hdkd_lightning.pipeline.explain import _index_html

NAMES = ["glioma", "meningioma", "notumor", "pituitary"]


def _probs(predicted, num_classes=4, confidence=0.7):
    """Softmax-like rows whose arg-max is ``predicted[i]``."""
    rest = (1.0 - confidence) / (num_classes - 1)
    probs = np.full((len(predicted), num_classes), rest)
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_the_rule_needs_one_class_for_every_image_and_two_images_at_least():
    assert collapsed_prediction(_probs([2, 2, 2, 2, 2])) == 2
    assert collapsed_prediction(_probs([2, 2, 0, 2])) is None
    assert collapsed_prediction(_probs([1])) is None  # one image always has one prediction
    assert collapsed_prediction(np.zeros((0, 4))) is None
    text = collapse_warning(NAMES, _probs([3] * 6))
    assert "pituitary" in text and "6 images" in text
    assert collapse_warning(NAMES, _probs([0, 1, 2, 3])) is None


def _write(tmp_path, predicted, caplog):
    labels = np.arange(len(predicted)) % 4  # every class in the targets
    paths = [f"img/{i:02d}.png" for i in range(len(predicted))]
    out = tmp_path / "test"
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="hdkd_lightning"):
        warnings.simplefilter("ignore")
        write_evaluation_artefacts(out, NAMES, paths, labels, _probs(predicted),
                                   options=EvaluationOptions(bootstrap=0, gradcam_per_class=0))
    return json.loads((out / "metrics.json").read_text()), (out / "report.html").read_text()


def test_a_collapsed_model_is_warned_about_in_metrics_json_the_log_and_the_report(tmp_path, caplog):
    metrics, page = _write(tmp_path, [1] * 12, caplog)
    assert len(metrics["warnings"]) == 1
    assert "predicts meningioma for every one of the 12 images" in metrics["warnings"][0]
    assert any(r.levelno == logging.WARNING and "meningioma for every one" in r.getMessage() for r in caplog.records)
    # a visible note at the top of the page, before the first section
    note = page.index('class="warning"')
    assert note < page.index("<h2>Summary</h2>")
    assert "Warning: the model predicts meningioma for every one of the 12 images" in page[note:]


def test_a_model_that_predicts_several_classes_gets_no_warning(tmp_path, caplog):
    metrics, page = _write(tmp_path, [0, 1, 2, 3] * 3, caplog)
    assert metrics["warnings"] == []
    assert 'class="warning"' not in page
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "hdkd_lightning"]


@pytest.mark.parametrize("warning", [None, "the model predicts notumor for every one of the 3 images: maps say little"])
def test_the_gradcam_page_says_when_every_image_has_the_same_prediction(warning):
    rows = [{"image": f"/x/{i}.png", "png": f"{i:04d}.png", "predicted": "notumor", "probability": 0.9,
             "target": "notumor"} for i in range(3)]
    page = _index_html(rows, "Grad-CAM: hdkd_teacher", warning)
    if warning is None:
        assert "warning" not in page.lower()
    else:
        assert page.index("Warning: the model predicts notumor for every one of the 3 images") < page.index("<figure>")
