"""Classification metrics that stay honest on imbalanced data (definitions only).

:class:`ClassificationMetrics` wraps a torchmetrics ``MetricCollection``; as a sub-module of a
LightningModule it follows the module to its device, and torchmetrics gathers its states across
DDP processes when it is computed (every process must then call :meth:`~ClassificationMetrics.compute`
or :meth:`~ClassificationMetrics.scalars`). :func:`compute_metrics` scores a whole split held by
one process. The files made from these numbers are written by
:mod:`hdkd_lightning.evaluation.artefacts`; the console table and the logger uploads live in
:mod:`hdkd_lightning.evaluation.console` and :mod:`hdkd_lightning.evaluation.uploads`.

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
* ``per_class``: ``{name: {sensitivity, specificity, ppv, npv, f1, auroc, support}}``, one class
  against the rest: sensitivity = recall = TP / (TP + FN), specificity = TN / (TN + FP),
  PPV = precision = TP / (TP + FP), NPV = TN / (TN + FN) (torchmetrics' multiclass metrics with
  ``average=None``; 0 / 0 counts as 0), ``support`` = images of that class in the targets.
* ``confusion_matrix``: counts, rows = true class, columns = predicted class.

:meth:`ClassificationMetrics.compute` returns Python floats, undefined values as ``float("nan")``.
The artefact files are strict JSON/CSV, so there undefined values are ``null`` / an empty cell.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassNegativePredictiveValue,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

__all__ = ["SCALAR_KEYS", "PER_CLASS_KEYS", "ClassificationMetrics", "compute_metrics", "to_numpy", "check_probs",
           "check_labels", "collapsed_prediction", "collapse_warning"]

ArrayLike = Union[Tensor, np.ndarray, Sequence]

#: scalar metrics, in the order they are reported
SCALAR_KEYS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auroc_macro")
#: per-class metrics (``support`` is an int), in the order of the columns of per_class.csv
PER_CLASS_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1", "auroc", "support")

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
            "specificity_per_class": MulticlassSpecificity(average=None, **kw),
            "npv_per_class": MulticlassNegativePredictiveValue(average=None, **kw),
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
                # a class without test images has no sensitivity (torchmetrics reports 0)
                "sensitivity": float(out["recall_per_class"][i]) if support[i] else float("nan"),
                "specificity": float(out["specificity_per_class"][i]),
                "ppv": float(out["precision_per_class"][i]),
                "npv": float(out["npv_per_class"][i]),
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


# -- a model that predicts one class only ------------------------------------------------------

def collapsed_prediction(probs: ArrayLike) -> Optional[int]:
    """The class every image is predicted as (arg-max, first on ties), or None.

    None also for fewer than two images: one image always has a single prediction, which says
    nothing about the model. A collapsed model (a short or diverged training) still gets a
    "completed" run and plausible-looking files, so the commands warn with :func:`collapse_warning`.
    """
    probs = to_numpy(probs)
    if probs.ndim != 2 or probs.shape[0] < 2:
        return None
    predicted = probs.argmax(axis=1)
    return int(predicted[0]) if (predicted == predicted[0]).all() else None


def collapse_warning(class_names: Sequence[str], probs: ArrayLike) -> Optional[str]:
    """The warning text for a collapsed prediction (:func:`collapsed_prediction`), or None."""
    cls = collapsed_prediction(probs)
    if cls is None:
        return None
    return (f"the model predicts {class_names[cls]} for every one of the {to_numpy(probs).shape[0]} images: it has not "
            f"learnt to tell the classes apart (train longer, or check the data and the loss), and its Grad-CAM maps "
            f"say little")


# -- array helpers ---------------------------------------------------------------------------

def to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def check_probs(probs: np.ndarray, num_classes: int) -> np.ndarray:
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


def check_labels(labels: ArrayLike, n: int, num_classes: int) -> np.ndarray:
    labels = to_numpy(labels)
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
    probs = check_probs(to_numpy(probs), len(class_names))
    labels = check_labels(labels, probs.shape[0], len(class_names))
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
