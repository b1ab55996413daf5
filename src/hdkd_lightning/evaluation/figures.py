"""The figures of an evaluation and of a training run (matplotlib, Agg canvas, no pyplot state).

* :func:`render_confusion_matrix`: counts and row-normalised (recall per true class).
* :func:`render_roc_curves` / :func:`render_pr_curves`: one-vs-rest ROC and precision-recall curves
  per class (scikit-learn's ``RocCurveDisplay`` / ``PrecisionRecallDisplay``; AUC / average
  precision in the legend, placed below the axes; PR with each class's prevalence).
* :func:`render_reliability`: the reliability diagram (accuracy vs confidence per bin, with the
  bin counts) from :func:`hdkd_lightning.evaluation.statistics.reliability_bins`; each count above
  its point, stacked where neighbours would collide, the y axis running past 1.0 by what the highest
  count needs: no count leaves the axes or touches the title.
* :func:`render_training_curves`: one panel per kind (training loss, its parts, validation loss,
  validation metrics), the best epoch marked, epochs from 1; read from a run's ``csv/metrics.csv``
  (the whole history, a resumed run included).

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


#: axis labels of the one-vs-rest curves: scikit-learn's default names a "positive label 1" that
#: means nothing when each class in turn is the positive one
ROC_XLABEL = "false positive rate (1 - specificity)"
ROC_YLABEL = "true positive rate (sensitivity)"
PR_XLABEL = "recall (sensitivity)"
PR_YLABEL = "precision (PPV)"


def _one_vs_rest(display, labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], title: str,
                 xlabel: str, ylabel: str, diagonal: bool, prevalence: bool) -> "Figure":
    from matplotlib.lines import Line2D

    fig = new_figure(5.6, 6.4)
    ax = fig.subplots()
    n = len(class_names)
    for c, name in enumerate(class_names):
        positives = labels == c
        if 0 < positives.sum() < len(labels):  # a curve needs positives and negatives
            shown = display.from_predictions(positives, probs[:, c], name=str(name), ax=ax)
            if prevalence:
                # a classifier without skill has precision = prevalence at every recall; classes of equal
                # prevalence share one height, so their dashes interleave (each class its own phase)
                rate = float(positives.mean())
                dashes = (3.0 * c, (3.0, 3.0 * (n - 1))) if n <= 6 else "--"
                ax.axhline(rate, linestyle=dashes, linewidth=1.0, color=shown.line_.get_color(), gid="prevalence")
                shown.line_.set_label(f"{shown.line_.get_label()}, prevalence {rate:.2f}")
    handles, _ = ax.get_legend_handles_labels()
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        handles.append(Line2D([], [], linestyle="--", color="grey", linewidth=0.8, label="chance (AUC = 0.5)"))
    if prevalence:
        handles.append(Line2D([], [], linestyle="--", color="grey", linewidth=0.9,
                              label="dashed: each class's prevalence\n(precision of a chance classifier)"))
    # scikit-learn makes the axes square; constrained layout then misplaces the legend outside (clipped)
    ax.set_aspect("auto")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    # below the axes: inside it covers the curves' corners, where they differ most; below (not right)
    # keeps the figure narrow enough to be read at half a page's width, beside its twin in report.html
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), borderaxespad=0.0, fontsize=8,
              ncol=2 if len(handles) > 6 else 1)
    return fig


def render_roc_curves(labels: Any, probs: Any, class_names: Sequence[str]) -> "Figure":
    from sklearn.metrics import RocCurveDisplay

    return _one_vs_rest(RocCurveDisplay, np.asarray(labels), np.asarray(probs), class_names,
                        "ROC curves (one class vs the rest)", ROC_XLABEL, ROC_YLABEL, diagonal=True, prevalence=False)


def render_pr_curves(labels: Any, probs: Any, class_names: Sequence[str]) -> "Figure":
    from sklearn.metrics import PrecisionRecallDisplay

    return _one_vs_rest(PrecisionRecallDisplay, np.asarray(labels), np.asarray(probs), class_names,
                        "Precision-recall curves (one class vs the rest)", PR_XLABEL, PR_YLABEL, diagonal=False,
                        prevalence=True)


#: font size of the per-bin image counts of the reliability diagram
_COUNT_FONTSIZE = 7


def render_reliability(bins: Dict[str, list], ece: float, n_bins: int, title: str = "") -> "Figure":
    fig = new_figure(5.0, 5.0)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    ax.plot(bins["confidence"], bins["accuracy"], marker="o", label=f"model (ECE {ece:.3f}, {n_bins} bins)")
    # each count above its point; counts that would collide stacked higher (neighbouring bins near 1.0 are a few
    # pixels apart); the y axis runs past 1.0 by what the highest count needs, so no count crosses the frame
    # into the title
    scale = 300.0  # points per unit of data, about, on this 5-inch square axes
    taken: List[List[tuple]] = []  # per stacking level: (left, right) of the counts already there, in points
    top = 1.0
    for x, y, n in zip(bins["confidence"], bins["accuracy"], bins["count"]):
        text = str(n)
        half = 0.6 * _COUNT_FONTSIZE * len(text) / 2 + 1.5
        right_edge = x > 0.95  # right-aligned near the right edge, so the count stays inside the axes
        span = (x * scale - 2 * half - 3, x * scale - 3) if right_edge else (x * scale - half, x * scale + half)
        level = next((i for i, spans in enumerate(taken) if all(span[1] <= a or b <= span[0] for a, b in spans)),
                     len(taken))
        if level == len(taken):
            taken.append([])
        taken[level].append(span)
        rise = 5 + 9 * level
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(-3 if right_edge else 0, rise),
                    ha="right" if right_edge else "center", va="bottom", fontsize=_COUNT_FONTSIZE, gid="bin-count")
        top = max(top, y + (rise + _COUNT_FONTSIZE + 4) / scale)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, top)
    ax.set_yticks(np.linspace(0, 1, 6))  # accuracy ticks stop at 1.0; above is room for the counts
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Reliability diagram (numbers: images per bin)")
    # lower right: under the diagonal at high confidence and near zero accuracy, where bins are rarest
    ax.legend(loc="lower right", fontsize=8)
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


#: the parts of a distillation run's training loss, in the order drawn (present ones only)
LOSS_PARTS = ("train/loss_ce", "train/loss_kd", "train/loss_logit", "train/loss_feat")


def _best_epoch(series: Dict[str, List[tuple]], monitor: str, mode: str) -> Optional[tuple]:
    """``(epoch, value)`` of the monitored metric's best epoch, the first of equals (as ModelCheckpoint keeps it)."""
    points = series.get(monitor)
    if not points:
        return None
    pick = max if mode == "max" else min
    best = pick(v for _, v in points)
    return next(p for p in points if p[1] == best)


def _one_based(points: List[tuple]) -> tuple:
    """Epochs as the console counts them (Lightning logs epoch 0 as the first)."""
    return tuple(e + 1 for e, _ in points), tuple(v for _, v in points)


def render_training_curves(series: Dict[str, List[tuple]], title: str = "", monitor: str = "val/balanced_accuracy",
                           mode: Optional[str] = None) -> Optional["Figure"]:
    """One panel per kind of curve, each on its own scale (None without data).

    Panels, those with data: the total training loss; its parts (cross-entropy, logit distillation,
    feature distillation; log scale, they differ by orders of magnitude); the validation loss; the
    validation metrics. The best epoch of ``monitor`` (``mode`` max, or min for a loss) is a vertical
    line on every panel. Epochs are numbered from 1, as the console does.
    """
    from matplotlib.ticker import MaxNLocator

    mode = mode or ("min" if "loss" in monitor else "max")
    panels: List[tuple] = []  # (title, ylabel, {label: points}, log scale)
    if series.get("train/loss_epoch"):
        panels.append(("training loss (total)", "loss", {"train/loss": series["train/loss_epoch"]}, False))
    parts = {k: series[k] for k in LOSS_PARTS if series.get(k)}
    # a term switched off (logit-only: lambda_feat=0) is 0 at every epoch: named, not drawn on a log axis
    unused = [k for k, points in parts.items() if all(v == 0 for _, v in points)]
    parts = {k: v for k, v in parts.items() if k not in unused}
    if parts:
        named = f"\n(0 at every epoch: {', '.join(unused)})" if unused else ""
        panels.append((f"training loss parts{named}", "loss (log scale)", parts, True))
    if series.get("val/loss"):
        panels.append(("validation loss", "loss", {"val/loss": series["val/loss"]}, False))
    metrics = _distinct_metrics(series, monitor)
    if metrics:
        panels.append(("validation metrics", "score", metrics, False))
    if not panels:
        return None

    best = _best_epoch(series, monitor, mode)
    last = max(e for _, _, curves, _ in panels for points in curves.values() for e, _ in points) + 1
    cols = 2 if len(panels) == 4 else len(panels)
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(5.2 * cols, 4.3 * rows + (0.3 if title else 0.0))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (panel_title, ylabel, curves, log) in zip(axes, panels):
        for label, points in curves.items():
            emphasis = label.split(" ")[0] == monitor  # the metric the best epoch is chosen on
            ax.plot(*_one_based(points), marker=".", label=label, linewidth=2.2 if emphasis else 1.2,
                    zorder=3 if emphasis else 2)
        if log:  # symlog keeps a part that touches 0 at some epoch on the axis
            positive = all(v > 0 for points in curves.values() for _, v in points)
            if positive:
                ax.set_yscale("log")
            else:
                ax.set_yscale("symlog", linthresh=1e-3)
        if best is not None:
            full = panel_title == "validation metrics"  # the value once, where the metric is drawn
            ax.axvline(best[0] + 1, color="black", linestyle=":", linewidth=1.2, gid="best-epoch",
                       label=f"best epoch {best[0] + 1}" + (f" ({monitor} {best[1]:.3f})" if full else ""))
        ax.set_xlim(0.5, last + 0.5)  # one epoch range on every panel (validation may run every k epochs)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(curves) > 2:  # many close lines: a legend inside would cover some, so it goes below the axes
            ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0.0)
        else:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def _distinct_metrics(series: Dict[str, List[tuple]], monitor: str) -> Dict[str, List[tuple]]:
    """The validation metrics to draw, the monitored one first; a metric equal to one already drawn at
    every epoch (macro recall is balanced accuracy) is named in that one's label, not drawn over it."""
    keys = [k for k in series if k.startswith("val/") and k != "val/loss"
            and not k.endswith(("num_samples", "num_unlabelled"))]
    keys.sort(key=lambda k: (k != monitor, k))
    drawn: List[tuple] = []  # (key, points, equal keys), in drawing order (the monitored metric keeps colour 1)
    for key in keys:
        twin = next((entry for entry in drawn if entry[1] == series[key]), None)
        if twin is None:
            drawn.append((key, series[key], []))
        else:
            twin[2].append(key)
    return {(f"{key} (= {', '.join(same)})" if same else key): points for key, points, same in drawn}
