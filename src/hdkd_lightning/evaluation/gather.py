"""The scored images of a split, gathered from every process and each counted once.

Under DDP, Lightning's ``DistributedSampler`` gives every process the same number of samples by
padding the split with repeats of its first images. Validation
(:class:`~hdkd_lightning.lit.base.ClassifierModuleBase`) and test
(:class:`~hdkd_lightning.evaluation.callback.TestArtefacts`) both score through
:func:`gather_each_image_once`, so a repeat never counts twice and the numbers equal those of one
process. An image is known by its record path, which is unique within a split.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

__all__ = ["gather_each_image_once"]


def gather_each_image_once(world_size: int, paths: Sequence[str], labels: torch.Tensor,
                           probs: torch.Tensor) -> Tuple[List[str], torch.Tensor, torch.Tensor]:
    """This process's ``paths`` / ``labels [N]`` / ``probs [N, C]`` joined with every other
    process's (``world_size`` processes), each path kept once (its first row), in path order.

    Every process must call it (an all-gather when ``world_size > 1``); each gets the same result,
    as CPU tensors (``probs`` in float32).
    """
    paths = list(paths)
    labels = labels.detach().cpu()
    probs = probs.detach().float().cpu()
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: List = [None] * world_size
        torch.distributed.all_gather_object(parts, (paths, labels, probs))
        paths = [p for part in parts for p in part[0]]
        labels = torch.cat([part[1] for part in parts])
        probs = torch.cat([part[2] for part in parts])
    first = {}
    for i, path in enumerate(paths):
        first.setdefault(path, i)
    keep = sorted(first)
    rows = torch.tensor([first[p] for p in keep], dtype=torch.long)
    return keep, labels[rows], probs[rows]
