"""HDKD networks (registered with timm on import) and loading of the original code's weights."""

from hdkd_lightning.models.hdkd import HdkdStudent, HdkdTeacher, valid_image_sizes

__all__ = ["HdkdTeacher", "HdkdStudent", "valid_image_sizes"]

from hdkd_lightning.models.original import (  # noqa: E402
    OriginalCheckpointError,
    checkpoint_filter_fn,
    load_original_checkpoint,
)

__all__ += ["load_original_checkpoint", "checkpoint_filter_fn", "OriginalCheckpointError"]
