"""The project's user-error types, and which exceptions count as a user error.

A *user error* is a mistake the user can fix: a config value, a data folder, a checkpoint file,
the command line. Its message names the key or file and the fix, and the commands print it as
one line (further lines may explain, e.g. a dataset's expected layout) with exit status
:data:`EXIT_USER_ERROR`. Every other exception is a bug or a problem of the environment: it keeps
its traceback and the command exits with status 1.

This module imports only the standard library, so every layer (models, data, checkpoints,
config, the commands) can import its error types from here without import loops.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["ConfigError", "CheckpointError", "DataError", "UserError", "USER_ERROR_TYPES", "EXIT_USER_ERROR",
           "find_user_error"]

#: exit status of a command stopped by a user error (1 stays Python's status for an uncaught exception)
EXIT_USER_ERROR = 2


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the fix."""


class CheckpointError(ValueError):
    """A checkpoint or weights file cannot be used as asked (missing, unsafe, foreign, or not matching)."""


class DataError(ValueError):
    """Bad data or a bad data configuration, found before training.

    The message names the offending files (the first few and the count) or the config key,
    and says how to fix it.
    """


class UserError(Exception):
    """A mistake of the command line itself (an unknown option, key or group choice, a missing value)."""


#: the exceptions the commands report as one line with exit status 2 (subclasses included)
USER_ERROR_TYPES = (ConfigError, CheckpointError, DataError, UserError)


def find_user_error(exc: Optional[BaseException]) -> Optional[BaseException]:
    """The user error that ``exc`` is or explicitly wraps, else ``None``.

    Only ``raise ... from ...`` chains (``__cause__``) are followed: Hydra wraps an error raised
    inside a ``_target_`` this way (``InstantiationException``). ``__context__`` is not followed:
    it only says that ``exc`` was raised while another exception was being handled, so a bug
    inside an ``except ConfigError:`` block stays a bug, with its traceback.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, USER_ERROR_TYPES):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None
