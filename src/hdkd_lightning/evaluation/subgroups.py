"""Results of a scored test split per subgroup of images (sex, age band, body site, diagnosis type, ...).

A model that is right on average can be wrong on a part of the population; per-image metadata
(HAM10000's ``sex``, ``age``, ``localization``, ``dx_type``) lets the test split be cut along each
attribute and every part scored on its own. :func:`subgroup_metrics` computes, for every value of
every attribute:

* ``n``: the labelled images with that value (unlabelled images, label -1, are left out of
  everything; an empty or missing value is the value ``"unknown"``, listed last);
* ``status``: ``"too_small"`` when ``n < min_images`` (default 30): no number at all, since a
  balanced accuracy over a handful of images says more about chance than about the model;
  ``"class_absent"`` when some class has no image in the group: its balanced accuracy and macro
  AUROC would average over fewer classes than the whole test set's, so they are not given (they
  are not comparable), only the sensitivity of the classes present; else ``"ok"``;
* ``balanced_accuracy`` (mean per-class recall, ``sklearn.metrics.balanced_accuracy_score``),
  ``auroc_macro`` (mean over the classes of the one-vs-rest ``roc_auc_score``) and per-class
  ``sensitivity`` (recall), each as ``{"estimate", "low", "high"}`` (sensitivity also with ``n``,
  the group's images of that class). The estimates are computed by the same code as the
  resamples, on the group itself, and equal scikit-learn's functions (the tests check it).

Intervals: a percentile bootstrap **stratified by true class within the group**: each resample
draws, for every class present in the group, as many of that class's images with replacement as
the group has. Resampling the group's images without strata would let a rare class (a group of
60 with 2 dermatofibromas) vanish from some resamples, where balanced accuracy and macro AUROC
change meaning (fewer classes averaged) or are undefined (no positives); the interval would then
mix different quantities. With strata every resample holds every class the group holds, in the
same numbers, so every resample is defined and the interval reflects the uncertainty of each
class's recall given its size, which is what balanced accuracy averages (it and macro AUROC do not
depend on the class mix). The caveat of any bootstrap holds per class: a class with very few images
in a group varies little between resamples (one image: the same recall in every resample), so
such an interval is narrower than the truth; ``sensitivity[class]["n"]`` says how few. ``low`` and ``high`` are
``np.quantile`` (linear interpolation) of the ``resamples`` statistics at ``(1 - level) / 2`` and
``(1 + level) / 2``; ``resamples=0`` gives the estimates with ``low``/``high`` None.

Random draws, exactly (the tests redo them by hand): each group has its own generator,
``np.random.default_rng([seed, crc32(attribute), crc32(value)])`` (UTF-8, ``zlib.crc32``), so a
group's interval does not depend on which other groups or attributes exist; for each class
present, in class-index order, ``rng.integers(0, n_c, size=(resamples, n_c))`` picks that class's
images (in their input order) for every resample.

Speed: every resample is scored at once from per-image draw counts (resample x image): recall from
a matrix product, AUROC from the Mann-Whitney statistic on the images sorted by score, ties
counted half, from a cumulative sum of the negatives' counts. Measured on 2 CPU cores shared with
other work (load ~4): 1,500 test images, 7 classes, 4 attributes with 28 groups in all, 1000
resamples: 0.9 s of CPU time, 1.5-2 s wall clock.

:func:`write_subgroups_csv` writes the result as one CSV row per (attribute, value);
:func:`render_subgroup_figure` draws it as a forest plot; :func:`read_subgroups_csv` reads the CSV
back (``hdkd-report``'s subgroup table, :mod:`hdkd_lightning.evaluation.comparison`).
"""

from __future__ import annotations

import csv
import math
import re
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from hdkd_lightning.evaluation.statistics import weighted_auroc
from hdkd_lightning.files import atomic_write

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure

__all__ = ["subgroup_metrics", "write_subgroups_csv", "read_subgroups_csv", "render_subgroup_figure",
           "subgroup_columns", "value_order", "UNKNOWN", "SUBGROUPS_CSV", "SUBGROUPS_PNG", "STATUS_TEXT"]

UNKNOWN = "unknown"
SUBGROUPS_CSV = "subgroups.csv"
SUBGROUPS_PNG = "subgroups.png"
#: a status in words (report tables)
STATUS_TEXT = {"ok": "", "too_small": "too small", "class_absent": "class absent"}


def _value(v: Any) -> str:
    """An attribute value as text; None, "" and NaN (a missing cell read by pandas) are ``"unknown"``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return UNKNOWN
    text = str(v).strip()
    return text if text else UNKNOWN


def value_order(value: str) -> tuple:
    """Natural order (``"5-9"`` before ``"10-19"``), a lower open band (``"<30"``) before the numbers it
    bounds, ``"unknown"`` last."""
    below = value.startswith("<")
    text = value[1:] if below else value
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", text) if p)
    return (value == UNKNOWN, not below, parts, value)


def _interval(values: np.ndarray, level: float) -> Dict[str, Optional[float]]:
    """``values[0]``: the estimate (the group itself); ``values[1:]``: the bootstrap statistics."""
    if len(values) == 1:
        return {"estimate": float(values[0]), "low": None, "high": None}
    low, high = np.quantile(values[1:], [(1 - level) / 2, (1 + level) / 2])
    return {"estimate": float(values[0]), "low": float(low), "high": float(high)}


def _draw_counts(rng: np.random.Generator, members: Sequence[np.ndarray], n: int, resamples: int) -> np.ndarray:
    """``[1 + resamples, n]``: how often each image of the group is drawn; row 0 is the group itself (every
    image once), then one row per resample (stratified draws, module docstring). ``members[k]``: the group
    positions of the k-th present class."""
    counts = np.ones((1 + resamples, n), dtype=np.float64)
    rows = np.arange(resamples)[:, None]
    for pos in members:
        k = len(pos)
        draws = rng.integers(0, k, size=(resamples, k))
        counts[1:, pos] = np.bincount((draws + rows * k).ravel(), minlength=resamples * k).reshape(resamples, k)
    return counts


def _score_group(class_names: Sequence[str], labels: np.ndarray, probs: np.ndarray, rng: np.random.Generator,
                 resamples: int, level: float, min_images: int) -> Dict[str, Any]:
    n = len(labels)
    c_all = len(class_names)
    support = np.bincount(labels, minlength=c_all)
    absent = [class_names[c] for c in range(c_all) if support[c] == 0]
    row: Dict[str, Any] = {"n": int(n), "absent_classes": absent, "balanced_accuracy": None, "auroc_macro": None,
                           "sensitivity": {name: None for name in class_names}}
    if n < min_images:
        row.update(status="too_small", note=f"fewer than {min_images} images")
        return row
    row.update(status="class_absent" if absent else "ok", note=f"no {', '.join(absent)} in this group" if absent else "")
    present = [c for c in range(c_all) if support[c] > 0]
    members = [np.flatnonzero(labels == c) for c in present]
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    counts = _draw_counts(rng, members, n, resamples)  # row 0: the group itself, then the resamples

    recalls = []
    for c, pos in zip(present, members):
        recall = counts[:, pos] @ correct[pos] / len(pos)
        recalls.append(recall)
        row["sensitivity"][class_names[c]] = dict(_interval(recall, level), n=int(len(pos)))
    if absent:  # fewer classes than the whole test set: not comparable with its balanced accuracy / AUROC
        return row
    # every class present: the mean recall over all classes is sklearn's balanced_accuracy_score
    row["balanced_accuracy"] = _interval(np.mean(recalls, axis=0), level)
    aucs = [weighted_auroc(counts, probs[:, c], labels == c) for c in range(c_all)]
    row["auroc_macro"] = _interval(np.mean(aucs, axis=0), level)
    return row


def subgroup_metrics(class_names: Sequence[str], labels: Any, probs: Any,
                     attributes: Mapping[str, Sequence[Optional[str]]], *, min_images: int = 30,
                     resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Dict[str, Any]:
    """Balanced accuracy, macro AUROC and per-class sensitivity per value of each attribute (module docstring).

    Args:
        labels: ``[N]`` class indices, -1 for an unlabelled image (left out of everything).
        probs: ``[N, C]`` probabilities (the arg-max is the prediction).
        attributes: attribute name -> the value of each of the ``N`` images (str or None; None and
            "" are ``"unknown"``).

    Returns:
        ``{"min_images", "resamples", "level", "seed", "method", "attributes": {name: [group, ...]}}``,
        each group ``{"value", "n", "status", "absent_classes", "note", "balanced_accuracy",
        "auroc_macro", "sensitivity"}`` (JSON-ready; None where undefined), groups in natural order
        of their value, ``"unknown"`` last.
    """
    from hdkd_lightning.evaluation.metrics import check_labels, check_probs, to_numpy

    class_names = [str(c) for c in class_names]
    if min_images < 1:
        raise ValueError(f"min_images must be at least 1, got {min_images}")
    if resamples < 0:
        raise ValueError(f"resamples must be 0 or more, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    probs = check_probs(to_numpy(probs), len(class_names)).astype(np.float64)
    labels = check_labels(labels, probs.shape[0], len(class_names))
    known = labels >= 0
    method = (f"percentile bootstrap stratified by true class within each group (each class's images resampled "
              f"with replacement, {resamples} resamples, seed {seed}); groups with fewer than {min_images} "
              f"labelled images, or without some class, are not given a balanced accuracy")
    out: Dict[str, Any] = {"min_images": int(min_images), "resamples": int(resamples), "level": float(level),
                           "seed": int(seed), "method": method, "attributes": {}}
    for name, values in attributes.items():
        name = str(name)
        if len(values) != len(labels):
            raise ValueError(f"subgroup attribute {name!r} has {len(values)} values for {len(labels)} images")
        texts = np.array([_value(v) for v in values], dtype=object)[known]
        groups = []
        for value in sorted(set(texts.tolist()), key=value_order):
            inside = texts == value
            rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8")),
                                         zlib.crc32(value.encode("utf-8"))])
            scored = _score_group(class_names, labels[known][inside], probs[known][inside], rng, int(resamples),
                                  float(level), int(min_images))
            groups.append({"value": value, **scored})
        out["attributes"][name] = groups
    return out


# -- the CSV ----------------------------------------------------------------------------------

def subgroup_columns(class_names: Sequence[str]) -> List[str]:
    """The columns of subgroups.csv."""
    cols = ["attribute", "value", "n", "status", "note"]
    for metric in ("balanced_accuracy", "auroc_macro"):
        cols += [metric, f"{metric}_low", f"{metric}_high"]
    for c in class_names:
        cols += [f"sensitivity_{c}", f"sensitivity_{c}_low", f"sensitivity_{c}_high"]
    return cols


def _cells(entry: Optional[Mapping[str, Any]]) -> List[Any]:
    if not entry:
        return ["", "", ""]
    return ["" if entry.get(k) is None else entry[k] for k in ("estimate", "low", "high")]


def write_subgroups_csv(path: Union[str, Path], result: Mapping[str, Any], class_names: Sequence[str]) -> Path:
    """One row per (attribute, value), columns :func:`subgroup_columns`; an undefined value is an empty cell."""
    class_names = [str(c) for c in class_names]

    def write(fh: IO) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(subgroup_columns(class_names))
        for attribute, groups in result["attributes"].items():
            for g in groups:
                cells = [attribute, g["value"], g["n"], g["status"], g["note"]]
                cells += _cells(g.get("balanced_accuracy")) + _cells(g.get("auroc_macro"))
                for c in class_names:
                    cells += _cells((g.get("sensitivity") or {}).get(c))
                writer.writerow(cells)

    return atomic_write(path, write)


def read_subgroups_csv(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The rows of a subgroups.csv: ``attribute``, ``value``, ``status``, ``note`` as text, ``n`` as int,
    every other column a float or None (empty cell)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: Dict[str, Any] = {}
            for key, cell in raw.items():
                if key in ("attribute", "value", "status", "note"):
                    row[key] = cell
                elif key == "n":
                    row[key] = int(cell)
                else:
                    row[key] = float(cell) if cell not in ("", None) else None
            rows.append(row)
    return rows


# -- the figure -------------------------------------------------------------------------------

#: inches per row of the forest plot, and around the rows (title, axis, legend)
ROW_HEIGHT = 0.27
FRAME_HEIGHT = 1.9
LABEL_CHARS = 32


def _short_label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _status_text(group: Mapping[str, Any], min_images: int) -> str:
    if group["status"] == "too_small":
        return f"n={group['n']}: too few images to score (fewer than {min_images})"
    return f"not scored: no {', '.join(group['absent_classes'])} in this group"


def render_subgroup_figure(result: Mapping[str, Any], overall_balanced_accuracy: Optional[float]) -> "Figure":
    """A forest plot of :func:`subgroup_metrics`' result: one row per group under a bold row per attribute;
    a point at the group's balanced accuracy with its interval as a horizontal bar, the value and
    interval written at the right; the whole test set's balanced accuracy as a vertical dashed line;
    a group that is too small or lacks a class is a row of grey text saying so, without a point."""
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    from hdkd_lightning.evaluation.figures import new_figure

    min_images = int(result.get("min_images", 30))
    level = float(result.get("level", 0.95))
    rows: List[Dict[str, Any]] = []  # top to bottom
    for attribute, groups in result["attributes"].items():
        rows.append({"header": True, "label": _short_label(str(attribute))})
        for g in groups:
            rows.append({"header": False, "label": f"{_short_label(str(g['value']))}  (n={g['n']})", "group": g})
    fig = new_figure(8.0, FRAME_HEIGHT + ROW_HEIGHT * max(len(rows), 1))
    ax = fig.subplots()
    ys = list(range(len(rows)))
    scored = [(y, r["group"]["balanced_accuracy"]) for y, r in zip(ys, rows)
              if not r["header"] and r["group"].get("balanced_accuracy")]

    # the x-range from the data (points, intervals, the whole-test line), with a margin; never beyond [0, 1]
    xs = [b["estimate"] for _, b in scored] + [b[k] for _, b in scored for k in ("low", "high") if b.get(k) is not None]
    if overall_balanced_accuracy is not None:
        xs.append(float(overall_balanced_accuracy))
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    margin = max(0.03, 0.08 * (hi - lo))
    lo, hi = max(0.0, lo - margin), min(1.0, hi + margin)
    if hi - lo < 0.1:  # a single value: some width around it
        mid = (lo + hi) / 2
        lo, hi = max(0.0, mid - 0.05), min(1.0, mid + 0.05)
    ax.set_xlim(lo, hi)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row at the top

    band = blended_transform_factory(ax.transAxes, ax.transData)
    for y, r in zip(ys, rows):
        if r["header"]:
            ax.axhspan(y - 0.5, y + 0.5, color="#eeeeee", zorder=0, linewidth=0, gid="attribute-band")
    if scored:
        errs = np.array([[b["estimate"] - b["low"] if b.get("low") is not None else 0.0,
                          b["high"] - b["estimate"] if b.get("high") is not None else 0.0] for _, b in scored]).T
        ax.errorbar([b["estimate"] for _, b in scored], [y for y, _ in scored], xerr=errs, fmt="o", color="#1f4e8c",
                    ecolor="#1f4e8c", elinewidth=1.6, capsize=3, markersize=5, zorder=3, gid="subgroup-points")
    for y, r in zip(ys, rows):
        if not r["header"] and not r["group"].get("balanced_accuracy"):
            ax.text(0.01, y, _status_text(r["group"], min_images), transform=band, ha="left", va="center",
                    fontsize=8, color="#777777", zorder=4, gid="status-text",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
    handles = []
    if scored:
        bars = any(b.get("low") is not None for _, b in scored)
        handles.append(Line2D([], [], marker="o", color="#1f4e8c", linewidth=1.6 if bars else 0, markersize=5,
                              label=f"group: balanced accuracy, {level:.0%} interval" if bars
                              else "group: balanced accuracy (no interval: 0 resamples)"))
    if overall_balanced_accuracy is not None:
        ax.axvline(float(overall_balanced_accuracy), color="#b42318", linestyle="--", linewidth=1.2, zorder=2,
                   gid="whole-test")
        handles.append(Line2D([], [], color="#b42318", linestyle="--", linewidth=1.2,
                              label=f"whole test set ({float(overall_balanced_accuracy):.3f})"))

    ax.set_yticks(ys, [r["label"] for r in rows], fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r["header"]:
            tick.set_fontweight("bold")
            tick.set_fontsize(9)
    ax.tick_params(axis="y", length=0)
    # the numbers at the right, one per scored row (the same ticks on a twin axis)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks([y for y, _ in scored],
                     [f"{b['estimate']:.3f}" + (f" [{b['low']:.3f}, {b['high']:.3f}]" if b.get("low") is not None else "")
                      for _, b in scored], fontsize=8)
    right.tick_params(axis="y", length=0)
    ax.set_xlabel("test balanced accuracy" + (f" (axis from {lo:.2f}, not 0)" if lo > 0 else ""), fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Balanced accuracy per subgroup of the test images", fontsize=10)
    if handles:  # below the axes, outside them: inside it would cover rows
        fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncol=len(handles), frameon=False)
    return fig
