"""Hyperparameter sweeps with Optuna: the search space of each model kind, and resumable studies.

``conf/hparams_search/optuna.yaml`` names :func:`suggest_search_space` as the Optuna sweeper's
``custom_search_space``. The sweeper calls it for every trial with the composed config, after
drawing the keys given on the command line in Hydra's sweep syntax (``key=choice(...)``); it
then draws the entries of
``search_space.distill`` (model=distill) or ``search_space.supervised`` (a network trained on
labels: model=teacher / student) that are not drawn yet, and refuses, before the first trial
runs, a searched key the chosen model does not have (one line naming the key). The sweeper
turns the trial's parameters into the job's overrides.

:func:`resumed_seed` makes a study stored with ``hydra.sweeper.storage`` resume without
repeating its first points.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf

from hdkd_lightning.errors import ConfigError

__all__ = ["model_kind", "suggest_search_space", "resumed_seed"]

_MISSING = object()


def model_kind(cfg: DictConfig) -> str:
    """``distill`` for a DistillModule, ``supervised`` for a network trained on labels alone."""
    return "distill" if str(OmegaConf.select(cfg, "model._target_", default="")).endswith("DistillModule") \
        else "supervised"


def _suggest(trial: Any, name: str, spec: Dict[str, Any]) -> None:
    kind = str(spec.get("type", "float"))
    if kind == "categorical":
        trial.suggest_categorical(name, list(spec["choices"]))
    elif kind == "float":
        trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    elif kind == "int":
        trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    else:
        raise ConfigError(f"search_space entry {name}: type={kind!r}; use float, int or categorical")


def suggest_search_space(cfg: DictConfig, trial: Any) -> None:
    """Draw this model kind's search space into ``trial`` (see the module docstring)."""
    kind = model_kind(cfg)
    space = OmegaConf.to_container(OmegaConf.select(cfg, f"search_space.{kind}") or DictConfig({}), resolve=True)
    for name, spec in space.items():
        spec = dict(spec or {})
        key = str(spec.pop("key", name))
        if key not in trial.params:
            _suggest(trial, key, spec)
    model = (OmegaConf.select(cfg, "hydra.runtime.choices") or {}).get("model", "?")
    missing = [k for k in trial.params if OmegaConf.select(cfg, str(k), default=_MISSING) is _MISSING]
    if missing:
        raise ConfigError(
            f"the sweep searches {', '.join(map(str, missing))}, which model={model} does not have; search keys "
            f"of {model} (search_space.{kind}.<name>.key, or <key>=choice(...)/interval(...) on the command line)")
    if not trial.params:
        raise ConfigError(f"nothing to search for model={model}: search_space.{kind} is empty and no "
                          f"sweep parameters were given")


def resumed_seed(seed: Optional[int], storage: Optional[str] = None, study_name: Optional[str] = None) -> Optional[int]:
    """The sampler seed for a study: ``seed`` plus the trials ``storage`` already holds for ``study_name``.

    A fixed-seed sampler restarted on a stored study would draw the same start-up points again;
    moving the seed on by the stored trial count makes a resumed study continue with new points,
    while the same command on the same storage still gives the same sweep. Used through the
    ``${hdkd.sweep_seed:seed,storage,study_name}`` resolver in ``conf/hparams_search/optuna.yaml``.
    """
    if seed is None:
        return None
    done = 0
    if storage:
        import optuna

        counts = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage=str(storage))}
        done = int(counts.get(study_name, 0))
    return int(seed) + done
