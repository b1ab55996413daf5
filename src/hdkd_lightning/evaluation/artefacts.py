"""The evaluation artefacts of a scored split.

Files (``output_dir``): ``predictions.csv`` (one row per image), ``per_class.csv`` (sensitivity,
specificity, PPV, NPV, F1, AUROC, support per class), ``confusion_matrix.png``,
``roc_curves.png`` and ``pr_curves.png`` (one class vs the rest), ``reliability.png`` (the
calibration diagram), ``report.html`` (one self-contained page, :mod:`~hdkd_lightning.evaluation.report_page`)
and ``metrics.json``: the scalars, ``per_class``, ``confusion_matrix``, ``calibration`` (ECE with
its bins, and before/after temperature scaling when a temperature is set) and
``confidence_intervals`` (95% bootstrap over the images, :mod:`~hdkd_lightning.evaluation.statistics`)
and ``warnings`` (what makes the numbers misleading, e.g. one class predicted for every image;
each is also logged and shown at the top of report.html).

With per-image attributes (``subgroups``: sex, age band, body site, ...), also ``subgroups.csv``,
``subgroups.png`` (a forest plot) and a "Subgroups" section of report.html, from
:func:`hdkd_lightning.evaluation.subgroups.subgroup_metrics`, stored under metrics.json's ``subgroups``
(``null`` without attributes; the two files are then absent, an earlier evaluation's removed).

Every file is written atomically (:func:`hdkd_lightning.files.atomic_write`), ``metrics.json``
last: once it exists, the other files of the run are complete. Undefined values (a class absent
from the targets) are ``null`` in JSON and an empty cell in CSV. Call the writers on one process
only (global rank 0). The numbers come from :func:`hdkd_lightning.evaluation.metrics.compute_metrics`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
from torch import Tensor

from hdkd_lightning.evaluation.metrics import (
    PER_CLASS_KEYS,
    SCALAR_KEYS,
    check_labels,
    check_probs,
    collapse_warning,
    compute_metrics,
    to_numpy,
)
from hdkd_lightning.evaluation.subgroups import SUBGROUPS_CSV, SUBGROUPS_PNG
from hdkd_lightning.files import atomic_write

__all__ = ["RESULT_KEYS", "METRICS_JSON", "PER_CLASS_CSV", "PREDICTIONS_CSV", "CONFUSION_PNG", "ROC_PNG", "PR_PNG",
           "RELIABILITY_PNG", "REPORT_HTML", "SUBGROUPS_CSV", "SUBGROUPS_PNG", "EvaluationOptions", "write_evaluation_artefacts",
           "write_predictions_csv", "write_per_class_csv", "jsonable"]

ArrayLike = Union[Tensor, np.ndarray, Sequence]

log = logging.getLogger("hdkd_lightning")

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_PNG = "confusion_matrix.png"
ROC_PNG = "roc_curves.png"
PR_PNG = "pr_curves.png"
RELIABILITY_PNG = "reliability.png"
REPORT_HTML = "report.html"


@dataclass(frozen=True)
class EvaluationOptions:
    """The ``report.*`` config keys: bootstrap resamples (0: no intervals), ECE bins, the seed of the
    bootstrap, whether to write report.html, Grad-CAM examples per class and outcome in it, and the
    fewest labelled images a subgroup needs to be scored (the subgroup intervals use ``bootstrap``
    and ``seed`` too)."""

    bootstrap: int = 1000
    ece_bins: int = 15
    seed: int = 0
    html: bool = True
    gradcam_per_class: int = 2
    subgroup_min_images: int = 30

    @classmethod
    def from_config(cls, node: Any) -> "EvaluationOptions":
        from hdkd_lightning.files import to_plain

        values = dict(to_plain(node) or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown report key(s) {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**values)

# the keys of write_evaluation_artefacts' result before ``extra`` is merged in
RESULT_KEYS = ("class_names", "num_samples", "num_unlabelled", *SCALAR_KEYS, "per_class", "confusion_matrix",
               "classes_absent_from_targets", "calibration", "confidence_intervals", "warnings", "subgroups")


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


# -- the evaluation artefacts ----------------------------------------------------------------

def _calibration(probs: np.ndarray, labels: np.ndarray, temperature: Optional[float], bins: int) -> Dict[str, Any]:
    from hdkd_lightning.evaluation.statistics import apply_temperature, expected_calibration_error, reliability_bins

    out: Dict[str, Any] = {"ece": expected_calibration_error(probs, labels, bins), "bins": bins,
                           "binning": "equal-width top-label confidence bins", "temperature": temperature,
                           "reliability": reliability_bins(probs, labels, bins)}
    if temperature not in (None, 1.0):  # the probabilities are calibrated: also show the network's own
        out["ece_uncalibrated"] = expected_calibration_error(apply_temperature(probs, 1.0 / temperature), labels, bins)
    return out


def write_evaluation_artefacts(output_dir: Union[str, Path], class_names: Sequence[str], paths: Sequence[Any],
                               labels: ArrayLike, probs: ArrayLike, extra: Optional[Mapping[str, Any]] = None,
                               options: Optional[EvaluationOptions] = None,
                               examples: Optional[Sequence[Mapping[str, Any]]] = None,
                               subgroups: Optional[Mapping[str, Sequence[Optional[str]]]] = None) -> Dict[str, Any]:
    """Score a whole split and write every artefact (module docstring) into ``output_dir``.

    Args:
        labels: ``[N]`` class indices; -1 marks an unknown label (the row is in predictions.csv
            but not in the metrics; ``num_unlabelled`` counts them).
        probs: ``[N, C]`` softmax probabilities (already divided by ``extra["temperature"]`` when
            the network has one).
        extra: run information merged into the result (checkpoint, split, model, parameter
            count, temperature, ...); it may not reuse a metric's key.
        examples: Grad-CAM examples for report.html (:func:`hdkd_lightning.evaluation.explain.explain_examples`).
        subgroups: attribute name -> the value of each image, aligned with ``paths`` (None or "" when
            unknown): the split is scored per value (subgroups.csv, subgroups.png, metrics.json's
            ``subgroups``, report.html's "Subgroups"). None or empty: no subgroup files.

    Returns:
        The content of metrics.json; undefined values are ``None``.
    """
    from hdkd_lightning.evaluation import figures
    from hdkd_lightning.evaluation.statistics import bootstrap_intervals
    from hdkd_lightning.evaluation.subgroups import render_subgroup_figure, subgroup_metrics, write_subgroups_csv

    options = options or EvaluationOptions()
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
    known = labels_np >= 0
    result["calibration"] = _calibration(probs_np[known], labels_np[known], (extra or {}).get("temperature"),
                                         options.ece_bins)
    result["confidence_intervals"] = bootstrap_intervals(labels_np[known], probs_np[known], len(class_names),
                                                         options.bootstrap, options.seed)
    # every image, labelled or not: a collapsed model is collapsed whatever the labels
    collapsed = collapse_warning(class_names, probs_np)
    result["warnings"] = [collapsed] if collapsed else []
    for text in result["warnings"]:
        log.warning("evaluation: %s", text)
    result["subgroups"] = (subgroup_metrics(class_names, labels_np, probs_np, subgroups,
                                            min_images=options.subgroup_min_images, resamples=options.bootstrap,
                                            seed=options.seed) if subgroups else None)
    result.update(extra or {})
    result = jsonable(result)
    text = json.dumps(result, indent=2, allow_nan=False, default=str) + "\n"

    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(output_dir / PREDICTIONS_CSV, class_names, paths, probs_np, labels_np)
    write_per_class_csv(output_dir / PER_CLASS_CSV, result)
    images = {
        CONFUSION_PNG: figures.render_confusion_matrix(result["confusion_matrix"], class_names),
        ROC_PNG: figures.render_roc_curves(labels_np[known], probs_np[known], class_names),
        PR_PNG: figures.render_pr_curves(labels_np[known], probs_np[known], class_names),
        RELIABILITY_PNG: figures.render_reliability(result["calibration"]["reliability"], result["calibration"]["ece"],
                                                    options.ece_bins),
    }
    if result["subgroups"]:
        images[SUBGROUPS_PNG] = render_subgroup_figure(result["subgroups"], result["balanced_accuracy"])
        write_subgroups_csv(output_dir / SUBGROUPS_CSV, result["subgroups"], class_names)
    else:  # an earlier evaluation's subgroups would pass for this one's
        for name in (SUBGROUPS_CSV, SUBGROUPS_PNG):
            (output_dir / name).unlink(missing_ok=True)
    pngs = {name: figures.png_bytes(fig) for name, fig in images.items()}
    for name, data in pngs.items():
        atomic_write(output_dir / name, lambda fh, data=data: fh.write(data), binary=True)
    if options.html:
        from hdkd_lightning.evaluation.report_page import render_report

        html = render_report(result, pngs, examples or [])
        atomic_write(output_dir / REPORT_HTML, lambda fh: fh.write(html))
    # metrics.json last: once it exists, the other files of the run are complete
    atomic_write(output_dir / METRICS_JSON, lambda fh: fh.write(text))
    return result
