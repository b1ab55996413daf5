"""The evaluation artefacts of a scored split: metrics.json, per_class.csv, predictions.csv and
confusion_matrix.png.

Every file is written atomically (:func:`hdkd_lightning.files.atomic_write`), ``metrics.json``
last: once it exists, the other files of the run are complete. Undefined values (a class absent
from the targets) are ``null`` in JSON and an empty cell in CSV. Call the writers on one process
only (global rank 0). The numbers come from :func:`hdkd_lightning.lit.metrics.compute_metrics`.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, IO, Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
from torch import Tensor

from hdkd_lightning.files import atomic_write
from hdkd_lightning.lit.metrics import (PER_CLASS_KEYS, SCALAR_KEYS, check_labels, check_probs, compute_metrics,
                                        to_numpy)

if TYPE_CHECKING:  # annotations only: the import happens where the object is made
    from matplotlib.figure import Figure

__all__ = ["RESULT_KEYS", "METRICS_JSON", "PER_CLASS_CSV", "PREDICTIONS_CSV", "CONFUSION_PNG", "write_evaluation_artefacts",
           "write_predictions_csv", "write_per_class_csv", "render_confusion_matrix", "jsonable"]

ArrayLike = Union[Tensor, np.ndarray, Sequence]

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_PNG = "confusion_matrix.png"

# the keys of write_evaluation_artefacts' result before ``extra`` is merged in
RESULT_KEYS = ("class_names", "num_samples", "num_unlabelled", *SCALAR_KEYS, "per_class", "confusion_matrix",
                "classes_absent_from_targets")


def jsonable(value: Any) -> Any:
    """NaN/inf -> None, numpy/torch scalars and arrays -> Python, paths -> str (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (Tensor, np.ndarray)):
        return jsonable(to_numpy(value).tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_predictions_csv(path: Union[str, Path], class_names: Sequence[str], paths: Sequence[Any],
                          probs: ArrayLike, labels: Optional[ArrayLike] = None) -> Path:
    """Write one row per image: ``path,label,predicted,prob_<class>...``.

    ``label`` and ``predicted`` are class names; ``label`` is empty when ``labels`` is None or
    the label is -1 (unknown). ``predicted`` is the arg-max class (first one on ties, as the
    metrics). Probabilities are written at full precision of their dtype.
    """
    class_names = [str(n) for n in class_names]
    probs = check_probs(to_numpy(probs), len(class_names))
    n = probs.shape[0]
    if len(paths) != n:
        raise ValueError(f"got {len(paths)} paths for {n} rows of probabilities")
    labels_np = None if labels is None else check_labels(labels, n, len(class_names))
    predicted = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)

    def write(fh: IO) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "predicted", *[f"prob_{c}" for c in class_names]])
        for i in range(n):
            label = "" if labels_np is None or labels_np[i] < 0 else class_names[labels_np[i]]
            # str() of a numpy float32/float64 is its shortest exact (round-trip) representation
            writer.writerow([str(paths[i]), label, class_names[predicted[i]], *map(str, probs[i])])

    return atomic_write(path, write)


def write_per_class_csv(path: Union[str, Path], metrics: Mapping[str, Any]) -> Path:
    """``class,precision,recall,f1,auroc,support``, one row per class (undefined -> empty cell)."""
    per_class = metrics["per_class"]

    def cell(v: Any) -> Any:
        return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

    def write(fh: IO) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["class", *PER_CLASS_KEYS])
        for name, row in per_class.items():
            writer.writerow([name, *[cell(row.get(k)) for k in PER_CLASS_KEYS]])

    return atomic_write(path, write)


# -- confusion matrix figure -----------------------------------------------------------------

def render_confusion_matrix(confusion_matrix: Any, class_names: Sequence[str], title: str = "") -> "Figure":
    """A two-panel matplotlib Figure (counts; row-normalised = recall per true class).

    Uses ``matplotlib.figure.Figure`` with an Agg canvas, so it neither needs a display nor
    touches pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    fig = Figure(figsize=(2 * (side + margin + 0.9), side + margin + 0.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
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


# -- the evaluation artefacts ----------------------------------------------------------------

def write_evaluation_artefacts(output_dir: Union[str, Path], class_names: Sequence[str], paths: Sequence[Any],
                               labels: ArrayLike, probs: ArrayLike,
                               extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Score a whole split and write ``metrics.json``, ``per_class.csv``, ``predictions.csv`` and
    ``confusion_matrix.png`` into ``output_dir`` (created if needed).

    Args:
        labels: ``[N]`` class indices; -1 marks an unknown label (the row is in predictions.csv
            but not in the metrics; ``num_unlabelled`` counts them).
        probs: ``[N, C]`` softmax probabilities.
        extra: run information merged into the result (checkpoint, split, model, parameter
            count, ...); it may not reuse a metric's key.

    Returns:
        The content of metrics.json: ``class_names``, ``num_samples``, ``num_unlabelled``, the
        scalars, ``per_class``, ``confusion_matrix``, ``classes_absent_from_targets`` and
        ``extra``'s keys; undefined values are ``None``.
    """
    output_dir = Path(output_dir)
    class_names = [str(n) for n in class_names]
    probs_np = check_probs(to_numpy(probs), len(class_names))
    labels_np = check_labels(labels, probs_np.shape[0], len(class_names))
    if len(paths) != probs_np.shape[0]:
        raise ValueError(f"got {len(paths)} paths for {probs_np.shape[0]} rows of probabilities")

    clash = sorted(set(extra or {}) & set(RESULT_KEYS))
    if clash:
        raise ValueError(f"extra may not overwrite computed metrics: {clash}")

    computed = compute_metrics(class_names, labels_np, probs_np)
    result: Dict[str, Any] = {"class_names": class_names, "num_samples": computed.pop("num_samples"),
                              "num_unlabelled": computed.pop("num_unlabelled")}
    result.update(computed)
    result.update(extra or {})
    result = jsonable(result)
    text = json.dumps(result, indent=2, allow_nan=False, default=str) + "\n"

    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(output_dir / PREDICTIONS_CSV, class_names, paths, probs_np, labels_np)
    write_per_class_csv(output_dir / PER_CLASS_CSV, result)
    fig = render_confusion_matrix(result["confusion_matrix"], class_names)
    atomic_write(output_dir / CONFUSION_PNG, lambda fh: fig.savefig(fh, format="png"), binary=True)
    # metrics.json last: once it exists, the other files of the run are complete
    atomic_write(output_dir / METRICS_JSON, lambda fh: fh.write(text))
    return result
