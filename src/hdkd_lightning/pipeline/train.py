"""``hdkd-train``: fit on the train split, select the best epoch on validation, test once; the
run's state in ``run.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf

from hdkd_lightning.config import check_trainer_config, hydra_choice, print_config_tree
from hdkd_lightning.errors import ConfigError
from hdkd_lightning.files import to_plain
from hdkd_lightning.pipeline.build import (
    build_datamodule,
    build_module,
    build_trainer,
    early_teacher,
    finish_wandb,
    output_dir,
    set_output_dir,
)

log = logging.getLogger("hdkd_lightning")

__all__ = ["run_train"]


def _resume_checkpoint(cfg: DictConfig) -> Optional[Path]:
    if not cfg.get("ckpt_path"):
        return None
    if str(cfg.ckpt_path) == "last":
        # the run in this run's own folder (hydra.run.dir=<dir> given), else the latest run of the task
        own = output_dir(cfg) / "checkpoints" / "last.ckpt"
        if own.is_file():
            return own
        from hdkd_lightning.checkpoints.runs import find_latest_checkpoint

        found = find_latest_checkpoint(Path(cfg.paths.log_dir), cfg.task_name, "last.ckpt")
        if found is None:
            raise ConfigError(f"ckpt_path=last: no last.ckpt in {own.parent} nor of task '{cfg.task_name}' under "
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

    check_trainer_config(cfg.trainer, nonfinite_loss=OmegaConf.select(cfg, "model.nonfinite_loss"))
    if not cfg.get("train", True) and not cfg.get("ckpt_path"):
        # without a checkpoint the test would score freshly initialised weights and call the run completed
        raise ConfigError("train=false tests a trained checkpoint but none was given: pass ckpt_path=<checkpoint> "
                          "(or ckpt_path=last), or drop train=false")
    if cfg.get("train", True) and _selection_callback_cfg(cfg) is None:
        raise ConfigError(f"optimized_metric={cfg.get('optimized_metric')} is not monitored by a checkpoint "
                          f"callback, so no best epoch (or sweep objective) can be chosen; use callbacks=default "
                          f"(callbacks.model_checkpoint.monitor follows optimized_metric)")
    resume = _resume_checkpoint(cfg)
    out = output_dir(cfg)
    if resume is not None and resume.parent.name == "checkpoints":
        out = resume.parent.parent.resolve()  # continue the stopped run in its own directory
        log.info("resuming %s in %s", resume, out)
    set_output_dir(cfg, out)
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
                                 ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro")},
                           # "completed" says the job ran, not that the model is any good: keep the test's caveats
                           warnings=list(results.get("test", {}).get("warnings") or []))
    return results


def _training_curves(trainer, out: Path, title: str) -> None:
    """``training_curves.png`` from the run's own CSV log (the whole history, resumes included)."""
    from hdkd_lightning.evaluation.figures import read_epoch_metrics, render_training_curves, save_png

    for logger in trainer.loggers:
        logger.save()
    logs = sorted(out.glob("csv/**/metrics.csv"))
    if not logs:
        log.info("no CSV log in %s (logger without csv): no training_curves.png", out)
        return
    fig = render_training_curves(read_epoch_metrics(logs[0]), title=str(title))
    if fig is not None:
        save_png(fig, out / "training_curves.png")


def _fit_and_test(cfg: DictConfig, out: Path, resume: Optional[Path], extra_callbacks) -> Dict[str, Any]:
    import lightning.pytorch as pl

    pl.seed_everything(cfg.seed, workers=True)

    from hdkd_lightning.checkpoints import runs
    from hdkd_lightning.data.provenance import record_summary

    data_name = hydra_choice("data", "data")
    teacher = []  # a distillation run's teacher, checked against the data before they are prepared
    dm = build_datamodule(cfg, before_prepare=lambda d: teacher.append(early_teacher(cfg, d, data_name, resume)))
    record = dm.data_record(data_name)
    module = build_module(cfg, dm, data_name, record=record, resume=resume, teacher=teacher[0])
    summary = record_summary(record)
    runs.update_run(out, data_record=summary)  # every rank writes run.json the same way (mark_run_started)
    trainer, artefacts = build_trainer(cfg, out, extra_callbacks,
                                       run_info={"data": data_name, "split": "test", "data_record": summary}, dm=dm)
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
            if trainer.is_global_zero:
                _training_curves(trainer, out, cfg.task_name)
        if cfg.get("test", True):
            best = next((cb.best_model_path for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), "")
            if not best and (out / "checkpoints" / "best.ckpt").is_file():
                best = str(out / "checkpoints" / "best.ckpt")
            if not best and not cfg.get("train", True):
                best = str(resume)  # train=false with a checkpoint outside a run folder: test that checkpoint
            trainer.test(module, datamodule=dm, ckpt_path=best or None, weights_only=True)
            results["test"] = artefacts.results
            results["best_checkpoint"] = best or None
    finally:
        finish_wandb()
    results["optimized_metric"] = _best_score(trainer, cfg.get("optimized_metric"))
    return results
