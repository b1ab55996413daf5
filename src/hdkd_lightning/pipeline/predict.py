"""``hdkd-predict``: class probabilities for image files, written as CSV."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from hdkd_lightning.config import ConfigError

log = logging.getLogger("hdkd_lightning")

__all__ = ["run_predict"]


def run_predict(cfg: DictConfig) -> Path:
    """Class probabilities for an image file or a folder of images (recursive), written as CSV."""
    import torch

    from hdkd_lightning.checkpoints import network_from_checkpoint
    from hdkd_lightning.data.datamodule import HdkdDataModule
    from hdkd_lightning.evaluation.artefacts import write_predictions_csv

    net, meta = network_from_checkpoint(cfg.ckpt_path)
    source = Path(str(cfg.input)).expanduser()
    if not source.exists():
        raise ConfigError(f"input={cfg.input}: no such file or folder")
    dm = HdkdDataModule.from_paths(source, image_size=int(meta["image_size"]), batch_size=int(cfg.batch_size),
                                   num_workers=int(cfg.num_workers), class_names=meta["class_names"],
                                   max_image_pixels=cfg.get("max_image_pixels"),
                                   on_bad_image=cfg.get("on_bad_image", "error"))
    paths, probs = [], []
    with torch.inference_mode():
        for batch in dm.predict_dataloader():
            p = torch.softmax(net(batch["image"]).float(), dim=1)
            if cfg.get("tta_flip", False):
                p = (p + torch.softmax(net(torch.flip(batch["image"], dims=[3])).float(), dim=1)) / 2
            probs.append(p)
            paths += list(batch["path"])
    if not paths:
        raise ConfigError(f"input={cfg.input}: no readable images found")
    output = Path(str(cfg.output)).expanduser()
    if not output.is_absolute():
        output = Path(os.getcwd()) / output
    write_predictions_csv(output, meta["class_names"], paths, torch.cat(probs))
    log.info("wrote %d predictions to %s", len(paths), output)
    return output
