"""Classification metrics that stay honest on imbalanced data, and the evaluation artefacts.

:class:`ClassificationMetrics` wraps a torchmetrics ``MetricCollection``; as a sub-module of a
LightningModule it follows the module to its device, and torchmetrics gathers its states across
DDP processes when it is computed (every process must then call :meth:`~ClassificationMetrics.compute`
or :meth:`~ClassificationMetrics.scalars`).

Definitions (all match scikit-learn; the tests check it):

* ``accuracy``: fraction of images whose arg-max class is the true class.
* ``balanced_accuracy``: mean per-class recall over the classes that occur in the targets, as
  ``sklearn.metrics.balanced_accuracy_score`` and the ISIC challenge define it. It is derived from
  the confusion matrix rather than taken from ``MulticlassAccuracy(average="macro")``, because
  torchmetrics counts a class that is predicted but absent from the targets as a recall of 0,
  which lowers the score; scikit-learn (and this module) leaves such a class out.
* ``precision_macro`` / ``recall_macro`` / ``f1_macro``: unweighted means over the classes that
  occur in the targets or the predictions (scikit-learn's default label set); an undefined ratio
  (0 / 0) counts as 0, as scikit-learn's ``zero_division`` default does.
* ``auroc_macro``: mean of the one-vs-rest ROC AUCs of the classes that have both positive and
  negative images in the targets (equal to ``roc_auc_score(multi_class="ovr", average="macro")``
  when every class occurs). A class without positives has no defined ROC curve: torchmetrics
  would silently score it 0 and pull the macro mean down; here its per-class AUROC is NaN and it
  is left out of the mean. ``auroc_macro`` is NaN only when no class qualifies (e.g. a single
  class in the targets). Nothing here raises because a class is missing.
* ``per_class``: ``{name: {precision, recall, f1, auroc, support}}`` (``support`` = images of
  that class in the targets).
* ``confusion_matrix``: counts, rows = true class, columns = predicted class.

:meth:`ClassificationMetrics.compute` returns Python floats, undefined values as ``float("nan")``.
The artefact files are strict JSON/CSV, so there (and in the dict :func:`write_evaluation_artefacts`
returns) undefined values are ``null`` / ``None`` / an empty CSV cell.

Files written by :func:`write_evaluation_artefacts` (each atomically: a temporary file in the
same folder, then ``os.replace``): ``metrics.json``, ``per_class.csv``, ``predictions.csv`` and
``confusion_matrix.png``. Call it on one process only (global rank 0).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import IO, Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from hdkd_lightning.files import atomic_write

__all__ = [
    "SCALAR_KEYS",
    "PER_CLASS_KEYS",
    "ClassificationMetrics",
    "compute_metrics",
    "write_evaluation_artefacts",
    "write_predictions_csv",
    "write_per_class_csv",
    "render_confusion_matrix",
    "log_artefacts",
    "format_metrics_table",
    "print_metrics_table",
]

ArrayLike = Union[Tensor, np.ndarray, Sequence]

#: scalar metrics, in the order they are reported
SCALAR_KEYS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auroc_macro")
#: per-class metrics (``support`` is an int), in the order of the columns of per_class.csv
PER_CLASS_KEYS = ("precision", "recall", "f1", "auroc", "support")

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_PNG = "confusion_matrix.png"

# the keys of write_evaluation_artefacts' result before ``extra`` is merged in
_RESULT_KEYS = ("class_names", "num_samples", "num_unlabelled", *SCALAR_KEYS, "per_class", "confusion_matrix",
                "classes_absent_from_targets")

# torchmetrics' ROC warns for a class without positives/negatives and scores it 0; we handle it
_ROC_WARNINGS = r"No (positive|negative) samples in targets"


class ClassificationMetrics(nn.Module):
    """Streaming multiclass metrics over softmax probabilities (see the module docstring).

    Args:
        num_classes: number of classes ``C``.
        class_names: ``C`` names, in class-index order.
        sync_on_compute: gather the states of all DDP processes when computing (the default, for
            metrics accumulated batch by batch on each process). Pass ``False`` when this process
            already holds the whole data set, so the data are neither gathered nor counted twice.
        validate_args: let torchmetrics check the values of each batch (class indices within
            range, probabilities in [0, 1]). Off by default because those checks synchronise
            the device with the host on every update; the shapes are always checked.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str], *, sync_on_compute: bool = True,
                 validate_args: bool = False) -> None:
        super().__init__()
        class_names = [str(n) for n in class_names]
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for {num_classes} classes: {class_names}")
        if len(set(class_names)) != num_classes:
            raise ValueError(f"class names must be unique, got {class_names}")
        self.num_classes = num_classes
        self.class_names = class_names
        kw = dict(num_classes=num_classes, validate_args=validate_args, sync_on_compute=sync_on_compute)
        self.collection = MetricCollection({
            "accuracy": MulticlassAccuracy(average="micro", **kw),
            "precision_macro": MulticlassPrecision(average="macro", **kw),
            "recall_macro": MulticlassRecall(average="macro", **kw),
            "f1_macro": MulticlassF1Score(average="macro", **kw),
            "precision_per_class": MulticlassPrecision(average=None, **kw),
            "recall_per_class": MulticlassRecall(average=None, **kw),
            "f1_per_class": MulticlassF1Score(average=None, **kw),
            # exact (thresholds=None) AUROC keeps every probability; macro is derived below
            "auroc_per_class": MulticlassAUROC(average=None, thresholds=None, **kw),
            "confusion_matrix": MulticlassConfusionMatrix(**kw),
        })
        self._updated = False

    @torch.no_grad()
    def update(self, probs: Tensor, target: Tensor) -> None:
        """Add a batch: ``probs`` ``[B, C]`` softmax probabilities, ``target`` ``[B]`` class indices.

        This code adds no host synchronisation (no ``.item()``, no boolean indexing; only
        ``validate_args`` adds torchmetrics' value checks). torchmetrics' own counting uses
        ``torch.bincount``, which on CUDA reads back the largest bin index: one tiny sync per
        update that torchmetrics imposes. Targets must lie in ``[0, C)``: drop unlabelled (-1)
        images before calling (an out-of-range target makes torchmetrics raise, not miscount).
        """
        if probs.ndim != 2 or probs.shape[1] != self.num_classes:
            raise ValueError(f"probs must have shape [batch, {self.num_classes}], got {tuple(probs.shape)}")
        if target.ndim != 1 or target.shape[0] != probs.shape[0]:
            raise ValueError(f"target must have shape [{probs.shape[0]}], got {tuple(target.shape)}")
        if not probs.is_floating_point():
            raise TypeError(f"probs must be floating point probabilities, got {probs.dtype}")
        # half / bfloat16 outputs of mixed precision are scored in float32
        self.collection.update(probs.detach().float(), target.detach().long())
        self._updated = True

    def reset(self) -> None:
        self.collection.reset()
        self._updated = False

    def _compute_tensors(self) -> Dict[str, Tensor]:
        """All metrics as tensors on the metrics' device (gathered across processes if syncing)."""
        if not self._updated:
            raise RuntimeError("ClassificationMetrics.compute() called before any update(): no samples were scored")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_ROC_WARNINGS)
            out = dict(self.collection.compute())
        cm = out["confusion_matrix"]
        support = cm.sum(dim=1)
        n = support.sum()
        present = support > 0
        nan = torch.tensor(float("nan"), device=cm.device)
        recall_pc = torch.where(present, cm.diagonal().float() / support.clamp_min(1).float(), nan)
        out["balanced_accuracy"] = recall_pc.nanmean()
        # one-vs-rest AUROC is defined only for classes with both positives and negatives
        defined = present & (support < n)
        out["auroc_per_class"] = torch.where(defined, out["auroc_per_class"].float(), nan)
        out["auroc_macro"] = out["auroc_per_class"].nanmean()
        out["support"] = support
        out["num_samples"] = n
        return out

    def scalars(self, prefix: str) -> Dict[str, Tensor]:
        """Scalar metrics as 0-d tensors on the metrics' device, keyed ``f"{prefix}/{name}"``.

        For ``LightningModule.log_dict``; values are already gathered across processes.
        ``auroc_macro`` may be NaN (see the module docstring).
        """
        out = self._compute_tensors()
        sep = "/" if prefix else ""
        return {f"{prefix}{sep}{k}": out[k].float() for k in SCALAR_KEYS}

    def compute(self) -> Dict[str, Any]:
        """All metrics as plain Python values (floats, ints, lists); undefined values are NaN."""
        out = {k: v.detach().cpu() for k, v in self._compute_tensors().items()}
        result: Dict[str, Any] = {k: float(out[k]) for k in SCALAR_KEYS}
        support = out["support"].tolist()
        result["per_class"] = {
            name: {
                "precision": float(out["precision_per_class"][i]),
                "recall": float(out["recall_per_class"][i]),
                "f1": float(out["f1_per_class"][i]),
                "auroc": float(out["auroc_per_class"][i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(self.class_names)
        }
        result["confusion_matrix"] = [[int(x) for x in row] for row in out["confusion_matrix"].tolist()]
        result["num_samples"] = int(out["num_samples"])
        absent = [name for name, s in zip(self.class_names, support) if s == 0]
        result["classes_absent_from_targets"] = absent
        if absent:
            warnings.warn(
                f"classes absent from the targets: {absent}; they are left out of balanced_accuracy and "
                f"auroc_macro and their per-class AUROC is undefined (NaN)", UserWarning, stacklevel=2)
        return result


# -- array helpers ---------------------------------------------------------------------------

def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _check_probs(probs: np.ndarray, num_classes: int) -> np.ndarray:
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must have shape [N, {num_classes}], got {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise TypeError(f"probs must be floating point probabilities, got {probs.dtype}")
    if probs.dtype == np.float16:
        probs = probs.astype(np.float32)
    if probs.size:
        if not np.isfinite(probs).all():
            raise ValueError("probs contain NaN or infinite values")
        if probs.min() < -1e-6 or probs.max() > 1 + 1e-6 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-2):
            raise ValueError("probs must be softmax probabilities (each in [0, 1], rows summing to 1); "
                             "apply softmax to logits first")
    return probs


def _check_labels(labels: ArrayLike, n: int, num_classes: int) -> np.ndarray:
    labels = _to_numpy(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape [{n}], got {labels.shape}")
    if n and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    labels = labels.astype(np.int64)
    bad = (labels < -1) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"labels must be class indices in [0, {num_classes}) or -1 (unknown), "
                         f"got {sorted(set(labels[bad].tolist()))[:5]}")
    return labels


def compute_metrics(class_names: Sequence[str], labels: ArrayLike, probs: ArrayLike) -> Dict[str, Any]:
    """Metrics of a whole data set held by this process (no cross-process gathering).

    Rows labelled -1 (unknown) are ignored. Same numbers as :class:`ClassificationMetrics`
    accumulated batch by batch, because it is that class, run on the CPU in float32.
    """
    class_names = list(class_names)
    probs = _check_probs(_to_numpy(probs), len(class_names))
    labels = _check_labels(labels, probs.shape[0], len(class_names))
    known = labels >= 0
    if not known.any():
        raise ValueError("no labelled images (all labels are -1): metrics need labels; "
                         "use write_predictions_csv for unlabelled data")
    metrics = ClassificationMetrics(len(class_names), class_names, sync_on_compute=False, validate_args=False)
    metrics.update(torch.from_numpy(np.ascontiguousarray(probs[known], dtype=np.float32)),
                   torch.from_numpy(labels[known]))
    result = metrics.compute()
    result["num_unlabelled"] = int((~known).sum())
    return result


# -- files -----------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """NaN/inf -> None, numpy/torch scalars and arrays -> Python, paths -> str (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (Tensor, np.ndarray)):
        return _jsonable(_to_numpy(value).tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
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
    probs = _check_probs(_to_numpy(probs), len(class_names))
    n = probs.shape[0]
    if len(paths) != n:
        raise ValueError(f"got {len(paths)} paths for {n} rows of probabilities")
    labels_np = None if labels is None else _check_labels(labels, n, len(class_names))
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


def _figure_png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


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
    probs_np = _check_probs(_to_numpy(probs), len(class_names))
    labels_np = _check_labels(labels, probs_np.shape[0], len(class_names))
    if len(paths) != probs_np.shape[0]:
        raise ValueError(f"got {len(paths)} paths for {probs_np.shape[0]} rows of probabilities")

    clash = sorted(set(extra or {}) & set(_RESULT_KEYS))
    if clash:
        raise ValueError(f"extra may not overwrite computed metrics: {clash}")

    computed = compute_metrics(class_names, labels_np, probs_np)
    result: Dict[str, Any] = {"class_names": class_names, "num_samples": computed.pop("num_samples"),
                              "num_unlabelled": computed.pop("num_unlabelled")}
    result.update(computed)
    result.update(extra or {})
    result = _jsonable(result)
    text = json.dumps(result, indent=2, allow_nan=False, default=str) + "\n"

    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(output_dir / PREDICTIONS_CSV, class_names, paths, probs_np, labels_np)
    write_per_class_csv(output_dir / PER_CLASS_CSV, result)
    fig = render_confusion_matrix(result["confusion_matrix"], class_names)
    atomic_write(output_dir / CONFUSION_PNG, lambda fh: fig.savefig(fh, format="png"), binary=True)
    # metrics.json last: once it exists, the other files of the run are complete
    atomic_write(output_dir / METRICS_JSON, lambda fh: fh.write(text))
    return result


# -- loggers ---------------------------------------------------------------------------------

def _flatten_scalars(metrics: Mapping[str, Any], prefix: str) -> Dict[str, float]:
    def number(v: Any) -> Optional[float]:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            return None
        v = float(v)
        return v if math.isfinite(v) else None

    sep = "/" if prefix else ""
    flat: Dict[str, float] = {}
    for key, value in metrics.items():
        v = number(value)
        if v is not None:
            flat[f"{prefix}{sep}{key}"] = v
    for name, row in (metrics.get("per_class") or {}).items():
        for key, value in row.items():
            v = number(value)
            if v is not None:
                flat[f"{prefix}{sep}per_class/{name}/{key}"] = v
    return flat


def log_artefacts(logger: Any, metrics: Mapping[str, Any], output_dir: Union[str, Path], *,
                  prefix: str = "test", log_scalars: bool = True, step: Optional[int] = None) -> None:
    """Send evaluation results to a Lightning logger (or a list of them; None does nothing).

    * every logger: the finite numeric scalars, flattened (``test/balanced_accuracy``,
      ``test/per_class/<class>/f1``, ...) via ``logger.log_metrics`` (skip with ``log_scalars=False``
      when ``LightningModule.log_dict`` already logged them);
    * ``WandbLogger``: the confusion-matrix image (``wandb.Image``) and the per-class table
      (``wandb.Table``);
    * ``TensorBoardLogger``: the confusion-matrix image (``add_image``).

    The image is ``output_dir/confusion_matrix.png`` (rendered from ``metrics`` if absent). A
    failure to upload media is reported as a warning: the files on disk are the record.
    """
    if logger is None:
        return
    if isinstance(logger, (list, tuple)):
        for one in logger:
            log_artefacts(one, metrics, output_dir, prefix=prefix, log_scalars=log_scalars, step=step)
        return
    if log_scalars:
        flat = _flatten_scalars(metrics, prefix)
        if flat:
            logger.log_metrics(flat, step=step)

    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if not isinstance(logger, (WandbLogger, TensorBoardLogger)) or "confusion_matrix" not in metrics:
        if log_scalars:
            logger.save()
        return
    sep = "/" if prefix else ""
    try:
        from PIL import Image

        png = Path(output_dir) / CONFUSION_PNG
        if png.is_file():
            image = Image.open(png)
            image.load()
        else:
            names = metrics.get("class_names") or list((metrics.get("per_class") or {}).keys())
            image = Image.open(io.BytesIO(_figure_png_bytes(render_confusion_matrix(metrics["confusion_matrix"], names))))
        image = image.convert("RGB")
        if isinstance(logger, WandbLogger):
            import wandb

            columns = ["class", *PER_CLASS_KEYS]
            rows = [[name, *[row.get(k) for k in PER_CLASS_KEYS]] for name, row in (metrics.get("per_class") or {}).items()]
            rows = [[None if isinstance(v, float) and not math.isfinite(v) else v for v in r] for r in rows]
            logger.experiment.log({f"{prefix}{sep}confusion_matrix": wandb.Image(image),
                                   f"{prefix}{sep}per_class": wandb.Table(columns=columns, data=rows)})
        else:
            logger.experiment.add_image(f"{prefix}{sep}confusion_matrix", np.asarray(image),
                                        global_step=step or 0, dataformats="HWC")
    except Exception as err:  # noqa: BLE001 - media upload is best effort, the files are on disk
        warnings.warn(f"could not log the confusion matrix to {type(logger).__name__}: {err!r}", UserWarning)
    logger.save()


# -- console ---------------------------------------------------------------------------------

def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{float(v):.{digits}f}"


def format_metrics_table(metrics: Mapping[str, Any], title: str = "Evaluation") -> "Table":
    """A rich Table: one row per class, then the macro averages; accuracy and balanced
    accuracy in the caption. Undefined values show as ``n/a``."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("class", style="bold")
    for key in PER_CLASS_KEYS:
        table.add_column(key, justify="right")
    for name, row in (metrics.get("per_class") or {}).items():
        table.add_row(str(name), *[_fmt(row.get(k)) for k in PER_CLASS_KEYS])
    table.add_section()
    table.add_row("macro avg", _fmt(metrics.get("precision_macro")), _fmt(metrics.get("recall_macro")),
                  _fmt(metrics.get("f1_macro")), _fmt(metrics.get("auroc_macro")), _fmt(metrics.get("num_samples")),
                  style="bold")
    caption = (f"accuracy {_fmt(metrics.get('accuracy'))}   "
               f"balanced accuracy {_fmt(metrics.get('balanced_accuracy'))}   "
               f"images {_fmt(metrics.get('num_samples'))}")
    absent = metrics.get("classes_absent_from_targets") or []
    if absent:
        caption += f"\nabsent from targets (not in balanced accuracy / AUROC): {', '.join(map(str, absent))}"
    table.caption = caption
    return table


def print_metrics_table(metrics: Mapping[str, Any], title: str = "Evaluation", console: Any = None) -> None:
    """Print :func:`format_metrics_table` to ``console`` (a new rich Console by default)."""
    from rich.console import Console

    (console or Console()).print(format_metrics_table(metrics, title))
