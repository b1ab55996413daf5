"""What the figures show, read from the matplotlib objects: panels, scales, labels, legends, markers."""

from __future__ import annotations

import re

import numpy as np
import pytest

NAMES = ["glioma", "meningioma", "notumor", "pituitary"]


def _distillation_series(epochs=6):
    """A distillation run's epoch log: a total loss two orders above its parts, validation every epoch,
    macro recall equal to balanced accuracy (as it always is)."""
    e = list(range(epochs))
    bal = [0.50, 0.61, 0.58, 0.72, 0.69, 0.70][:epochs]
    return {
        "train/loss_epoch": [(i, 197.0 - 4 * i) for i in e],
        "train/loss_ce": [(i, 1.4 - 0.1 * i) for i in e],
        "train/loss_kd": [(i, 0.3 - 0.02 * i) for i in e],
        "train/loss_feat": [(i, 19.0 - 0.4 * i) for i in e],
        "val/loss": [(i, 1.8 - 0.1 * i) for i in e],
        "val/balanced_accuracy": list(zip(e, bal)),
        "val/recall_macro": list(zip(e, bal)),
        "val/accuracy": [(i, v + 0.01) for i, v in zip(e, bal)],
        "val/num_samples": [(i, 40.0) for i in e],
    }


def _panels(fig):
    return {ax.get_title(): ax for ax in fig.axes}


def _data_lines(ax):
    return [line for line in ax.get_lines() if line.get_gid() != "best-epoch"]


def test_training_curves_put_each_kind_of_curve_on_its_own_panel_and_scale():
    from hdkd_lightning.evaluation.figures import render_training_curves

    panels = _panels(render_training_curves(_distillation_series()))
    assert set(panels) == {"training loss (total)", "training loss parts", "validation loss", "validation metrics"}
    assert [line.get_label() for line in _data_lines(panels["training loss (total)"])] == ["train/loss"]
    parts = panels["training loss parts"]
    assert [line.get_label() for line in _data_lines(parts)] == ["train/loss_ce", "train/loss_kd", "train/loss_feat"]
    assert parts.get_yscale() == "log"  # 0.2 and 19 on one axis
    val = panels["validation loss"]
    assert [line.get_label() for line in _data_lines(val)] == ["val/loss"]
    low, high = val.get_ylim()
    assert low > 1.0 and high < 2.0  # its own scale, not squashed under a total loss of ~190
    for ax in panels.values():
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()


def test_a_plain_run_has_no_loss_parts_panel():
    from hdkd_lightning.evaluation.figures import render_training_curves

    series = {k: v for k, v in _distillation_series().items() if k not in ("train/loss_ce", "train/loss_kd",
                                                                            "train/loss_feat")}
    assert set(_panels(render_training_curves(series))) == {"training loss (total)", "validation loss",
                                                            "validation metrics"}


def test_a_loss_part_switched_off_is_named_not_drawn_on_the_log_axis():
    from hdkd_lightning.evaluation.figures import render_training_curves

    series = _distillation_series()
    series["train/loss_feat"] = [(e, 0.0) for e, _ in series["train/loss_feat"]]  # logit-only: lambda_feat=0
    series["train/loss_kd"][2] = (2, 0.0)  # a term that touches 0 once stays on the axis
    parts = next(ax for ax in render_training_curves(series).axes if ax.get_title().startswith("training loss parts"))
    assert [line.get_label() for line in _data_lines(parts)] == ["train/loss_ce", "train/loss_kd"]
    assert "0 at every epoch: train/loss_feat" in parts.get_title()
    assert parts.get_yscale() == "symlog"


def test_training_curves_count_epochs_from_one_and_mark_the_best_epoch():
    from hdkd_lightning.evaluation.figures import render_training_curves

    fig = render_training_curves(_distillation_series())
    for ax in fig.axes:
        assert all(min(line.get_xdata()) == 1 for line in _data_lines(ax))  # the console's first epoch
        marks = [line for line in ax.get_lines() if line.get_gid() == "best-epoch"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [4, 4]  # 0.72 at logged epoch 3
        assert marks[0].get_label().startswith("best epoch 4")
    metrics = _panels(fig)["validation metrics"]
    assert "val/balanced_accuracy 0.720" in [t.get_text() for t in metrics.get_legend().get_texts()][-1]
    # another monitored metric moves the mark: the lowest validation loss is the last epoch
    fig = render_training_curves(_distillation_series(), monitor="val/loss")
    marks = [line for line in fig.axes[0].get_lines() if line.get_gid() == "best-epoch"]
    assert list(marks[0].get_xdata()) == [6, 6]


def test_macro_recall_is_not_drawn_over_balanced_accuracy():
    from hdkd_lightning.evaluation.figures import render_training_curves

    metrics = _panels(render_training_curves(_distillation_series()))["validation metrics"]
    labels = [line.get_label() for line in _data_lines(metrics)]
    assert labels == ["val/balanced_accuracy (= val/recall_macro)", "val/accuracy"]  # one line, named twice
    assert not any(label.endswith("num_samples") for label in labels)


def _scored(n=300, seed=0):
    g = np.random.default_rng(seed)
    labels = g.choice(4, n, p=[0.5, 0.25, 0.15, 0.1])
    logits = g.normal(size=(n, 4))
    logits[np.arange(n), labels] += 1.5
    return labels, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


@pytest.mark.parametrize("which, xlabel, ylabel", [
    ("roc", "false positive rate (1 - specificity)", "true positive rate (sensitivity)"),
    ("pr", "recall (sensitivity)", "precision (PPV)"),
])
def test_curves_have_one_vs_rest_axis_labels_and_the_legend_outside_the_axes(which, xlabel, ylabel):
    from hdkd_lightning.evaluation import figures

    render = figures.render_roc_curves if which == "roc" else figures.render_pr_curves
    fig = render(*_scored(), NAMES)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (xlabel, ylabel)
    assert "Positive label" not in ax.get_xlabel() + ax.get_ylabel()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, data = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.y1 <= data.y0  # below the data area, covering no curve
    assert fig.bbox.x0 - 1 <= legend.x0 and legend.x1 <= fig.bbox.x1 + 1 and legend.y0 >= fig.bbox.y0 - 1  # not cut off


@pytest.mark.parametrize("bins", [
    # a well-calibrated model: neighbouring bins at the top right, a few pixels apart
    {"confidence": [0.35, 0.52, 0.67, 0.78, 0.86, 0.93, 0.975, 0.995], "accuracy": [0.3, 0.5, 0.7, 0.8, 0.92, 0.97, 1.0, 1.0],
     "count": [3, 12, 25, 40, 88, 150, 320, 1204]},
    # small bins right on every image in the middle of the confidence range, under the title
    {"confidence": [0.3, 0.47, 0.5, 0.58, 0.99], "accuracy": [1.0, 1.0, 0.98, 1.0, 1.0], "count": [2, 5, 17, 11, 9321]},
])
def test_reliability_counts_stay_inside_the_axes_clear_of_the_title_and_of_each_other(bins):
    from hdkd_lightning.evaluation.figures import render_reliability

    fig = render_reliability(bins, 0.02, 15)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    title, frame = ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)
    counts = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    assert sorted(counts) == sorted(str(n) for n in bins["count"])
    for text, box in counts.items():
        assert not box.overlaps(title), f"count {text} overlaps the title"
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, \
            f"count {text} leaves the axes"
    texts = sorted(counts)
    clashes = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1:] if counts[a].overlaps(counts[b])]
    assert not clashes, f"counts drawn over each other: {clashes}"
    assert ax.get_yticks().max() == pytest.approx(1.0)  # the room above 1.0 is for the counts, not an accuracy


def test_pr_curves_draw_each_class_prevalence():
    from hdkd_lightning.evaluation.figures import render_pr_curves

    labels, probs = _scored()
    ax = render_pr_curves(labels, probs, NAMES).axes[0]
    baselines = [line for line in ax.get_lines() if line.get_gid() == "prevalence"]
    assert sorted(round(float(line.get_ydata()[0]), 6) for line in baselines) == \
        sorted(round(float((labels == c).mean()), 6) for c in range(4))
    curves = {line.get_label().split(" ")[0]: line for line in ax.get_lines() if line.get_gid() is None}
    for c, name in enumerate(NAMES):  # same colour as the class's curve, value in its legend entry
        line = next(b for b in baselines if b.get_ydata()[0] == pytest.approx((labels == c).mean()))
        assert line.get_color() == curves[name].get_color()
        assert f"prevalence {(labels == c).mean():.2f}" in curves[name].get_label()


def test_report_page_puts_roc_and_pr_side_by_side():
    from hdkd_lightning.evaluation.report_page import render_report

    pngs = {name: b"png" for name in ("confusion_matrix.png", "roc_curves.png", "pr_curves.png", "reliability.png")}
    page = render_report({"num_samples": 3}, pngs, [])
    pair = re.search(r'<div class="figures pair" id="curves">(.*?)</div>', page, re.S)
    assert pair and 'id="roc"' in pair.group(1) and 'id="pr"' in pair.group(1)
    # two columns that wrap under each other when the page is narrower than two figures
    assert re.search(r"\.pair \{[^}]*display: grid;[^}]*repeat\(auto-fit, minmax\(", page)


# -- hdkd-report's bar chart ---------------------------------------------------------------------------

def _row(panel, model, values):
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"panel": panel, "model": model, "n": len(values), "balanced_accuracy_mean": mean,
            "balanced_accuracy_std": std, "balanced_accuracy_values": list(values)}


def _report():
    return {"rows": [
        _row("brain_tumor, train 150/class", "teacher optimizer=Adam scheduler=none", [0.681]),
        _row("brain_tumor, train 150/class", "teacher optimizer=AdamW scheduler=CosineLRScheduler", [0.70, 0.74, 0.68]),
        _row("brain_tumor, train 150/class", "student", [0.62, 0.63, 0.61]),
        _row("brain_tumor, train 150/class", "hdkd", [0.72, 0.67, 0.65]),
    ]}


def test_comparison_chart_uses_a_y_range_from_the_data_and_says_so():
    from hdkd_lightning.evaluation.comparison import render_comparison_plot

    ax = render_comparison_plot(_report()).axes[0]
    low, high = ax.get_ylim()
    assert 0.5 < low < 0.61 and 0.74 < high < 0.85  # a few points apart are visibly apart
    assert f"axis from {low:.2f}, not 0" in ax.get_ylabel()
    # a panel whose seeds reach 0 keeps 0 and says nothing
    ax = render_comparison_plot({"rows": [_row("p", "student", [0.0, 0.1])]}).axes[0]
    assert ax.get_ylim()[0] == 0.0 and "not 0" not in ax.get_ylabel()


def test_comparison_chart_shows_every_seed_and_short_labels():
    from hdkd_lightning.evaluation.comparison import render_comparison_plot

    report = _report()
    ax = render_comparison_plot(report).axes[0]
    seeds = [c for c in ax.collections if c.get_gid() == "seeds"]
    assert [len(c.get_offsets()) for c in seeds] == [len(r["balanced_accuracy_values"]) for r in report["rows"]]
    assert sorted(float(y) for c in seeds for _, y in c.get_offsets()) == \
        sorted(v for r in report["rows"] for v in r["balanced_accuracy_values"])
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["teacher (a)\nn=1", "teacher (b)\nn=3", "student\nn=3", "hdkd\nn=3"]


def test_report_markdown_says_which_settings_each_short_label_stands_for():
    from hdkd_lightning.evaluation.comparison import METRICS, _markdown

    report = _report()
    for r in report["rows"]:
        r.update({f"{m}_{s}": r["balanced_accuracy_" + s] for m in METRICS for s in ("mean", "std")})
        r.update(val_score_mean=None, val_score_std=None, params=None, gflops=None)
    report.update(num_runs=8, differing_settings=["model.optimizer._target_"], left_out=[])
    text = _markdown(report)
    assert "- brain_tumor, train 150/class | teacher (a): teacher optimizer=Adam scheduler=none" in text
    assert "teacher (b): teacher optimizer=AdamW scheduler=CosineLRScheduler" in text
    assert "| student:" not in text  # a row the plot names in full needs no key


def test_comparison_chart_puts_at_most_two_panels_side_by_side():
    from hdkd_lightning.evaluation.comparison import render_comparison_plot

    rows = [_row(f"panel {i}", m, [0.6, 0.7]) for i in range(5) for m in ("student", "hdkd")]
    fig = render_comparison_plot({"rows": rows})
    assert [ax.get_title() for ax in fig.axes] == [f"panel {i}" for i in range(5)]  # no empty sixth panel
    columns = {round(ax.get_position().x0, 3) for ax in fig.axes}
    assert len(columns) == 2 and fig.get_figwidth() < fig.get_figheight() * 2
    one = render_comparison_plot({"rows": rows[:2]})
    assert len(one.axes) == 1 and one.get_figwidth() < 6
