"""The figures of an evaluation and of a training run (matplotlib, Agg canvas, no pyplot state).

* :func:`render_confusion_matrix`: counts and row-normalised (recall per true class).
* :func:`render_roc_curves` / :func:`render_pr_curves`: one-vs-rest ROC and precision-recall curves
  per class (scikit-learn's ``RocCurveDisplay`` / ``PrecisionRecallDisplay``; AUC / average
  precision in the legend).
* :func:`render_reliability`: the reliability diagram (accuracy vs confidence per bin, with the
  bin counts) from :func:`hdkd_lightning.evaluation.statistics.reliability_bins`.
* :func:`render_training_curves`: train and validation loss and the validation metrics per epoch,
  read from a run's ``csv/metrics.csv`` (the whole history, a resumed run included).

Every function returns a ``matplotlib.figure.Figure``; :func:`save_png` writes one atomically.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import numpy as np

from hdkd_lightning.files import atomic_write

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure

__all__ = ["new_figure", "render_confusion_matrix", "render_roc_curves", "render_pr_curves", "render_reliability",
           "render_training_curves", "read_epoch_metrics", "save_png", "png_bytes"]


def new_figure(width: float, height: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: "Figure", path: Union[str, Path]) -> Path:
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png"), binary=True)


def png_bytes(fig: "Figure") -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_confusion_matrix(confusion_matrix: Any, class_names: Sequence[str], title: str = "") -> "Figure":
    """A two-panel matplotlib Figure (counts; row-normalised = recall per true class).

    Uses ``matplotlib.figure.Figure`` with an Agg canvas, so it neither needs a display nor
    touches pyplot's global state.
    """
    cm = np.asarray(confusion_matrix, dtype=np.int64)
    names = [str(n) for n in class_names]
    c = len(names)
    if cm.shape != (c, c):
        raise ValueError(f"confusion matrix must be {c}x{c}, got {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, cm / np.maximum(rows, 1), np.nan)

    cell = 0.6 if c <= 12 else max(0.22, 7.0 / c)  # inches per cell: readable up to ~12 classes
    longest = max(len(n) for n in names)
    margin = min(0.09 * longest, 2.5) + 0.9  # room for tick labels
    side = max(3.2, cell * c)
    fig = new_figure(2 * (side + margin + 0.9), side + margin + 0.8)
    axes = fig.subplots(1, 2)
    font = 9 if c <= 8 else (8 if c <= 12 else (6 if c <= 20 else 5))
    annotate = c <= 30
    panels = [(cm.astype(float), "Counts", lambda v: f"{int(v)}", max(cm.max(), 1)),
              (norm, "Row-normalised (recall per true class)", lambda v: f"{v:.2f}", 1.0)]
    for ax, (data, panel_title, fmt, vmax) in zip(axes, panels):
        masked = np.ma.masked_invalid(data)
        im = ax.imshow(masked, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xticks(range(c), labels=names, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
        ax.set_yticks(range(c), labels=names, fontsize=font)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        if annotate:
            for i in range(c):
                for j in range(c):
                    v = data[i, j]
                    text = "–" if not np.isfinite(v) else fmt(v)
                    dark = np.isfinite(v) and v > 0.5 * vmax
                    ax.text(j, i, text, ha="center", va="center", fontsize=font,
                            color="white" if dark else "black")
    if title:
        fig.suptitle(title)
    return fig


def _one_vs_rest(display, labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], title: str,
                 diagonal: bool) -> "Figure":
    fig = new_figure(6.0, 5.0)
    ax = fig.subplots()
    for c, name in enumerate(class_names):
        positives = labels == c
        if 0 < positives.sum() < len(labels):  # a curve needs positives and negatives
            display.from_predictions(positives, probs[:, c], name=str(name), ax=ax)
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_title(title)
    ax.legend(loc="lower right" if diagonal else "lower left", fontsize=8)
    return fig


def render_roc_curves(labels: Any, probs: Any, class_names: Sequence[str]) -> "Figure":
    from sklearn.metrics import RocCurveDisplay

    return _one_vs_rest(RocCurveDisplay, np.asarray(labels), np.asarray(probs), class_names,
                        "ROC curves (one class vs the rest)", diagonal=True)


def render_pr_curves(labels: Any, probs: Any, class_names: Sequence[str]) -> "Figure":
    from sklearn.metrics import PrecisionRecallDisplay

    return _one_vs_rest(PrecisionRecallDisplay, np.asarray(labels), np.asarray(probs), class_names,
                        "Precision-recall curves (one class vs the rest)", diagonal=False)


def render_reliability(bins: Dict[str, list], ece: float, n_bins: int, title: str = "") -> "Figure":
    fig = new_figure(5.0, 5.0)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    ax.plot(bins["confidence"], bins["accuracy"], marker="o", label=f"model (ECE {ece:.3f}, {n_bins} bins)")
    for x, y, n in zip(bins["confidence"], bins["accuracy"], bins["count"]):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Reliability diagram (numbers: images per bin)")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def read_epoch_metrics(metrics_csv: Union[str, Path]) -> Dict[str, List[tuple]]:
    """``{metric: [(epoch, value), ...]}`` from a Lightning CSV log (epoch-level values only)."""
    series: Dict[str, Dict[int, float]] = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            epoch = row.get("epoch")
            if not epoch:
                continue
            for key, value in row.items():
                if not value or key in ("epoch", "step") or key.endswith("_step"):
                    continue
                if not (key.startswith("val/") or key.endswith("_epoch") or key.startswith("train/loss_")):
                    continue
                try:
                    v = float(value)
                except ValueError:
                    continue
                if math.isfinite(v):
                    series.setdefault(key, {})[int(float(epoch))] = v  # a resumed epoch keeps its last value
    return {k: sorted(v.items()) for k, v in series.items()}


def render_training_curves(series: Dict[str, List[tuple]], title: str = "") -> Optional["Figure"]:
    """Left: train and validation loss per epoch; right: the validation metrics (None without data)."""
    losses = {k: v for k, v in series.items() if k in ("train/loss_epoch", "val/loss")}
    metrics = {k: v for k, v in series.items() if k.startswith("val/") and k != "val/loss"
               and not k.endswith(("num_samples", "num_unlabelled"))}
    if not losses and not metrics:
        return None
    fig = new_figure(11.0, 4.2)
    left, right = fig.subplots(1, 2)
    for key, points in losses.items():
        left.plot(*zip(*points), marker=".", label=key.replace("_epoch", ""))
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.set_title("loss")
    left.legend(fontsize=8)
    for key, points in sorted(metrics.items()):
        right.plot(*zip(*points), marker=".", label=key)
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.set_title("validation metrics")
    right.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return fig
