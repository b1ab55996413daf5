"""``hdkd-explain``: Grad-CAM maps of a checkpoint's network for image files (see
:mod:`hdkd_lightning.evaluation.explain` for the target layer and why)."""

from __future__ import annotations

import csv
import html
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig

from hdkd_lightning.errors import ConfigError

log = logging.getLogger("hdkd_lightning")

__all__ = ["run_explain"]


def _index_html(rows: List[Dict[str, Any]], title: str, warning: Optional[str] = None) -> str:
    """The page of the maps; ``warning`` (a collapsed model, see ``collapse_warning``) goes at its top in red."""
    note = (f'<p class="warning" style="color:#b42318;border:2px solid #b42318;padding:.5rem .8rem;font-weight:bold">'
            f"Warning: {html.escape(warning)}.</p>\n" if warning else "")
    cells = "\n".join(
        f'<figure><img src="{html.escape(r["png"])}" alt="{html.escape(r["image"])}" loading="lazy">'
        f'<figcaption>{html.escape(Path(r["image"]).name)}: predicted {html.escape(r["predicted"])} '
        f'({float(r["probability"]):.2f}); map of {html.escape(r["target"])}</figcaption></figure>' for r in rows)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1rem} figure{display:inline-block;width:560px;margin:.4rem}"
            "img{width:100%}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>\n{note}{cells}\n</body></html>\n")


def run_explain(cfg: DictConfig) -> Path:
    import torch

    from hdkd_lightning.checkpoints import network_from_checkpoint
    from hdkd_lightning.deploy.recipe import inference_recipe
    from hdkd_lightning.evaluation.explain import denormalize, explanation_figure, gradcam_maps
    from hdkd_lightning.evaluation.figures import save_png
    from hdkd_lightning.evaluation.metrics import collapse_warning
    from hdkd_lightning.files import atomic_write

    net, meta = network_from_checkpoint(cfg.ckpt_path)
    names = list(meta["class_names"])
    target = str(cfg.get("target", "pred"))
    if target != "pred" and target not in names:
        raise ConfigError(f"target={target}: choose pred or one of the model's classes {names}")
    source = Path(str(cfg.input)).expanduser()
    if not source.exists():
        raise ConfigError(f"input={cfg.input}: no such file or folder")
    out = Path(str(cfg.output_dir)).expanduser()
    out = out if out.is_absolute() else Path(os.getcwd()) / out
    out.mkdir(parents=True, exist_ok=True)
    recipe = inference_recipe(meta)
    mean, std = recipe.normalization()
    dm = recipe.image_files(source, names, batch_size=int(cfg.batch_size), max_image_pixels=cfg.get("max_image_pixels"),
                            on_bad_image=cfg.get("on_bad_image", "error"))
    rows: List[Dict[str, Any]] = []
    all_probs = []  # one row of class probabilities per image: enough to see a collapsed model
    for batch in dm.predict_dataloader():
        images = batch["image"]
        with torch.inference_mode():
            probs = recipe.probabilities(net(images))
        predicted = probs.argmax(dim=1).tolist()
        all_probs.append(probs.float().cpu())
        targets = predicted if target == "pred" else [names.index(target)] * len(predicted)
        maps = gradcam_maps(net, images, targets)
        for img, cam, path, pred, tgt, p in zip(images, maps, batch["path"], predicted, targets, probs):
            n = len(rows)
            png = f"{n:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(path).stem)}.png"
            title = f"predicted {names[pred]} ({float(p[pred]):.2f}); Grad-CAM of {names[tgt]}"
            save_png(explanation_figure(denormalize(img, mean, std), cam, title), out / png)
            rows.append({"image": str(path), "png": png, "predicted": names[pred], "probability": float(p[pred]),
                         "target": names[tgt], "target_probability": float(p[tgt])})
    if not rows:
        raise ConfigError(f"input={cfg.input}: no readable images found")

    def write_csv(fh) -> None:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    atomic_write(out / "index.csv", write_csv)
    warning = collapse_warning(names, torch.cat(all_probs))
    if warning:
        log.warning("Grad-CAM: %s", warning)
    atomic_write(out / "index.html", lambda fh: fh.write(_index_html(rows, f"Grad-CAM: {meta['arch']}", warning)))
    log.info("Grad-CAM of %d image(s) written to %s (index.csv, index.html)", len(rows), out)
    return out
