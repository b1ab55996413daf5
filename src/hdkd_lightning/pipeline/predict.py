"""``hdkd-predict``: class probabilities for image files with a checkpoint or an exported model.

The network runs through :func:`hdkd_lightning.deploy.backends.load_predictor` (deployed
checkpoint, pt2 program or ONNX Runtime, on ``device``); images go through the model's inference
recipe (:mod:`hdkd_lightning.deploy.recipe`: its image size, resize and normalisation). The CSV has one row per
image: ``path,label,predicted,prob_<class>...`` (the format of ``hdkd-eval``'s predictions.csv,
``label`` empty) plus ``top<i>``/``top<i>_prob`` columns when ``topk`` > 1. The time spent in the
network and outside it (decoding, resizing, reading, writing) is measured and reported.
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
    """Add top1..topk (class, probability) columns to a predictions CSV, rewritten atomically."""
    from hdkd_lightning.files import atomic_write

    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    header = rows[0] + [c for i in range(1, k + 1) for c in (f"top{i}", f"top{i}_prob")]

    def write(out) -> None:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(header)
        for row, idx, p in zip(rows[1:], order, probs):
            w.writerow(row + [v for j in idx for v in (class_names[j], str(p[j]))])
    atomic_write(csv_path, write)


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
        raise ConfigError(f"input={cfg.input}: no readable images found")
    all_probs = np.concatenate(probs)
    output = _absolute(cfg.output)
    write_predictions_csv(output, names, paths, all_probs)
    if k > 1:
        _append_topk(output, names, all_probs, k)
    wall = time.perf_counter() - started
    summary = {"images": len(paths), "model": str(_absolute(cfg.ckpt_path)), "backend": predictor.where,
               "device": str(predictor.device), "seconds": wall, "network_seconds": in_network,
               "outside_network_seconds": wall - in_network, "outside_network_share": (wall - in_network) / wall,
               "images_per_second": len(paths) / wall, "output": str(output)}
    if cfg.get("json"):
        order = np.argsort(-all_probs, axis=1, kind="stable")[:, :max(k, 1)]
        rows = [{"path": p, "probabilities": {n: float(v) for n, v in zip(names, row)},
                 "top": [{"class": names[j], "probability": float(row[j])} for j in idx]}
                for p, row, idx in zip(paths, all_probs, order)]
        write_json_atomic(_absolute(cfg.json), {"summary": summary, "predictions": rows})
    log.info("%d images in %.2f s (%.1f img/s) with %s: network %.2f s, outside the network (decode, resize, "
             "I/O) %.2f s = %.0f%%; wrote %s", len(paths), wall, len(paths) / wall, predictor.where, in_network,
             wall - in_network, 100 * summary["outside_network_share"], output)
    return summary
