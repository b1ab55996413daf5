"""Checkpoints: their format and metadata, safe reading, runs and teachers.

* :mod:`~hdkd_lightning.checkpoints.format`: the ``"hdkd"`` metadata (:func:`build_meta`), safe
  reading (``weights_only=True``), rebuilding a network from a checkpoint (strictly, through
  :func:`hdkd_lightning.models.loading.load_strict`). Re-exported here; needs only torch (and timm
  when rebuilding). Its error type, ``CheckpointError``, lives in :mod:`hdkd_lightning.errors`.
* :mod:`~hdkd_lightning.checkpoints.io`: crash-safe writes for Lightning (``AtomicCheckpointIO``).
* :mod:`~hdkd_lightning.checkpoints.runs`: run folders, ``run.json`` states, "latest" lookups.
* :mod:`~hdkd_lightning.checkpoints.teacher`: the teacher of a distillation run, found and checked.

The last three import Lightning or the models; import them by their module path.
"""

from hdkd_lightning.checkpoints.format import (
    META_KEY,
    build_meta,
    checkpoint_val_score,
    drop_duplicate_networks,
    is_project_checkpoint,
    network_from_checkpoint,
    read_checkpoint,
    update_meta,
)

__all__ = ["META_KEY", "build_meta", "checkpoint_val_score", "drop_duplicate_networks", "is_project_checkpoint",
           "network_from_checkpoint", "read_checkpoint", "update_meta"]
