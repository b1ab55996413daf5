"""What every job builds from a config: the output folder, the DataModule, the LightningModule
(with its teacher, checked against the data) and the Trainer (with the test-artefacts callback)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, open_dict

from hdkd_lightning.config import ConfigError
from hdkd_lightning.files import to_plain

log = logging.getLogger("hdkd_lightning")

__all__ = ["output_dir", "set_output_dir", "build_datamodule", "net_spec", "build_module", "build_trainer",
           "finish_wandb"]

_MODEL_ONLY_KEYS = ("_target_", "class_weighted_loss", "teacher")


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir).resolve()


def set_output_dir(cfg: DictConfig, out: Path) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)


def build_datamodule(cfg: DictConfig):
    """Instantiate ``cfg.data`` and index it (class names, splits) before any training."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _recursive_=False)  # the DataModule builds its source and transforms itself
    dm.prepare_data()
    dm.setup("fit")
    return dm


def net_spec(node: DictConfig, num_classes: int, image_size: int) -> Dict[str, Any]:
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
        params.update(student=net_spec(model_cfg.student, dm.num_classes, dm.image_size),
                      teacher={"arch": teacher.arch, "kwargs": t_kwargs, "source": str(path)})
        module = _construct(cls, params, common)
        module.load_teacher_state(teacher.state_dict)
        return module
    params["net"] = net_spec(model_cfg.net, dm.num_classes, dm.image_size)
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


def finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _check_optional_loggers(loggers_cfg: Optional[DictConfig]) -> None:
    """TensorBoard is an optional extra: say how to install it instead of failing inside Lightning."""
    import importlib.util

    targets = [str(node.get("_target_", "")) for node in (loggers_cfg or {}).values() if isinstance(node, DictConfig)]
    if any(t.endswith("TensorBoardLogger") for t in targets) and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logger=tensorboard needs the tensorboard package: pip install 'hdkd-lightning[tensorboard]' "
                          "(or use logger=csv / logger=wandb)")


def build_trainer(cfg: DictConfig, out: Path, extra_callbacks=(), run_info: Optional[Dict[str, Any]] = None):
    """The configured Trainer, plus the callback that writes the test artefacts into ``out`` with the
    ``report.*`` options (returned with it: its ``results`` are the test metrics; ``run_info`` goes
    into metrics.json)."""
    from hydra.utils import instantiate

    from hdkd_lightning.checkpoints.io import AtomicCheckpointIO
    from hdkd_lightning.evaluation.artefacts import EvaluationOptions
    from hdkd_lightning.lit.test_artefacts import TestArtefacts

    try:
        options = EvaluationOptions.from_config(cfg.get("report"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"report: {exc}") from None
    _check_optional_loggers(cfg.get("logger"))
    _wandb_resume(cfg.get("logger"), out)
    artefacts = TestArtefacts(out, options, run_info)
    callbacks = _instantiate_dict(cfg.get("callbacks")) + list(extra_callbacks) + [artefacts]
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          plugins=[AtomicCheckpointIO()], default_root_dir=str(out))
    return trainer, artefacts
