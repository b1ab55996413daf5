"""The authors' distillation computation pattern, re-implemented on this project's networks.

In the original code every distilled feature is produced by a *fresh* network prefix run from
the input image: stage 1, stages 1-2 and stages 1-3 of the student (with gradients) and of the
teacher, on top of the student's main forward and a separate teacher call for the logits. The
student's conv stages therefore run 4 times forward (and backward), the teacher's stage 1 four
times, stage 2 three times and stage 3 twice per step. The loss value is identical to a single
pass per network (same weights, same batch; BatchNorm in training mode normalises each run with
the same batch statistics), only the cost differs. The teacher calls run without autograd (the
teacher is frozen), which is the cheapest reading of the original; anything else is slower.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from hdkd_lightning.losses import HdkdLoss

__all__ = ["original_pattern_forward"]


def _prefixes(model: nn.Module, n: int = 3):
    # fresh nn.Sequential views over the first k stages (sharing the modules, hence the weights)
    return [nn.Sequential(*list(model.stages.children())[:k]) for k in range(1, n + 1)]


def original_pattern_forward(student: nn.Module, teacher: nn.Module, loss_fn: HdkdLoss, images: torch.Tensor,
                             labels: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Loss and components computed the way the original code computes them."""
    with torch.no_grad():
        teacher_logits = teacher(images)  # separate teacher call for the logits
    out = student(images)  # main student forward: (class, distillation) logits in training mode
    cls_logits, dist_logits = out if isinstance(out, tuple) else (out, None)
    student_feats = [prefix(images) for prefix in _prefixes(student)]
    with torch.no_grad():
        teacher_feats = [prefix(images) for prefix in _prefixes(teacher)]
    return loss_fn(cls_logits, dist_logits, student_feats, teacher_logits, teacher_feats, labels)
