"""Where runs live and how later commands find them.

Layout (``paths.log_dir`` defaults to ``./logs``)::

    <log_dir>/<task_name>/runs/<time>/            one hdkd-train run
        checkpoints/best.ckpt, checkpoints/last.ckpt
        metrics.json, per_class.csv, predictions.csv, confusion_matrix.png, splits.csv
    <log_dir>/<task_name>/multiruns/<time>/<job>/  one job of a sweep, same content

"Latest" means the most recently written checkpoint, so a resumed old run counts as recent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

__all__ = ["find_latest_checkpoint"]


def find_latest_checkpoint(log_dir: Path, task_name: str, name: str) -> Optional[Path]:
    """The newest ``checkpoints/<name>`` below the runs and sweep jobs of ``task_name``."""
    root = Path(log_dir) / task_name
    candidates = list(root.glob(f"runs/*/checkpoints/{name}")) + list(root.glob(f"multiruns/*/*/checkpoints/{name}"))
    candidates = [c for c in candidates if c.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
