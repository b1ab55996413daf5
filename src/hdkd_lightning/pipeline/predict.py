"""``hdkd-predict``: class probabilities for image files with a checkpoint or an exported model.

The network runs through :func:`hdkd_lightning.deploy.backends.load_predictor` (deployed
checkpoint, pt2 program or ONNX Runtime, on ``device``); images go through the model's inference
recipe (:mod:`hdkd_lightning.deploy.recipe`: its image size, resize and normalisation). The time
spent in the network and outside it (decoding, resizing, reading, writing) is measured and reported.

What it writes:

* ``output`` (CSV), one row per predicted image: ``path,label,predicted,prob_<class>...``, the
  format of ``hdkd-eval``'s predictions.csv. ``predicted`` is the most probable class (the first
  of equals). ``label`` is the name of the image's folder when that folder is named like one of
  the model's classes (``input=test/`` with ``test/glioma/*.jpg``: ``glioma``), else empty; the log
  says how many images got one. With ``topk`` > 1, ``predicted_prob`` (the probability of
  ``predicted``) and ``top2,top2_prob ... top<k>,top<k>_prob`` follow: the first choice is the
  ``predicted`` column, not repeated as a ``top1`` column.
* With ``on_bad_image=skip``, the unreadable files left out are listed in ``<output>.skipped.csv``
  (``pred.csv`` -> ``pred.skipped.csv``: ``path,reason``), not as rows of the predictions CSV, whose
  every row stays a prediction a script can read without checking for holes; none skipped: no such
  file (an earlier run's is removed). ``json=`` also lists them, under ``skipped``.
* ``json=<file>``: per image its probabilities, top classes and label; the skipped files; a timing
  summary.
* One image predicted: its top class and probability (and the next ``topk`` - 1) on the terminal.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from omegaconf import DictConfig

from hdkd_lightning.errors import ConfigError

log = logging.getLogger("hdkd_lightning")

__all__ = ["run_predict"]


def _absolute(path: Any) -> Path:
    path = Path(str(path)).expanduser()
    return path if path.is_absolute() else Path(os.getcwd()) / path


def _append_topk(csv_path: Path, class_names: List[str], probs: np.ndarray, k: int) -> None:
    """Add ``predicted_prob`` and top2..topk (class, probability) columns to a predictions CSV, rewritten
    atomically (the first choice is its ``predicted`` column)."""
    from hdkd_lightning.files import atomic_write

    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # the first of equals first, as ``predicted``
    header = rows[0] + ["predicted_prob"] + [c for i in range(2, k + 1) for c in (f"top{i}", f"top{i}_prob")]

    def write(out) -> None:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(header)
        for row, idx, p in zip(rows[1:], order, probs):
            w.writerow(row + [str(p[idx[0]])] + [v for j in idx[1:] for v in (class_names[j], str(p[j]))])
    atomic_write(csv_path, write)


def folder_labels(paths: List[str], class_names: List[str]) -> np.ndarray:
    """The class index of each image whose folder is named like one of ``class_names``, else -1."""
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index.get(Path(p).parent.name, -1) for p in paths], dtype=np.int64)


def skipped_csv_path(output: Path) -> Path:
    """Where the files left out by ``on_bad_image=skip`` are listed: ``pred.csv`` -> ``pred.skipped.csv``."""
    return output.with_suffix(".skipped.csv")


def _write_skipped(path: Path, skipped: List[Dict[str, str]]) -> None:
    from hdkd_lightning.files import atomic_write

    def write(out) -> None:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["path", "reason"])
        for row in skipped:
            w.writerow([row["path"], row["reason"]])
    atomic_write(path, write)


def one_image_line(path: str, class_names: List[str], probs: np.ndarray, k: int, label: str = "") -> str:
    """The terminal line of a single prediction: top class and probability, the next k - 1 after it."""
    order = np.argsort(-probs, kind="stable")[:max(k, 1)]
    line = f"{path}: {class_names[order[0]]} (probability {probs[order[0]]:.3f})"
    if len(order) > 1:
        line += "; next: " + ", ".join(f"{class_names[j]} {probs[j]:.3f}" for j in order[1:])
    if label:
        line += f"; label (its folder): {label}"
    return line


def run_predict(cfg: DictConfig) -> Dict[str, Any]:
    """Predict every image of ``cfg.input`` (a file or a folder, recursive); returns a summary."""
    import torch

    from hdkd_lightning.deploy.backends import load_predictor
    from hdkd_lightning.errors import CheckpointError
    from hdkd_lightning.evaluation.artefacts import write_predictions_csv
    from hdkd_lightning.files import write_json_atomic

    source = _absolute(cfg.input)
    if not source.exists():
        raise ConfigError(f"input={cfg.input}: no such file or folder")
    k = int(cfg.get("topk", 1) or 0)
    try:
        predictor = load_predictor(_absolute(cfg.ckpt_path), device=str(cfg.get("device", "auto")),
                                   card=cfg.get("card"), threads=cfg.get("threads"))
    except CheckpointError:
        raise  # unsafe or foreign checkpoint: its own message
    except ValueError as exc:  # a bad device (a missing or bad model card is a CheckpointError)
        raise ConfigError(str(exc)) from None
    names = predictor.class_names
    if not 0 <= k <= len(names):
        raise ConfigError(f"topk={k}: choose 0..{len(names)} (the model has {len(names)} classes)")
    if not predictor.recipe.recorded:
        log.warning("%s records no preprocessing (written by an earlier version): assuming %s resize and "
                    "ImageNet normalisation", cfg.ckpt_path, predictor.recipe.interpolation)
    dm = predictor.recipe.image_files(source, names, batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers),
                                      max_image_pixels=cfg.get("max_image_pixels"),
                                      on_bad_image=cfg.get("on_bad_image", "error"))
    skipped = [{"path": str(p.path), "reason": p.detail} for p in dm.skipped_inputs]
    paths: List[str] = []
    probs: List[np.ndarray] = []
    in_network = 0.0
    started = time.perf_counter()
    for batch in dm.predict_dataloader():
        images = batch["image"]
        t0 = time.perf_counter()
        p = predictor(images)
        if cfg.get("tta_flip", False):
            p = (p + predictor(torch.flip(images, dims=[3]))) / 2
        in_network += time.perf_counter() - t0
        probs.append(p)
        paths += list(batch["path"])
    if not paths:
        raise ConfigError(f"input={cfg.input}: no readable images found"
                          + (f" ({len(skipped)} unreadable file(s) skipped, named above)" if skipped else ""))
    all_probs = np.concatenate(probs)
    output = _absolute(cfg.output)
    labels = folder_labels(paths, names)
    labelled = int((labels >= 0).sum())
    if labelled:
        log.info("label column filled from class subfolders: %d image%s%s", labelled, "" if labelled == 1 else "s",
                 f" ({len(paths) - labelled} others, in folders not named like a class, left empty)"
                 if labelled < len(paths) else "")
    write_predictions_csv(output, names, paths, all_probs, labels=labels)
    if k > 1:
        _append_topk(output, names, all_probs, k)
    skipped_csv = skipped_csv_path(output)
    if skipped:
        _write_skipped(skipped_csv, skipped)
        log.warning("%d unreadable file(s) skipped (on_bad_image=skip), not in %s: listed with the reason in %s",
                    len(skipped), output.name, skipped_csv)
    else:  # an earlier run's list would pass for this one's
        skipped_csv.unlink(missing_ok=True)
    wall = time.perf_counter() - started
    summary = {"images": len(paths), "model": str(_absolute(cfg.ckpt_path)), "backend": predictor.where,
               "device": str(predictor.device), "seconds": wall, "network_seconds": in_network,
               "outside_network_seconds": wall - in_network, "outside_network_share": (wall - in_network) / wall,
               "images_per_second": len(paths) / wall, "output": str(output), "labelled_from_folders": labelled,
               "skipped": len(skipped), "skipped_csv": str(skipped_csv) if skipped else None}
    if cfg.get("json"):
        order = np.argsort(-all_probs, axis=1, kind="stable")[:, :max(k, 1)]
        rows = [{"path": p, "label": names[y] if y >= 0 else None,
                 "probabilities": {n: float(v) for n, v in zip(names, row)},
                 "top": [{"class": names[j], "probability": float(row[j])} for j in idx]}
                for p, y, row, idx in zip(paths, labels, all_probs, order)]
        write_json_atomic(_absolute(cfg.json), {"summary": summary, "predictions": rows, "skipped": skipped})
    if len(paths) == 1:  # one image: its answer here, not only in a file
        line = one_image_line(paths[0], names, all_probs[0], k, names[labels[0]] if labels[0] >= 0 else "")
        print(line, flush=True)
        log.info("%s", line, extra={"file_only": True})  # the run's log file keeps it too
    log.info("%d image%s in %.2f s (%.1f img/s) with %s: network %.2f s, outside the network (decode, resize, "
             "I/O) %.2f s = %.0f%%; wrote %s", len(paths), "" if len(paths) == 1 else "s", wall, len(paths) / wall,
             predictor.where, in_network, wall - in_network, 100 * summary["outside_network_share"], output)
    return summary
