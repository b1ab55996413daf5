"""What every job builds from a config: the output folder, the DataModule, the LightningModule
(with its teacher, checked against the data) and the Trainer (with the test-artefacts callback)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from omegaconf import DictConfig, open_dict

from hdkd_lightning.errors import ConfigError
from hdkd_lightning.files import to_plain

log = logging.getLogger("hdkd_lightning")

__all__ = ["output_dir", "set_output_dir", "build_datamodule", "build_checkpoint_datamodule", "net_spec",
           "build_module", "early_teacher", "find_teacher", "build_trainer", "finish_wandb"]

_MODEL_ONLY_KEYS = ("_target_", "class_weighted_loss", "teacher")


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir).resolve()


def set_output_dir(cfg: DictConfig, out: Path) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)


def build_datamodule(cfg: DictConfig, before_prepare: Optional[Callable[[Any], None]] = None):
    """Instantiate ``cfg.data`` and index it (class names, splits) before any training.

    ``before_prepare(dm)`` runs first, when only cheap facts (class names, image size) are known:
    checks that can fail run there, before files are checked or an image cache is built.
    """
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _recursive_=False)  # the DataModule builds its source and transforms itself
    if before_prepare is not None:
        before_prepare(dm)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _given_on_command_line(key: str) -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        return any(o.split("=")[0].lstrip("+~") == key for o in HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - outside a Hydra job nothing was given
        return False


def build_checkpoint_datamodule(cfg: DictConfig, meta: Dict[str, Any], splits: Tuple[str, ...],
                                before_prepare: Optional[Callable[[Any], None]] = None):
    """The data to score a trained checkpoint on (``hdkd-eval``, export's int8 gate, calibration).

    * The checkpoint's inference recipe sets the image size, resize and normalisation.
    * With a data record (:mod:`hdkd_lightning.data.provenance`) and the data it was trained on
      (same ``data=`` choice and source, no ``data.split_file`` given), the split it recorded is used
      exactly, and its images are checked to be the recorded ones (by content or ISIC id), so the
      current ``data.seed`` / ``data.split_seed`` cannot re-carve validation or test.
    * Other data (another ``data=``, or a ``data.split_file`` given) is scored as configured and
      reported as external data.
    * Either way, the images of ``splits`` that the model trained on are counted.

    ``before_prepare(dm)`` runs before any file is checked (:func:`build_datamodule`).
    Returns the prepared DataModule and what was decided (written into ``metrics.json``).
    """
    import tempfile

    from hdkd_lightning.config import hydra_choice
    from hdkd_lightning.data.provenance import count_seen, key_set, record_summary
    from hdkd_lightning.deploy.recipe import inference_recipe

    record = meta.get("provenance")
    recipe = inference_recipe(meta)
    data_name = hydra_choice("data", "data")
    trained_on = (record or {}).get("data") or {}
    if trained_on and not _given_on_command_line("data") and data_name != trained_on.get("name"):
        root = f" data.root={trained_on['root']}" if trained_on.get("root") else ""
        raise ConfigError(f"no data= given: {cfg.get('ckpt_path')} was trained on data={trained_on.get('name')}{root}; "
                          f"add data={trained_on.get('name')}{root} (or data=<other> data.root=<dir> to score it on "
                          f"other data)")
    with open_dict(cfg):
        if not _given_on_command_line("data.image_size"):
            cfg.data.image_size = recipe.image_size
        if recipe.recorded:  # older checkpoints: the data config's own preprocessing, as before
            cfg.data.interpolation = recipe.interpolation
            cfg.data.transforms = {"train": cfg.data.get("transforms", {}).get("train"),
                                   "eval": [dict(e) for e in recipe.eval_entries]}
    info: Dict[str, Any] = {"data": data_name, "data_record": record_summary(record)}
    if record is None:
        log.warning("%s has no data record (written before this version): the splits are carved from the "
                    "data.* settings given now and cannot be checked against its training images",
                    cfg.get("ckpt_path"))
        info.update(external_data=None, split_source="carved from data.* (no record in the checkpoint)")
        return build_datamodule(cfg, before_prepare), info
    same = (data_name == trained_on.get("name") and str(cfg.data.get("source")) == trained_on.get("source")
            and not cfg.data.get("split_file"))
    if not same:
        dm = build_datamodule(cfg, before_prepare)
        info.update(external_data=True, split_source=f"data={data_name} as configured "
                    f"(the model was trained on data={trained_on.get('name')})")
    else:
        with tempfile.TemporaryDirectory(prefix="hdkd-recorded-split-") as tmp:
            split_file = Path(tmp) / "splits.csv"
            split_file.write_text(record["splits_csv"], encoding="utf-8")
            with open_dict(cfg):
                cfg.data.split_file = str(split_file)
            try:
                dm = build_datamodule(cfg, before_prepare)
            finally:
                with open_dict(cfg):
                    cfg.data.split_file = None
        _check_recorded_images(dm, record, cfg)
        info.update(external_data=False, split_source="the split recorded in the checkpoint")
    train_keys = key_set(record, "train")
    info["images_seen_in_training"] = {}
    for split in splits:
        records = dm.split_records(split)
        seen = count_seen(dm.image_keys(records).values(), train_keys)
        info["images_seen_in_training"][split] = seen
        if seen:
            log.warning("%d of the %d %s images evaluated here were training images of %s: their scores are "
                        "not an estimate of performance on new images", seen, len(records), split,
                        cfg.get("ckpt_path"))
    return dm, info


def _check_recorded_images(dm, record: Dict[str, Any], cfg: DictConfig) -> None:
    """The validation and test images found under ``data.root`` must be the ones the record names."""
    from hdkd_lightning.data.provenance import key_set

    for split in ("val", "test"):
        known = key_set(record, split)
        records = dm.split_records(split)
        changed = [path for path, keys in dm.image_keys(records).items() if not any(k in known for k in keys)]
        if changed:
            from hdkd_lightning.data.base import describe_paths

            raise ConfigError(
                f"data.root={cfg.data.get('root')}: {len(changed)} of the {len(records)} {split} images of the split "
                f"recorded in {cfg.get('ckpt_path')} are other files here (different content): "
                f"{describe_paths(changed)}. Point data.root at the dataset the model was trained on "
                f"(data.root={record['data'].get('root')}), or pass data.split_file=<csv> to score other images "
                f"as external data")


def net_spec(node: DictConfig, num_classes: int, image_size: int) -> Dict[str, Any]:
    spec = to_plain(node)
    kwargs = dict(spec.get("kwargs") or {})
    kwargs.update(num_classes=num_classes, img_size=image_size, in_chans=3)
    return {"arch": spec["arch"], "kwargs": kwargs}


def build_module(cfg: DictConfig, dm, data_name: str, record: Optional[Dict[str, Any]] = None,
                 resume: Optional[Path] = None, teacher: Optional[Tuple[Any, Path]] = None):
    """The LightningModule of ``cfg.model`` sized for the data; for HDKD also the teacher, checked.

    ``record`` is the run's data record (saved with every checkpoint; for HDKD it gains the
    teacher's entry). The teacher is ``teacher`` (from :func:`early_teacher`) or found now; a
    resumed distillation run (``resume``) keeps the teacher of its checkpoint.
    """
    from hydra.utils import get_class

    model_cfg = cfg.model
    cls = get_class(model_cfg._target_)
    params = {k: v for k, v in to_plain(model_cfg).items() if k not in _MODEL_ONLY_KEYS}
    class_weights = dm.class_weights().tolist() if model_cfg.get("class_weighted_loss", False) else None
    common = dict(class_names=list(dm.class_names), class_weights=class_weights, data_name=data_name)
    if "student" in model_cfg:
        from hdkd_lightning.checkpoints.teacher import check_teacher_data, check_teacher_fits

        if teacher is None:  # early_teacher already checked the one it found
            teacher = find_teacher(cfg, resume, data_name)
            check_teacher_fits(teacher[0], list(dm.class_names), dm.image_size, data_name)
        teacher, path = teacher
        info = teacher.summary()
        if teacher.entry is None:  # a new run: check the teacher against this run's evaluation images
            eval_keys = {s: list(dm.image_keys(dm.split_records(s)).values()) for s in ("val", "test")}
            info.update(check_teacher_data(teacher, eval_keys, data_name))
        score = info.get("val_balanced_accuracy")
        log.info("teacher: %s (validation balanced accuracy %s)%s", info["path"],
                 "not recorded" if score is None else f"{score:.4f}",
                 f"; {info['leak_check']}" if info.get("leak_check") else "")
        with open_dict(cfg):
            cfg.model.teacher.resolved = info  # saved with the run's config
        if record is not None:
            record["teacher"] = info
        t_kwargs = dict(teacher.net_kwargs, img_size=dm.image_size)
        params.update(student=net_spec(model_cfg.student, dm.num_classes, dm.image_size),
                      teacher={"arch": teacher.arch, "kwargs": t_kwargs, "source": str(path)})
        module = _construct(cls, params, common)
        module.load_teacher_state(teacher.state_dict)
    else:
        params["net"] = net_spec(model_cfg.net, dm.num_classes, dm.image_size)
        module = _construct(cls, params, common)
    module.data_record = record
    return module


def early_teacher(cfg: DictConfig, dm, data_name: str, resume: Optional[Path]) -> Optional[Tuple[Any, Path]]:
    """For a distillation run, the teacher found and checked against the data's classes and image size
    before the data are prepared (``build_datamodule(before_prepare=...)``): a teacher that does not fit
    is refused before any file check or image cache. ``None`` for other models."""
    if "student" not in cfg.model:
        return None
    from hdkd_lightning.checkpoints.teacher import check_teacher_fits

    teacher, path = find_teacher(cfg, resume, data_name)
    check_teacher_fits(teacher, list(dm.class_names), dm.image_size, data_name)
    return teacher, path


def find_teacher(cfg: DictConfig, resume: Optional[Path], data_name: str):
    """The teacher (spec, path): the one a resumed run started with, else model.teacher.* resolved now."""
    from hdkd_lightning.checkpoints.teacher import load_teacher, resolve_teacher_path, teacher_from_run_checkpoint

    if resume is not None:
        kept = teacher_from_run_checkpoint(resume)
        if kept is not None:
            given = cfg.model.teacher.get("ckpt_path")
            if given and kept.entry.get("path") and Path(str(given)).expanduser().resolve() != Path(kept.entry["path"]):
                log.warning("model.teacher.ckpt_path=%s is ignored: the resumed run keeps its teacher %s", given,
                            kept.entry["path"])
            return kept, kept.path
    tcfg = cfg.model.teacher
    path = resolve_teacher_path(tcfg.get("ckpt_path"), tcfg.get("experiment"), Path(cfg.paths.log_dir), data_name)
    return load_teacher(path), path


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


def build_trainer(cfg: DictConfig, out: Path, extra_callbacks=(), run_info: Optional[Dict[str, Any]] = None, dm=None):
    """The configured Trainer, plus the callback that writes the test artefacts into ``out`` with the
    ``report.*`` options (returned with it: its ``results`` are the test metrics; ``run_info`` goes
    into metrics.json). The images' attributes of the DataModule ``dm`` (sex, age band, ...) give the
    subgroup results, and metrics.json names where they came from."""
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelSummary

    from hdkd_lightning.checkpoints.io import AtomicCheckpointIO
    from hdkd_lightning.evaluation.artefacts import EvaluationOptions
    from hdkd_lightning.evaluation.callback import TestArtefacts
    from hdkd_lightning.lit.summary import ModelSummaryWithoutZeroFlops

    try:
        options = EvaluationOptions.from_config(cfg.get("report"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"report: {exc}") from None
    _check_optional_loggers(cfg.get("logger"))
    _wandb_resume(cfg.get("logger"), out)
    metadata = dm.image_metadata if dm is not None else {}
    if metadata:
        run_info = dict(run_info or {}, subgroup_source=dm.metadata_source)
    artefacts = TestArtefacts(out, options, run_info, metadata)
    callbacks = _instantiate_dict(cfg.get("callbacks")) + list(extra_callbacks) + [artefacts]
    summary = {}
    if cfg.trainer.get("enable_model_summary", True) and not any(isinstance(c, ModelSummary) for c in callbacks):
        # ours instead of Lightning's default (no "Total FLOPs: 0", lit/summary.py); passed with the flag off,
        # because Lightning announces a summary callback it finds in the list with an INFO line
        callbacks.append(ModelSummaryWithoutZeroFlops())
        summary = {"enable_model_summary": False}
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          plugins=[AtomicCheckpointIO()], default_root_dir=str(out), **summary)
    return trainer, artefacts
