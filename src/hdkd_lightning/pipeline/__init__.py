"""The jobs behind the commands: train (fit + test), evaluate, predict, convert, export, explain.

Entry points in ``hdkd_lightning.cli`` only compose the config and call one of these; what the
jobs build from a config (DataModule, LightningModule, Trainer) lives in
:mod:`hdkd_lightning.pipeline.build`. Importing this package costs nothing: each job imports
Lightning and the data layer when it runs.
"""

from typing import Any


def run_train(cfg, extra_callbacks=()) -> Any:
    from hdkd_lightning.pipeline.train import run_train as job

    return job(cfg, extra_callbacks)


def run_eval(cfg) -> Any:
    from hdkd_lightning.pipeline.evaluate import run_eval as job

    return job(cfg)


def run_predict(cfg) -> Any:
    from hdkd_lightning.pipeline.predict import run_predict as job

    return job(cfg)


def run_convert(cfg) -> Any:
    from hdkd_lightning.pipeline.convert import run_convert as job

    return job(cfg)


def run_export(cfg) -> Any:
    from hdkd_lightning.pipeline.export import run_export as job

    return job(cfg)


def run_explain(cfg) -> Any:
    from hdkd_lightning.pipeline.explain import run_explain as job

    return job(cfg)


__all__ = ["run_train", "run_eval", "run_predict", "run_convert", "run_export", "run_explain"]
