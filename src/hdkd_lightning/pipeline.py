"""The jobs behind the commands: train (fit + test), evaluate, predict, convert.

Entry points in ``hdkd_lightning.cli`` only compose the config and call one of these.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from hdkd_lightning.config import ConfigError, check_trainer_config, hydra_choice, print_config_tree
from hdkd_lightning.files import to_plain

log = logging.getLogger("hdkd_lightning")

__all__ = ["run_train", "run_eval", "run_predict", "run_convert", "build_datamodule", "build_module"]

_MODEL_ONLY_KEYS = ("_target_", "class_weighted_loss", "teacher")


def _output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir).resolve()


def _set_output_dir(cfg: DictConfig, out: Path) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)


def build_datamodule(cfg: DictConfig):
    """Instantiate ``cfg.data`` and index it (class names, splits) before any training."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _recursive_=False)  # the DataModule builds its source and transforms itself
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _net_spec(node: DictConfig, num_classes: int, image_size: int) -> Dict[str, Any]:
    spec = to_plain(node)
    kwargs = dict(spec.get("kwargs") or {})
    kwargs.update(num_classes=num_classes, img_size=image_size, in_chans=3)
    return {"arch": spec["arch"], "kwargs": kwargs}


def build_module(cfg: DictConfig, dm, data_name: str):
    """The LightningModule of ``cfg.model`` sized for the data; for HDKD also the teacher, checked."""
    from hydra.utils import get_class

    model_cfg = cfg.model
    cls = get_class(model_cfg._target_)
    params = {k: v for k, v in to_plain(model_cfg).items() if k not in _MODEL_ONLY_KEYS}
    class_weights = dm.class_weights().tolist() if model_cfg.get("class_weighted_loss", False) else None
    common = dict(class_names=list(dm.class_names), class_weights=class_weights, data_name=data_name)
    if "student" in model_cfg:
        from hdkd_lightning.checkpoints.teacher import check_teacher_fits, load_teacher, resolve_teacher_path

        tcfg = model_cfg.teacher
        path = resolve_teacher_path(tcfg.get("ckpt_path"), tcfg.get("experiment"), Path(cfg.paths.log_dir))
        teacher = load_teacher(path)
        check_teacher_fits(teacher, list(dm.class_names), dm.image_size, data_name)
        info = teacher.summary()
        score = info["val_balanced_accuracy"]
        log.info("teacher: %s (validation balanced accuracy %s)", info["path"],
                 "not recorded" if score is None else f"{score:.4f}")
        with open_dict(cfg):
            cfg.model.teacher.resolved = info  # saved with the run's config
        t_kwargs = dict(teacher.net_kwargs, img_size=dm.image_size)
        params.update(student=_net_spec(model_cfg.student, dm.num_classes, dm.image_size),
                      teacher={"arch": teacher.arch, "kwargs": t_kwargs, "source": str(path)})
        module = _construct(cls, params, common)
        module.load_teacher_state(teacher.state_dict)
        return module
    params["net"] = _net_spec(model_cfg.net, dm.num_classes, dm.image_size)
    return _construct(cls, params, common)


def _construct(cls, params: Dict[str, Any], common: Dict[str, Any]):
    """Build the module; an architecture the data cannot feed (e.g. image size) is a config error."""
    try:
        return cls(**params, **common)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _instantiate_dict(node: Optional[DictConfig]) -> List[Any]:
    from hydra.utils import instantiate

    if not node:
        return []
    return [instantiate(c) for c in node.values() if isinstance(c, DictConfig) and "_target_" in c]


def _resume_checkpoint(cfg: DictConfig) -> Optional[Path]:
    if not cfg.get("ckpt_path"):
        return None
    if str(cfg.ckpt_path) == "last":
        from hdkd_lightning.checkpoints.runs import find_latest_checkpoint

        found = find_latest_checkpoint(Path(cfg.paths.log_dir), cfg.task_name, "last.ckpt")
        if found is None:
            raise ConfigError(f"ckpt_path=last: no last.ckpt of task '{cfg.task_name}' under "
                              f"{Path(cfg.paths.log_dir) / cfg.task_name}; start without ckpt_path, or give a path")
        return found
    path = Path(cfg.ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    from hdkd_lightning.checkpoints import is_project_checkpoint, read_checkpoint

    if not is_project_checkpoint(read_checkpoint(path)):  # refuses unsafe files with a clear error
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} is not a training checkpoint of this project; to start from "
                          f"other weights use model.teacher.ckpt_path (teacher) or hdkd-convert")
    return path


def _wandb_resume(loggers_cfg: DictConfig, out: Path) -> None:
    """Give a resumed run its wandb run id back, and remember a new one."""
    if loggers_cfg and "wandb" in loggers_cfg:
        id_file = out / "wandb_run_id.txt"
        with open_dict(loggers_cfg):
            if id_file.is_file():
                loggers_cfg.wandb.id = id_file.read_text().strip()
                loggers_cfg.wandb.resume = "allow"
            else:
                import secrets

                run_id = secrets.token_hex(4)
                out.mkdir(parents=True, exist_ok=True)
                id_file.write_text(run_id)
                loggers_cfg.wandb.id = run_id


def _finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _build_trainer(cfg: DictConfig, out: Path, extra_callbacks=()):
    """The configured Trainer, plus the callback that writes the test artefacts into ``out``
    (returned with it: its ``results`` are the test metrics)."""
    from hydra.utils import instantiate

    from hdkd_lightning.checkpoints.io import AtomicCheckpointIO
    from hdkd_lightning.lit.test_artefacts import TestArtefacts

    _wandb_resume(cfg.get("logger"), out)
    artefacts = TestArtefacts(out)
    callbacks = _instantiate_dict(cfg.get("callbacks")) + list(extra_callbacks) + [artefacts]
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          plugins=[AtomicCheckpointIO()], default_root_dir=str(out))
    return trainer, artefacts


def _param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _selection_callback_cfg(cfg: DictConfig) -> Optional[DictConfig]:
    """The configured checkpoint callback that monitors ``optimized_metric`` (None if there is none)."""
    metric = cfg.get("optimized_metric")
    for node in (cfg.get("callbacks") or {}).values():
        if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("ModelCheckpoint") \
                and node.get("monitor") and node.get("monitor") == metric:
            return node
    return None


def _best_score(trainer, metric: Optional[str]) -> Optional[float]:
    """Best validation value of ``metric`` in this run: the score of the checkpoint callback
    that monitors it (restored on resume, so it covers the whole run)."""
    for cb in trainer.checkpoint_callbacks:
        if metric and getattr(cb, "monitor", None) == metric and cb.best_model_score is not None:
            return float(cb.best_model_score)
    return None


def run_train(cfg: DictConfig, extra_callbacks=()) -> Dict[str, Any]:
    """Fit, then test once with the best checkpoint (chosen on validation balanced accuracy).

    Returns the results; ``results["optimized_metric"]`` is the best validation value of
    ``cfg.optimized_metric`` in the run (what a sweeper optimises). The run's state is kept in
    ``run.json`` (:mod:`hdkd_lightning.checkpoints.runs`). ``extra_callbacks`` are added to the configured
    ones (used by scripts that observe a run).
    """
    from hdkd_lightning.checkpoints import runs

    check_trainer_config(cfg.trainer)
    if cfg.get("train", True) and _selection_callback_cfg(cfg) is None:
        raise ConfigError(f"optimized_metric={cfg.get('optimized_metric')} is not monitored by a checkpoint "
                          f"callback, so no best epoch (or sweep objective) can be chosen; use callbacks=default "
                          f"(callbacks.model_checkpoint.monitor follows optimized_metric)")
    resume = _resume_checkpoint(cfg)
    out = _output_dir(cfg)
    if resume is not None and resume.parent.name == "checkpoints":
        out = resume.parent.parent.resolve()  # continue the stopped run in its own directory
        log.info("resuming %s in %s", resume, out)
    _set_output_dir(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    runs.mark_run_started(out, str(cfg.task_name), resumed_from=str(resume) if resume else None)
    try:
        results = _fit_and_test(cfg, out, resume, extra_callbacks)
    except BaseException as exc:
        runs.mark_run_failed(out, exc)
        raise
    runs.mark_run_finished(out, monitor=cfg.get("optimized_metric"), best_score=results["optimized_metric"],
                           best_checkpoint=results.get("best_checkpoint"),
                           test={k: results.get("test", {}).get(k) for k in
                                 ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro")})
    return results


def _fit_and_test(cfg: DictConfig, out: Path, resume: Optional[Path], extra_callbacks) -> Dict[str, Any]:
    import lightning.pytorch as pl

    pl.seed_everything(cfg.seed, workers=True)

    data_name = hydra_choice("data", "data")
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm, data_name)
    trainer, artefacts = _build_trainer(cfg, out, extra_callbacks)
    if trainer.is_global_zero:
        print_config_tree(cfg, save_to=out / "config_tree.txt")
        OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)
        dm.write_splits(out)
    counts = {"params/trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
              "params/deployed": _param_count(module.deploy_net)}
    if hasattr(module, "teacher"):
        counts["params/teacher"] = _param_count(module.teacher)
    for logger in trainer.loggers:
        logger.log_hyperparams({**to_plain(cfg), **counts})

    results: Dict[str, Any] = {"output_dir": str(out), **counts}
    try:
        if cfg.get("train", True):
            trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=True)
            results["train"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test", True):
            best = next((cb.best_model_path for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), "")
            if not best and (out / "checkpoints" / "best.ckpt").is_file():
                best = str(out / "checkpoints" / "best.ckpt")
            trainer.test(module, datamodule=dm, ckpt_path=best or None, weights_only=True)
            results["test"] = artefacts.results
            results["best_checkpoint"] = best or None
    finally:
        _finish_wandb()
    results["optimized_metric"] = _best_score(trainer, cfg.get("optimized_metric"))
    return results


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
    out = _output_dir(cfg)
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
    trainer, artefacts = _build_trainer(cfg, out)
    if trainer.is_global_zero:
        dm.write_splits(out)
    split = cfg.get("split", "test")
    if split not in ("test", "val"):
        raise ConfigError(f"split={split}: choose test or val")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    try:
        trainer.test(module, dataloaders=loader)
    finally:
        _finish_wandb()
    results = dict(artefacts.results, checkpoint=str(cfg.ckpt_path), split=split, output_dir=str(out))
    if trainer.is_global_zero:
        import rich

        from hdkd_lightning.evaluation.console import format_metrics_table

        rich.print(format_metrics_table(results, f"{meta['arch']} on {data_name} ({split})"))
        log.info("artefacts written to %s", out)
    return results


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


def run_convert(cfg: DictConfig) -> Path:
    """A weights file of the original code -> a checkpoint usable by eval, predict and as teacher."""
    import lightning

    from hdkd_lightning.checkpoints.format import META_KEY, CheckpointError, build_meta
    from hdkd_lightning.checkpoints.io import AtomicCheckpointIO
    from hdkd_lightning.models.original import ARCHS, load_original_checkpoint

    if cfg.arch not in ARCHS:
        raise ConfigError(f"arch={cfg.arch}: choose one of {', '.join(ARCHS)}")
    size = {"img_size": int(cfg.image_size)} if cfg.get("image_size") else {}
    try:  # the network's constructor refuses image sizes it cannot take
        net, kwargs = load_original_checkpoint(cfg.input, cfg.arch, return_kwargs=True, **size)
    except CheckpointError:
        raise
    except ValueError as exc:
        raise ConfigError(f"image_size={cfg.get('image_size')}: {exc}") from None
    image_size = int(kwargs.get("img_size", 224))
    kwargs["img_size"] = image_size
    if cfg.get("class_names"):
        class_names = list(cfg.class_names)
    elif cfg.get("data") is not None:
        class_names = list(build_datamodule(cfg).class_names)
    else:
        class_names = [f"class_{i}" for i in range(net.num_classes)]
    if len(class_names) != net.num_classes:
        raise ConfigError(f"{cfg.input} has {net.num_classes} classes but {len(class_names)} class names were given "
                          f"({class_names}); give exactly {net.num_classes} in class_names=[...]")
    kind = {"hdkd_teacher": "teacher", "hdkd_student": "student", "hdkd_student_distilled": "distill"}[cfg.arch]
    ckpt = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "pytorch-lightning_version": lightning.__version__,
            META_KEY: build_meta(kind, cfg.arch, kwargs, class_names, image_size, hydra_choice("data", ""),
                                 converted_from=str(Path(cfg.input).resolve()))}
    output = Path(cfg.output).expanduser().resolve()
    AtomicCheckpointIO().save_checkpoint(ckpt, output)
    log.info("converted %s (%s, %d classes) -> %s", cfg.input, cfg.arch, net.num_classes, output)
    return output
