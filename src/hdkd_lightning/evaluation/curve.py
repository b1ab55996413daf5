"""The learning curve of ``hdkd-report``: test balanced accuracy against training images per class.

Drawn for each dataset whose runs span more than one training-set size (``data.train_per_class``).
A *line* is one model trained the same way at every size: the rows whose settings agree on every
key but the panel's (dataset, training-set size, and the same keys of a distillation run's
teacher). Its label is the shortest row label it has (a row's label can name settings that only
tell it apart from another row of its own panel). Lines seen at one size only (a recipe check)
are left out of the curve.

One row of two panels per dataset: (left) each line's mean test balanced accuracy, with every
seed as a point; (right) each line's paired difference to the baseline (``paired.py``) with its
interval, when there is one at two sizes or more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["learning_curves", "plot_learning_curves", "curve_markdown"]


def learning_curves(rows: List[Dict[str, Any]], paired: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``{dataset: {"sizes": [...], "lines": [{"label", "sizes", "means", "values", "difference"}]}}``;
    ``difference`` is ``None`` or ``{"sizes", "mean", "low", "high", "baseline"}``."""
    by_dataset: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        if r.get("train_per_class") is not None and r.get("dataset") is not None:
            by_dataset.setdefault(str(r["dataset"]), []).append(r)
    diffs: Dict[tuple, Dict[str, Any]] = {}
    for c in (paired or {}).get("comparisons", []):
        diffs[(str(c["dataset"]), c["line"], c["train_per_class"])] = c
    # rows come ordered by model within each panel (teacher, student, ..., hdkd): lines keep that order
    place: Dict[int, int] = {}
    seen_in_panel: Dict[str, int] = {}
    for r in rows:
        place[id(r)] = seen_in_panel.get(r["panel"], 0)
        seen_in_panel[r["panel"]] = place[id(r)] + 1
    curves: Dict[str, Any] = {}
    for dataset, members in by_dataset.items():
        sizes = sorted({float(r["train_per_class"]) for r in members})
        if len(sizes) < 2:
            continue
        lines: Dict[str, List[Dict[str, Any]]] = {}
        for r in members:
            lines.setdefault(r["line"], []).append(r)
        out = []
        for key, line_rows in lines.items():
            line_rows = sorted(line_rows, key=lambda r: float(r["train_per_class"]))
            if len({float(r["train_per_class"]) for r in line_rows}) < 2:
                continue
            label = min((r["model"] for r in line_rows), key=lambda s: (len(s.split(" ")), len(s)))
            found = [diffs.get((dataset, key, r["train_per_class"])) for r in line_rows]
            found = [c for c in found if c is not None]
            difference = None
            if len(found) >= 2:
                difference = {"sizes": [float(c["train_per_class"]) for c in found],
                              "mean": [c["mean"] for c in found], "low": [c["low"] for c in found],
                              "high": [c["high"] for c in found],
                              "baseline": min((c["baseline"] for c in found), key=len)}
            out.append({"label": label, "sizes": [float(r["train_per_class"]) for r in line_rows],
                        "means": [r["balanced_accuracy_mean"] for r in line_rows],
                        "values": [[v for v in r["balanced_accuracy_values"] if v is not None] for r in line_rows],
                        "difference": difference, "_order": min(place[id(r)] for r in line_rows)})
        if out:
            out.sort(key=lambda line: (line.pop("_order"), line["label"]))
            _unique_labels(out)
            curves[dataset] = {"sizes": sizes, "lines": out}
    return curves


def _unique_labels(lines: List[Dict[str, Any]]) -> None:
    seen: Dict[str, int] = {}
    for line in lines:
        seen[line["label"]] = seen.get(line["label"], 0) + 1
        if seen[line["label"]] > 1:
            line["label"] = f"{line['label']} ({seen[line['label']]})"


def _size_text(v: float) -> str:
    return f"{v:g}"


def plot_learning_curves(curves: Dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from hdkd_lightning.files import atomic_write

    fig = Figure(figsize=(11.0, 4.0 * len(curves) + 0.4), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(curves), 2, squeeze=False)
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
    colours: Dict[str, str] = {}  # one colour per model label in every row of panels, as the one legend says
    handles: Dict[str, Any] = {}
    for (acc_ax, diff_ax), (dataset, curve) in zip(axes, curves.items()):
        lines = curve["lines"]
        # each line a little to the side (in log space) so that seeds and intervals do not overlap
        shifts = np.exp(np.linspace(-0.04, 0.04, len(lines))) if len(lines) > 1 else np.ones(1)
        any_difference = False
        for k, line in enumerate(lines):
            colour = colours.setdefault(line["label"], palette[len(colours) % len(palette)])
            xs = np.asarray(line["sizes"]) * shifts[k]
            handle, = acc_ax.plot(xs, line["means"], "-o", color=colour, lw=1.8, ms=5, label=line["label"])
            handles.setdefault(line["label"], handle)
            for x, values in zip(xs, line["values"]):
                acc_ax.scatter([x] * len(values), values, s=14, facecolors="none", edgecolors=colour, alpha=0.8)
            d = line["difference"]
            if d is None:
                continue
            any_difference = True
            dx = np.asarray(d["sizes"]) * shifts[k]
            mean = np.asarray(d["mean"]) * 100
            low = np.asarray([m if v is None else v * 100 for m, v in zip(mean, d["low"])])
            high = np.asarray([m if v is None else v * 100 for m, v in zip(mean, d["high"])])
            diff_ax.errorbar(dx, mean, yerr=[mean - low, high - mean], fmt="-o", color=colour, ms=5, lw=1.8,
                             capsize=4)
        for ax in (acc_ax, diff_ax):
            ax.set_xscale("log")
            ax.set_xticks(curve["sizes"], [_size_text(s) for s in curve["sizes"]])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("training images per class (log scale)")
            ax.grid(alpha=0.3)
        acc_ax.set_ylabel("test balanced accuracy")
        acc_ax.set_title(f"{dataset}: mean over seeds (line), each seed (circle)", fontsize=10)
        baselines = {line["difference"]["baseline"] for line in lines if line["difference"]}
        if any_difference:
            diff_ax.axhline(0.0, color="grey", lw=1, ls="--")
            diff_ax.set_ylabel(f"difference to {' / '.join(sorted(baselines))},\ntest balanced accuracy (percentage points)")
            diff_ax.set_title(f"{dataset}: paired difference, mean and 95% interval", fontsize=10)
        else:
            diff_ax.set_axis_off()
            diff_ax.text(0.5, 0.5, "no paired difference at two sizes or more\n(report.md says why)", ha="center",
                         va="center", transform=diff_ax.transAxes, color="grey")
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, frameon=False,
               title="model")
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png"), binary=True)


def curve_markdown(curves: Dict[str, Any], figure: Optional[str]) -> List[str]:
    """The report.md section: which datasets have a curve, and the figure."""
    if not curves:
        return []
    out = ["## Learning curve", "",
           "Test balanced accuracy against training images per class, for the datasets trained at more than one "
           "size: " + "; ".join(f"{d} at {', '.join(_size_text(s) for s in c['sizes'])}" for d, c in curves.items())
           + ". Left: mean over seeds (line) and each seed (circle); right: the paired difference to the baseline "
             "(mean and 95% interval, see \"Paired differences\").", ""]
    if figure:
        out += [f"![learning curve]({figure})", ""]
    return out
