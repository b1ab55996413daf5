"""One HDKD distillation forward: each network runs exactly once.

The teacher gives its logits and stage outputs in one pass (no gradients); the student gives
its class/distillation logits and stage outputs in one pass; :class:`~hdkd_lightning.losses.HdkdLoss`
combines them. Used by ``DistillModule`` and by ``hdkd-bench`` so that both measure the same work.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from hdkd_lightning.losses import HdkdLoss

__all__ = ["teacher_targets", "distill_forward", "auto_channels_last"]


def auto_channels_last(device_type: str) -> bool:
    """What ``model.channels_last=auto`` means on a device type (``"cuda"``, ``"cpu"``, ...).

    Channels-last on CUDA, where convolutions (and tensor cores under mixed precision) prefer
    it; the default NCHW layout elsewhere: on the CPU ``hdkd-bench`` measured the NCHW
    distillation step faster (``docs/PERFORMANCE.md``).
    """
    return device_type == "cuda"


@torch.no_grad()
def teacher_targets(teacher: nn.Module, images: torch.Tensor):
    """Teacher logits and stage 1-3 outputs from one inference pass (eval mode, no autograd)."""
    return teacher.forward_intermediates(images, indices=[0, 1, 2], return_logits=True)


def distill_forward(student: nn.Module, teacher: nn.Module, loss_fn: HdkdLoss, images: torch.Tensor,
                    labels: torch.Tensor, teacher_images: torch.Tensor = None
                    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
    """Loss, its components, and the student's class logits (for training metrics).

    ``teacher_images`` lets the teacher see the same batch in another memory format or dtype.
    """
    t_logits, t_feats = teacher_targets(teacher, images if teacher_images is None else teacher_images)
    tokens, s_feats = student.forward_intermediates(images, indices=[0, 1, 2])
    cls_logits, dist_logits = student.forward_heads(tokens)
    loss, parts = loss_fn(cls_logits, dist_logits, s_feats, t_logits, t_feats, labels)
    return loss, parts, cls_logits if dist_logits is None else (cls_logits + dist_logits) / 2
