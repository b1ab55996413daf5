"""What every command does before its job: allocator tuning, resolvers, clean errors."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

log = logging.getLogger("hdkd_lightning")


def prepare_process() -> None:
    """Allocator tuning (see hdkd_lightning._runtime) and the config resolvers, once per process."""
    try:
        from hdkd_lightning._runtime import configure_allocator
    except ImportError:  # pragma: no cover - older checkouts without the runtime module
        configure_allocator = None
    if configure_allocator is not None:
        configure_allocator()
    from hdkd_lightning.config import register_resolvers

    register_resolvers()


def hydra_command(config_name: str) -> Callable:
    """Decorate a job ``fn(cfg)`` as a Hydra command reading this package's configs.

    Users add their own configs with ``--config-dir``. Known user errors (bad config values,
    bad data, refused checkpoints) end the process with one clear line and exit status 2.
    """
    import hydra

    from hdkd_lightning._paths import config_dir

    def wrap(fn: Callable) -> Callable:
        @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
        @functools.wraps(fn)
        def job(cfg):
            from hdkd_lightning.checkpoints import CheckpointError  # original-code weights' errors included
            from hdkd_lightning.config import ConfigError

            user_errors = (ConfigError, CheckpointError, FileNotFoundError)
            try:
                from hdkd_lightning.data.base import DataError  # the data layer's own error type

                user_errors += (DataError,)
            except ImportError:
                pass
            try:
                return fn(cfg)
            except user_errors as exc:
                log.error("%s: %s", type(exc).__name__, exc)
                sys.exit(2)

        def main() -> None:
            prepare_process()
            job()

        return main

    return wrap
