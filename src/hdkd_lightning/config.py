"""Hydra helpers shared by the commands: resolvers, config printing, early checks.

Every check here runs before any data is read or any network is built, and fails with one
line that names the config key and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from hdkd_lightning.errors import ConfigError

__all__ = ["register_resolvers", "print_config_tree", "check_trainer_config", "hydra_choice"]


def register_resolvers() -> None:
    """``${hdkd.cwd:}`` (the starting directory), ``${hdkd.wandb_offline:}`` and
    ``${hdkd.sweep_seed:seed,storage,study_name}`` (:func:`hdkd_lightning.sweeps.resumed_seed`)."""
    if not OmegaConf.has_resolver("hdkd.cwd"):
        OmegaConf.register_new_resolver("hdkd.cwd", lambda: os.getcwd())
    if not OmegaConf.has_resolver("hdkd.wandb_offline"):
        # offline unless the user asked for online logging
        OmegaConf.register_new_resolver("hdkd.wandb_offline",
                                        lambda: os.environ.get("WANDB_MODE", "offline").lower() != "online")
    if not OmegaConf.has_resolver("hdkd.sweep_seed"):
        def sweep_seed(seed, storage=None, study_name=None):
            from hdkd_lightning.sweeps import resumed_seed

            return resumed_seed(seed, storage, study_name)

        OmegaConf.register_new_resolver("hdkd.sweep_seed", sweep_seed)


def hydra_choice(group: str, default: str = "") -> str:
    """Which option of a config group this run uses (``data`` -> ``brain_tumor``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get(group) or default)
    except Exception:
        return default


def is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def print_config_tree(cfg: DictConfig, save_to: Optional[Path] = None,
                      order=("data", "model", "callbacks", "logger", "trainer", "paths")) -> None:
    """Print the resolved config as a rich tree (and save the text next to the run)."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        with open(save_to, "w") as f:
            rich.print(tree, file=f)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_trainer_config(trainer: DictConfig, nonfinite_loss: Optional[str] = None) -> None:
    """Devices, precision and sweep/DDP combinations that cannot run, refused before training.

    ``nonfinite_loss`` is the model's ``model.nonfinite_loss`` (None when nothing is trained).
    """
    accel = str(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", 1)
    strategy = str(trainer.get("strategy", "auto"))
    precision = str(trainer.get("precision", "32-true"))
    gpus = _cuda_count()
    on_gpu = accel in ("gpu", "cuda") or (accel == "auto" and gpus > 0)
    n_dev = devices if isinstance(devices, int) else (len(devices) if OmegaConf.is_list(devices) else None)
    if on_gpu:
        if accel in ("gpu", "cuda") and gpus == 0:
            raise ConfigError("trainer.accelerator=gpu but no CUDA GPU is visible; use trainer=cpu (or "
                              "trainer.accelerator=cpu)")
        if n_dev is not None and n_dev > gpus:
            raise ConfigError(f"trainer.devices={devices} but only {gpus} GPU(s) are visible; set "
                              f"trainer.devices={gpus} or fewer (or -1 for all)")
    else:
        cores = os.cpu_count() or 1
        if n_dev is not None and n_dev > cores:
            raise ConfigError(f"trainer.devices={devices} CPU processes but this machine has {cores} cores; set "
                              f"trainer.devices={cores} or fewer")
        if precision in ("16-mixed", "16", "16-true", "fp16", "transformer-engine"):
            raise ConfigError(f"trainer.precision={precision} needs a GPU; on CPU use trainer.precision=bf16-mixed "
                              f"or 32-true")
    multi = (n_dev is not None and n_dev > 1) or devices == -1 or "ddp" in strategy or trainer.get("num_nodes", 1) > 1
    processes = _process_count(devices, n_dev, gpus if on_gpu else 1) * int(trainer.get("num_nodes", 1) or 1)
    if nonfinite_loss == "skip" and processes > 1:
        # a process that skips its step never joins the gradient all-reduce the others wait in: DDP hangs
        raise ConfigError(f"model.nonfinite_loss=skip cannot run on {processes} processes (trainer.devices={devices}, "
                          f"trainer.num_nodes={trainer.get('num_nodes', 1)}): a step skipped by one DDP process leaves the "
                          f"others waiting for its gradients forever; use model.nonfinite_loss=error, or trainer.devices=1")
    if multi and is_multirun() and "spawn" not in strategy and not _slurm_task_per_device(n_dev, trainer):
        raise ConfigError(
            "a multirun sweep (-m) cannot use DDP with several processes here: Lightning starts each extra process by "
            "re-running the command line, which would restart the whole sweep. Sweep with trainer.devices=1, submit "
            "the sweep to SLURM with one task per device (hydra/launcher=slurm_gpu), or run one hdkd-train per "
            "setting (e.g. with torchrun / a job array) without -m"
        )


def _process_count(devices, n_dev: Optional[int], all_devices: int) -> int:
    """Training processes per node for ``trainer.devices`` as Lightning reads it: a count, a list of
    device ids, "0,1", or -1 / "auto" (every visible GPU; one process on the CPU)."""
    if n_dev is not None:
        return all_devices if n_dev == -1 else n_dev
    text = str(devices).strip()
    if text in ("-1", "auto"):
        return all_devices
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    return int(text) if text.isdigit() else 1


def _slurm_task_per_device(n_dev, trainer: DictConfig) -> bool:
    """Whether this sweep job was submitted to SLURM with one task per device on each node: then SLURM
    starts every DDP process (Lightning's SLURM environment) and nothing re-runs the command line."""
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
    except Exception:
        return False
    return ("SlurmLauncher" in str(launcher.get("_target_", "")) and n_dev is not None
            and int(launcher.get("tasks_per_node", 1)) == n_dev
            and int(launcher.get("nodes", 1)) == int(trainer.get("num_nodes", 1)))
