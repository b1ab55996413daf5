"""``hdkd-eval``: the test artefacts of a checkpoint on a split of a dataset."""

from __future__ import annotations

import logging
from typing import Any, Dict

from omegaconf import DictConfig, open_dict

from hdkd_lightning.config import check_trainer_config
from hdkd_lightning.errors import ConfigError
from hdkd_lightning.files import to_plain
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


def _class_map(cfg: DictConfig, dm, meta: Dict[str, Any]):
    """The data's classes tied to the model's (``eval.class_map`` or identical names;
    :mod:`hdkd_lightning.evaluation.class_map`), or ``None`` when they are the same classes."""
    from hdkd_lightning.config import hydra_choice
    from hdkd_lightning.evaluation.class_map import resolve_class_map

    given = (cfg.get("eval") or {}).get("class_map")
    mapping = resolve_class_map(dm.class_names, meta["class_names"], to_plain(given) if given else None,
                                f"data={hydra_choice('data', 'data')}")
    if mapping.identity:
        return None
    if cfg.get("calibrate"):
        raise ConfigError("calibrate=true fits a temperature on the data the model was trained for; these data have "
                          "other classes (eval.class_map): drop calibrate=true")
    return mapping


def _describe_class_map(mapping, dm, split: str) -> Dict[str, Any]:
    """The class map's record for metrics.json, with the images of each class the model does not know, logged."""
    record = mapping.describe(dm.class_counts(split).tolist())
    log.info("eval.class_map: %s", ", ".join(f"{d} -> {m or '(unknown to the model)'}" for d, m in record["map"].items()))
    for name, count in record["unknown_to_model"].items():
        log.warning("eval.class_map: %d %s image(s) of class %r are unknown to the model: scored in predictions.csv, "
                    "left out of every metric", count, split, name)
    if record["model_classes_absent_from_data"]:
        log.warning("eval.class_map: model class(es) %s have no %s images here: their recall and AUROC are undefined",
                    record["model_classes_absent_from_data"], split)
    return record


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
    mapping = []  # the data's classes tied to the model's, decided before any file is checked
    dm, data_info = build_checkpoint_datamodule(cfg, meta, ("val", split) if cfg.get("calibrate") else (split,),
                                                before_prepare=lambda d: mapping.append(_class_map(cfg, d, meta)))
    data_name = data_info["data"]
    targets = None
    if mapping[0] is not None:
        targets = mapping[0].targets
        data_info["class_map"] = _describe_class_map(mapping[0], dm, split)
    if meta.get("image_size") and int(meta["image_size"]) != int(dm.image_size):
        raise ConfigError(f"checkpoint {cfg.ckpt_path} expects image size {meta['image_size']} but "
                          f"data.image_size={dm.image_size}; drop the data.image_size override")
    if cfg.get("calibrate") and (data_info.get("external_data") or (data_info.get("images_seen_in_training") or {}).get("val")):
        raise ConfigError(f"calibrate=true fits the temperature stored in {cfg.ckpt_path} on the validation split it "
                          f"recorded; these data are {data_info['split_source']}"
                          f"{' and hold training images' if not data_info.get('external_data') else ''}. "
                          f"Evaluate with the data the model was trained on (no data.split_file), or drop calibrate=true")
    module = EvalModule(net, meta, targets)
    calibration = _calibrate(cfg, module, dm) if cfg.get("calibrate") else meta.get("calibration")
    with open_dict(cfg):
        cfg.callbacks = None
    info = {"checkpoint": str(cfg.ckpt_path), "split": split, **data_info}
    if calibration:
        info["temperature_fit"] = calibration
    trainer, artefacts = build_trainer(cfg, out, run_info=info, dm=dm)
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
