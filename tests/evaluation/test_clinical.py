"""Clinical reporting: every new number against an independent computation, the figures, the report page,
calibration and Grad-CAM sanity checks."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import multilabel_confusion_matrix, roc_auc_score

from hdkd_lightning.evaluation.artefacts import EvaluationOptions, write_evaluation_artefacts
from hdkd_lightning.evaluation.metrics import compute_metrics
from hdkd_lightning.evaluation.statistics import (
    apply_temperature,
    bootstrap_intervals,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)

NAMES = ["akiec", "bcc", "mel", "nv"]


def _scored(n=200, c=4, seed=0):
    g = np.random.default_rng(seed)
    labels = g.integers(0, c, n)
    logits = g.normal(size=(n, c))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


def test_per_class_sensitivity_specificity_ppv_npv_match_the_confusion_matrix():
    labels, probs = _scored()
    m = compute_metrics(NAMES, labels, probs)
    mcm = multilabel_confusion_matrix(labels, probs.argmax(1), labels=range(4))  # [[tn, fp], [fn, tp]] per class
    for c, name in enumerate(NAMES):
        (tn, fp), (fn, tp) = mcm[c]
        row = m["per_class"][name]
        assert row["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert row["specificity"] == pytest.approx(tn / (tn + fp))
        assert row["ppv"] == pytest.approx(tp / (tp + fp))
        assert row["npv"] == pytest.approx(tn / (tn + fn))
        assert row["auroc"] == pytest.approx(roc_auc_score(labels == c, probs[:, c]), abs=1e-6)


def test_ece_against_a_direct_computation_on_a_fixed_example():
    probs = np.array([[0.93, 0.07], [0.82, 0.18], [0.62, 0.38], [0.27, 0.73], [0.44, 0.56]])
    labels = np.array([0, 1, 0, 1, 0])
    # top-class confidences 0.93, 0.82, 0.62, 0.73, 0.56 fall in 5 different bins of width 0.1;
    # right / wrong: 1, 0, 1, 1, 0; ECE = mean over images of |correct - confidence| (one image per bin)
    direct = (abs(1 - 0.93) + abs(0 - 0.82) + abs(1 - 0.62) + abs(1 - 0.73) + abs(0 - 0.56)) / 5
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(direct, abs=1e-6)
    rel = reliability_bins(probs, labels, bins=10)
    assert rel["count"] == [1, 1, 1, 1, 1]
    assert rel["confidence"] == pytest.approx([0.56, 0.62, 0.73, 0.82, 0.93])
    assert rel["accuracy"] == pytest.approx([0, 1, 1, 0, 1])


def test_confidences_on_bin_edges_give_the_bins_of_a_plain_computation():
    # (top-class confidence, predicted, label) with confidences exactly on the edges of 5 bins, 1.0 included
    rows = [(0.2, 0, 0), (0.2, 0, 1), (0.3, 1, 1), (0.4, 2, 0), (0.4, 2, 2), (0.5, 3, 3), (0.6, 1, 1), (0.6, 1, 4),
            (0.7, 4, 4), (0.8, 0, 1), (0.85, 3, 3), (1.0, 2, 0), (1.0, 4, 4)]
    probs = np.zeros((len(rows), 5))
    for i, (conf, pred, _) in enumerate(rows):
        probs[i] = (1 - conf) / 4
        probs[i, pred] = conf  # 0.2 with four 0.2s: argmax is the first, class 0
    labels = np.array([label for _, _, label in rows])
    conf = probs.max(1)
    assert list(conf) == [r[0] for r in rows] and list(probs.argmax(1)) == [r[1] for r in rows]
    correct = probs.argmax(1) == labels
    which = np.minimum(np.floor(conf * 5).astype(int), 4)  # [k/5, (k+1)/5), 1.0 in the last bin
    filled = [k for k in range(5) if (which == k).any()]
    rel = reliability_bins(probs, labels, bins=5)
    assert rel["count"] == [int((which == k).sum()) for k in filled] == [3, 3, 3, 4]
    assert rel["confidence"] == pytest.approx([conf[which == k].mean() for k in filled])
    assert rel["accuracy"] == pytest.approx([correct[which == k].mean() for k in filled])
    direct = sum(abs(correct[which == k].mean() - conf[which == k].mean()) * (which == k).mean() for k in filled)
    assert expected_calibration_error(probs, labels, bins=5) == pytest.approx(direct, abs=1e-12)


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate():
    labels, probs = _scored(n=300)
    a = bootstrap_intervals(labels, probs, 4, resamples=300, seed=3)
    b = bootstrap_intervals(labels, probs, 4, resamples=300, seed=3)
    assert a == b and a["resamples"] == 300 and a["level"] == 0.95
    point = compute_metrics(NAMES, labels, probs)
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro"):
        low, high = a[key]
        assert low < point[key] < high and high - low < 0.25
    assert bootstrap_intervals(labels, probs, 4, resamples=0)["resamples"] == 0


def test_bootstrap_interval_of_accuracy_agrees_with_a_plain_numpy_bootstrap():
    labels, probs = _scored(n=300)
    ours = bootstrap_intervals(labels, probs, 4, resamples=2000, seed=0)["accuracy"]
    correct = (probs.argmax(1) == labels).astype(float)
    g = np.random.default_rng(12345)  # another generator: the two agree in distribution, not draw by draw
    means = correct[g.integers(0, len(correct), (4000, len(correct)))].mean(1)
    plain = np.percentile(means, [2.5, 97.5])
    assert ours == pytest.approx(plain, abs=0.012)  # Monte-Carlo error of 2000-4000 resamples is ~0.005


def test_bootstrap_intervals_equal_scikit_learn_scoring_every_resample_on_the_same_draws():
    """The vectorised scoring of the resamples against scikit-learn called per resample on scipy's draws, with a
    rare class (absent from some resamples), a class never predicted and tied scores."""
    from scipy.stats import bootstrap
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    g = np.random.default_rng(4)
    n, c = 70, 5
    labels = np.r_[np.zeros(2, int), g.integers(1, c, n - 2)]  # class 0: two images
    logits = np.round(g.normal(size=(n, c)), 1)  # rounded: tied scores
    logits[np.arange(n), labels] += 1.0
    logits[:, 3] -= 5.0  # class 3 is never the prediction
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    def sklearn_scores(idx):
        y, p = labels[idx], probs[idx]
        pred = p.argmax(1)
        aucs = [roc_auc_score(y == k, p[:, k]) for k in range(c) if 0 < (y == k).sum() < len(y)]
        return np.array([accuracy_score(y, pred), balanced_accuracy_score(y, pred),
                         f1_score(y, pred, average="macro", zero_division=0), np.mean(aucs)])

    for level in (0.5, 0.95):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = bootstrap((np.arange(n),), sklearn_scores, n_resamples=120, confidence_level=level,
                            method="percentile", random_state=5, vectorized=False).confidence_interval
        ours = bootstrap_intervals(labels, probs, c, resamples=120, seed=5, level=level)
        for i, key in enumerate(("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro")):
            assert ours[key] == pytest.approx([ref.low[i], ref.high[i]], rel=1e-9, abs=1e-12), key


def test_weighted_auroc_equals_scikit_learn_with_sample_weights():
    from hdkd_lightning.evaluation.statistics import weighted_auroc

    g = np.random.default_rng(1)
    scores = np.round(g.random(40), 1)  # ties
    positive = g.random(40) < 0.3
    counts = g.integers(0, 3, (6, 40)).astype(float)
    ours = weighted_auroc(counts, scores, positive)
    for row, value in zip(counts, ours):
        assert value == pytest.approx(roc_auc_score(positive, scores, sample_weight=row), rel=1e-12)
    assert np.isnan(weighted_auroc(np.ones((1, 40)), scores, np.zeros(40, bool)))[0]


def test_temperature_fit_minimises_the_nll_found_by_a_grid_search():
    labels, probs = _scored(n=400)
    overconfident = apply_temperature(probs, 0.4)  # sharper than the data warrant
    t = fit_temperature(overconfident, labels)
    grid = np.linspace(0.5, 6.0, 1101)
    nll = [-np.log(apply_temperature(overconfident, g)[np.arange(len(labels)), labels]).mean() for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(nll))], abs=0.02)
    assert expected_calibration_error(apply_temperature(overconfident, t), labels) < \
        expected_calibration_error(overconfident, labels)


def _chance_probs(n=60, c=3, seed=0):
    """Confident probabilities unrelated to the labels: the NLL falls all the way to uniform (T -> infinity)."""
    g = np.random.default_rng(seed)
    logits = 3 * g.normal(size=(n, c))
    return g.integers(0, c, n), np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_a_temperature_fit_that_ends_at_either_bound_is_refused_with_the_numbers():
    from hdkd_lightning.evaluation.statistics import TEMPERATURE_RANGE, TemperatureAtBound

    labels, probs = _chance_probs()
    accuracy = (probs.argmax(1) == labels).mean()
    with pytest.raises(TemperatureAtBound, match=rf"reached its upper bound T=20 on 60 images \(accuracy "
                                                 rf"{accuracy:.3f}, chance 0.333\): .*no better than chance") as hit:
        fit_temperature(probs, labels)
    assert hit.value.bound == TEMPERATURE_RANGE[1] and "\n" not in str(hit.value)
    right = np.tile([0.6, 0.3, 0.1], (40, 1))  # every image right: sharper is always better (T -> 0)
    with pytest.raises(TemperatureAtBound, match=r"reached its lower bound T=0.05 on 40 images \(accuracy 1.000"):
        fit_temperature(right, np.zeros(40, dtype=int))


def test_calibration_that_ends_at_the_bound_leaves_the_checkpoint_untouched(tmp_path):
    from omegaconf import OmegaConf

    from hdkd_lightning.errors import ConfigError
    from hdkd_lightning.pipeline.evaluate import _calibrate

    labels, probs = _chance_probs()
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hdkd": {"arch": "hdkd_student", "class_names": NAMES[:3]}}, ckpt)
    before = ckpt.read_bytes()

    class Module:  # scores the validation batches with fixed probabilities
        temperature = None

        def predict_probs(self, images):
            return torch.as_tensor(probs[images.long()])

    class Data:
        def split_records(self, split):
            return list(range(len(labels)))

        def val_dataloader(self):
            return [{"image": torch.arange(i, min(i + 16, len(labels))),
                     "label": torch.as_tensor(labels[i:i + 16])} for i in range(0, len(labels), 16)]
    module = Module()
    cfg = OmegaConf.create({"ckpt_path": str(ckpt), "report": {"ece_bins": 15}})
    with pytest.raises(ConfigError, match=r"^calibrate=true on the validation split: the fitted temperature reached "
                                          r"its upper bound T=20 on 60 images .*left unchanged$"):
        _calibrate(cfg, module, Data())
    assert ckpt.read_bytes() == before and module.temperature is None


def test_artefacts_curves_and_report_page(tmp_path):
    labels, probs = _scored()
    paths = [f"img_{i}.png" for i in range(len(labels))]
    examples = [{"path": "img_0.png", "label": "akiec", "predicted": "bcc", "probability": 0.6, "correct": False,
                 "png": b"\x89PNG fake"}]
    result = write_evaluation_artefacts(tmp_path, NAMES, paths, labels, probs, {"model": "hdkd"},
                                        EvaluationOptions(bootstrap=200), examples)
    for name in ("metrics.json", "per_class.csv", "predictions.csv", "confusion_matrix.png", "roc_curves.png",
                 "pr_curves.png", "reliability.png", "report.html"):
        assert (tmp_path / name).is_file(), name
    assert set(result["confidence_intervals"]) >= {"accuracy", "balanced_accuracy", "f1_macro", "auroc_macro"}
    assert result["calibration"]["ece"] == pytest.approx(expected_calibration_error(probs, labels, 15))
    header = (tmp_path / "per_class.csv").read_text().splitlines()[0]
    assert header == "class,sensitivity,specificity,ppv,npv,f1,auroc,support"
    page = (tmp_path / "report.html").read_text()
    for element in ("summary", "per-class", "confusion", "roc", "pr", "reliability", "gradcam"):
        assert f'id="{element}"' in page
    assert page.count("data:image/png;base64,") == 5  # four figures and the example, all embedded
    assert not re.search(r'src="(?!data:)', page) and "<script" not in page  # self-contained, no code
    assert f"{result['confidence_intervals']['accuracy'][0]:.4f}" in page


def test_roc_legend_shows_the_auc_of_each_class():
    from hdkd_lightning.evaluation.figures import render_roc_curves

    labels, probs = _scored()
    fig = render_roc_curves(labels, probs, NAMES)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    for c, name in enumerate(NAMES):
        auc = roc_auc_score(labels == c, probs[:, c])
        assert any(t.startswith(name) and f"{auc:.2f}" in t for t in texts), (name, texts)


def test_pr_legend_shows_the_average_precision_of_each_class():
    from sklearn.metrics import average_precision_score

    from hdkd_lightning.evaluation.figures import render_pr_curves

    labels, probs = _scored()
    texts = [t.get_text() for t in render_pr_curves(labels, probs, NAMES).axes[0].get_legend().get_texts()]
    for c, name in enumerate(NAMES):
        ap = average_precision_score(labels == c, probs[:, c])
        assert any(t.startswith(name) and f"{ap:.2f}" in t for t in texts), (name, texts)


# -- Grad-CAM sanity checks -------------------------------------------------------------------------

NETWORKS = ["hdkd_teacher", "hdkd_student", "hdkd_student_distilled"]


@pytest.fixture(scope="module", params=NETWORKS)
def trained_net(request):
    """Each network trained for a few steps to tell two coloured classes apart (weights that mean something)."""
    import timm

    import hdkd_lightning  # noqa: F401

    torch.manual_seed(0)
    net = timm.create_model(request.param, num_classes=2, img_size=32)
    x = torch.randn(16, 3, 32, 32)
    y = torch.tensor([0, 1] * 8)
    x[y == 1, 0, 8:24, 8:24] += 3.0  # class 1: a bright square in the red channel
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(15):
        opt.zero_grad()
        out = net(x)
        logits = out if torch.is_tensor(out) else out[0]  # the distilled student trains as (cls, dist)
        torch.nn.functional.cross_entropy(logits, y).backward()
        opt.step()
    return request.param, net.eval(), x[:4]


@pytest.mark.parametrize("arch", NETWORKS)
def test_gradcam_maps_have_the_image_size_and_finite_values(arch):
    import timm

    from hdkd_lightning.evaluation.explain import gradcam_maps, target_layer

    net = timm.create_model(arch, num_classes=3, img_size=32).eval()
    assert target_layer(net) is net.stages[2][-1]
    maps = gradcam_maps(net, torch.randn(2, 3, 32, 32), [0, 2])
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


def test_gradcam_maps_differ_between_classes_and_from_randomised_weights(trained_net, one_thread):
    import timm

    from hdkd_lightning.evaluation.explain import gradcam_maps

    arch, net, x = trained_net
    class0 = gradcam_maps(net, x, [0] * len(x))
    class1 = gradcam_maps(net, x, [1] * len(x))
    assert np.abs(class0 - class1).mean() > 0.05
    torch.manual_seed(123)
    random = timm.create_model(arch, num_classes=2, img_size=32).eval()  # model-randomisation check
    randomised = gradcam_maps(random, x, [1] * len(x))
    assert np.abs(class1 - randomised).mean() > 0.05
