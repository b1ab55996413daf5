"""``hdkd-eval``: the test artefacts of a checkpoint on a split of a dataset."""

from __future__ import annotations

import logging
from typing import Any, Dict

from omegaconf import DictConfig, open_dict

from hdkd_lightning.config import ConfigError, check_trainer_config, hydra_choice

log = logging.getLogger("hdkd_lightning")
from hdkd_lightning.pipeline.build import build_datamodule, build_trainer, finish_wandb, output_dir

__all__ = ["run_eval"]


def _eval_data_overrides(cfg: DictConfig, meta: Dict[str, Any]) -> None:
    """Evaluate at the checkpoint's image size unless data.image_size was given explicitly."""
    try:
        from hydra.core.hydra_config import HydraConfig

        given = any(o.split("=")[0].lstrip("+~") == "data.image_size" for o in HydraConfig.get().overrides.task)
    except Exception:
        given = False
    if not given and meta.get("image_size"):
        with open_dict(cfg):
            cfg.data.image_size = int(meta["image_size"])


def run_eval(cfg: DictConfig) -> Dict[str, Any]:
    """Test artefacts (metrics.json, per_class.csv, predictions.csv, confusion_matrix.png) for a checkpoint."""
    import lightning.pytorch as pl

    from hdkd_lightning.checkpoints import network_from_checkpoint
    from hdkd_lightning.lit.evaluate import EvalModule

    check_trainer_config(cfg.trainer)
    net, meta = network_from_checkpoint(cfg.ckpt_path)
    _eval_data_overrides(cfg, meta)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    dm = build_datamodule(cfg)
    data_name = hydra_choice("data", "data")
    if list(dm.class_names) != list(meta["class_names"]):
        raise ConfigError(f"checkpoint {cfg.ckpt_path} classes {meta['class_names']} differ from data={data_name} "
                          f"classes {list(dm.class_names)}; evaluate on the data it was trained for")
    if meta.get("image_size") and int(meta["image_size"]) != int(dm.image_size):
        raise ConfigError(f"checkpoint {cfg.ckpt_path} expects image size {meta['image_size']} but "
                          f"data.image_size={dm.image_size}; drop the data.image_size override")
    module = EvalModule(net, meta)
    with open_dict(cfg):
        cfg.callbacks = None
    trainer, artefacts = build_trainer(cfg, out)
    if trainer.is_global_zero:
        dm.write_splits(out)
    split = cfg.get("split", "test")
    if split not in ("test", "val"):
        raise ConfigError(f"split={split}: choose test or val")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    try:
        trainer.test(module, dataloaders=loader)
    finally:
        finish_wandb()
    results = dict(artefacts.results, checkpoint=str(cfg.ckpt_path), split=split, output_dir=str(out))
    if trainer.is_global_zero:
        import rich

        from hdkd_lightning.evaluation.console import format_metrics_table

        rich.print(format_metrics_table(results, f"{meta['arch']} on {data_name} ({split})"))
        log.info("artefacts written to %s", out)
    return results
