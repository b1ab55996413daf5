"""``hdkd-convert``: a weights file of the original code -> a checkpoint of this project."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from hdkd_lightning.config import hydra_choice
from hdkd_lightning.errors import ConfigError
from hdkd_lightning.pipeline.build import build_datamodule

log = logging.getLogger("hdkd_lightning")

__all__ = ["run_convert"]


def run_convert(cfg: DictConfig) -> Path:
    """A weights file of the original code -> a checkpoint usable by eval, predict and as teacher."""
    import lightning

    from hdkd_lightning.checkpoints.format import META_KEY, build_meta
    from hdkd_lightning.checkpoints.io import AtomicCheckpointIO
    from hdkd_lightning.errors import CheckpointError
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
