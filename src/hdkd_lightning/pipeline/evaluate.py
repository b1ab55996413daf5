"""``hdkd-eval``: the test artefacts of a checkpoint on a split of a dataset."""

from __future__ import annotations

import logging
from typing import Any, Dict

from omegaconf import DictConfig, open_dict

from hdkd_lightning.config import check_trainer_config
from hdkd_lightning.errors import ConfigError
from hdkd_lightning.pipeline.build import build_checkpoint_datamodule, build_trainer, finish_wandb, output_dir

log = logging.getLogger("hdkd_lightning")

__all__ = ["run_eval"]


def _calibrate(cfg: DictConfig, module, dm) -> Dict[str, Any]:
    """Fit a temperature on the validation split, store it in the checkpoint, use it from now on."""
    import torch

    from hdkd_lightning.checkpoints import update_meta
    from hdkd_lightning.evaluation.statistics import (
        TemperatureAtBound,
        apply_temperature,
        expected_calibration_error,
        fit_temperature,
    )

    if not dm.split_records("val"):
        raise ConfigError("calibrate=true needs a validation split, and this data has none")
    bins = int((cfg.get("report") or {}).get("ece_bins", 15))
    module.temperature = None
    probs, labels = [], []
    with torch.inference_mode():
        for batch in dm.val_dataloader():
            probs.append(module.predict_probs(batch["image"]))
            labels.append(batch["label"])
    probs_np, labels_np = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    try:
        temperature = fit_temperature(probs_np, labels_np)
    except TemperatureAtBound as exc:  # a clamped temperature would make every later prediction near uniform
        raise ConfigError(f"calibrate=true on the validation split: {exc}; {cfg.ckpt_path} was left unchanged") from None
    info = {"fitted_on": "val", "images": int(len(labels_np)), "temperature": temperature, "bins": bins,
            "val_ece_before": expected_calibration_error(probs_np, labels_np, bins),
            "val_ece_after": expected_calibration_error(apply_temperature(probs_np, temperature), labels_np, bins)}
    update_meta(cfg.ckpt_path, temperature=temperature, calibration=info)
    module.temperature = temperature
    log.info("calibrate=true: temperature %.4f fitted on %d validation images (val ECE %.4f -> %.4f), stored in %s",
             temperature, info["images"], info["val_ece_before"], info["val_ece_after"], cfg.ckpt_path)
    return info


def run_eval(cfg: DictConfig) -> Dict[str, Any]:
    """Every evaluation artefact (see hdkd_lightning.evaluation.artefacts) of a checkpoint on a split."""
    import lightning.pytorch as pl

    from hdkd_lightning.checkpoints import network_from_checkpoint
    from hdkd_lightning.lit.evaluate import EvalModule

    check_trainer_config(cfg.trainer)
    split = cfg.get("split", "test")
    if split not in ("test", "val"):
        raise ConfigError(f"split={split}: choose test or val")
    if cfg.get("calibrate") and split == "val":
        raise ConfigError("calibrate=true fits the temperature on the validation split: evaluate split=test")
    net, meta = network_from_checkpoint(cfg.ckpt_path)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    dm, data_info = build_checkpoint_datamodule(cfg, meta, ("val", split) if cfg.get("calibrate") else (split,))
    data_name = data_info["data"]
    if list(dm.class_names) != list(meta["class_names"]):
        trained = (meta.get("provenance") or {}).get("data") or {}
        where = (f" (it was trained on data={trained.get('name')} data.root={trained.get('root')})"
                 if trained else "")
        raise ConfigError(f"checkpoint {cfg.ckpt_path} classes {meta['class_names']} differ from data={data_name} "
                          f"classes {list(dm.class_names)}; evaluate on the data it was trained for{where}")
    if meta.get("image_size") and int(meta["image_size"]) != int(dm.image_size):
        raise ConfigError(f"checkpoint {cfg.ckpt_path} expects image size {meta['image_size']} but "
                          f"data.image_size={dm.image_size}; drop the data.image_size override")
    if cfg.get("calibrate") and (data_info.get("external_data") or (data_info.get("images_seen_in_training") or {}).get("val")):
        raise ConfigError(f"calibrate=true fits the temperature stored in {cfg.ckpt_path} on the validation split it "
                          f"recorded; these data are {data_info['split_source']}"
                          f"{' and hold training images' if not data_info.get('external_data') else ''}. "
                          f"Evaluate with the data the model was trained on (no data.split_file), or drop calibrate=true")
    module = EvalModule(net, meta)
    calibration = _calibrate(cfg, module, dm) if cfg.get("calibrate") else meta.get("calibration")
    with open_dict(cfg):
        cfg.callbacks = None
    info = {"checkpoint": str(cfg.ckpt_path), "split": split, **data_info}
    if calibration:
        info["temperature_fit"] = calibration
    trainer, artefacts = build_trainer(cfg, out, run_info=info)
    if trainer.is_global_zero:
        dm.write_splits(out)
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    try:
        trainer.test(module, dataloaders=loader)
    finally:
        finish_wandb()
    results = dict(artefacts.results, output_dir=str(out))
    if trainer.is_global_zero:
        import rich

        from hdkd_lightning.evaluation.console import format_metrics_table

        rich.print(format_metrics_table(results, f"{meta['arch']} on {data_name} ({split})"))
        log.info("artefacts written to %s", out)
    return results
