"""Where the packaged Hydra configs live.

A wheel carries them as ``hdkd_lightning/conf`` (see ``pyproject.toml``); an editable install
reads the repository's top-level ``conf/`` directly, so edits there take effect at once.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """Absolute path of the directory holding ``train.yaml`` and the config groups."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent.parent / "conf"):
        if (candidate / "train.yaml").is_file() or (candidate / "data").is_dir():
            return candidate
    raise FileNotFoundError(
        f"hdkd_lightning's configs were not found next to the package ({_PACKAGE_DIR / 'conf'}) "
        f"or in the source tree ({_PACKAGE_DIR.parent.parent / 'conf'}); reinstall the package."
    )
