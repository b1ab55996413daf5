"""How certain and how calibrated a scored split is: bootstrap intervals, ECE, temperature scaling.

* :func:`bootstrap_intervals`: 95% percentile-bootstrap confidence intervals over the test images
  (``scipy.stats.bootstrap``; images resampled with replacement, ``resamples`` times, seeded) for
  accuracy, balanced accuracy, macro F1 and macro AUROC, each computed on a resample exactly as
  :mod:`hdkd_lightning.lit.metrics` defines it (scikit-learn's functions; AUROC averaged over the
  classes with positives and negatives in the resample).
* :func:`expected_calibration_error`: top-label ECE with ``bins`` equal-width confidence bins
  (15 by default): the image-weighted mean of ``|accuracy - mean confidence|`` per bin
  (torchmetrics' ``multiclass_calibration_error``, L1 norm). :func:`reliability_bins` gives the
  per-bin accuracy and confidence of the reliability diagram (scikit-learn's
  ``calibration_curve`` on "the top class is right").
* :func:`fit_temperature`: the temperature ``T`` that minimises the negative log-likelihood of
  ``softmax(logits / T)`` on a (validation) split (LBFGS on ``log T``); the logits are recovered
  from probabilities as ``log p`` (softmax ignores the per-image constant).
  :func:`apply_temperature` rescales probabilities with it.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch

__all__ = ["CI_METRICS", "bootstrap_intervals", "expected_calibration_error", "reliability_bins", "fit_temperature",
           "apply_temperature"]

CI_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro")


def _scores(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    pred = probs.argmax(axis=1)
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in range(num_classes) if 0 < (labels == c).sum() < len(labels)]
    return np.array([accuracy_score(labels, pred), balanced_accuracy_score(labels, pred),
                     f1_score(labels, pred, average="macro", zero_division=0),
                     float(np.mean(aucs)) if aucs else np.nan])


def bootstrap_intervals(labels: Any, probs: Any, num_classes: int, resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> Dict[str, Any]:
    """``{"accuracy": [low, high], ..., "method", "resamples", "seed", "level"}`` (see the module docstring)."""
    from scipy.stats import bootstrap

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    out: Dict[str, Any] = {"method": "percentile bootstrap over test images (scipy.stats.bootstrap)",
                           "resamples": int(resamples), "seed": int(seed), "level": float(level)}
    if resamples <= 0 or len(labels) < 2:
        return out
    with np.errstate(invalid="ignore"):
        result = bootstrap((np.arange(len(labels)),), lambda idx: _scores(labels[idx], probs[idx], num_classes),
                           n_resamples=int(resamples), confidence_level=level, method="percentile",
                           random_state=int(seed), vectorized=False)
    for i, name in enumerate(CI_METRICS):
        low, high = float(result.confidence_interval.low[i]), float(result.confidence_interval.high[i])
        out[name] = [low, high] if np.isfinite(low) and np.isfinite(high) else None
    return out


def expected_calibration_error(probs: Any, labels: Any, bins: int = 15) -> float:
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return float(multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=bins, norm="l1"))


def reliability_bins(probs: Any, labels: Any, bins: int = 15) -> Dict[str, list]:
    """Per non-empty confidence bin: accuracy, mean confidence and image count."""
    from sklearn.calibration import calibration_curve

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(int)
    accuracy, mean_conf = calibration_curve(correct, confidence, n_bins=bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.histogram(confidence, bins=edges)[0]
    return {"accuracy": accuracy.tolist(), "confidence": mean_conf.tolist(), "count": counts[counts > 0].tolist()}


def _logits(probs: Any) -> torch.Tensor:
    return torch.log(torch.as_tensor(np.asarray(probs), dtype=torch.float64).clamp_min(1e-12))


def fit_temperature(probs: Any, labels: Any, max_iter: int = 200) -> float:
    """The temperature minimising the NLL of ``softmax(log p / T)`` (T in [0.05, 20])."""
    logits = _logits(probs)
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss
    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the probabilities a network gives when its logits are divided by ``T``."""
    return torch.softmax(_logits(probs) / float(temperature), dim=1).numpy()

