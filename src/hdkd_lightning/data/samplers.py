"""Inverse-frequency sampling that also works with several processes.

:class:`DistributedWeightedSampler` draws ``num_samples`` indices with replacement according
to per-sample weights, from a generator seeded with ``seed + epoch`` -- the same sequence on
every rank -- and gives rank ``r`` the indices ``r, r + world, r + 2 world, ...``. Each rank
thus gets its share of one weighted draw per epoch (no overlap, no gap). It subclasses
``torch.utils.data.DistributedSampler`` so Lightning leaves it in place under DDP instead of
wrapping it, and calls ``set_epoch`` on it each epoch. Outside DDP it is a plain weighted
sampler (world 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def inverse_frequency_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per-sample weights 1 / count(label): every class is drawn equally often on average."""
    y = torch.as_tensor(list(labels), dtype=torch.long)
    counts = torch.bincount(y, minlength=num_classes).double()
    return (1.0 / counts.clamp(min=1))[y]


class DistributedWeightedSampler(DistributedSampler):
    def __init__(self, weights: Sequence[float] | torch.Tensor, num_samples: int | None = None,
                 num_replicas: int | None = None, rank: int | None = None, seed: int = 0,
                 replacement: bool = True):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        if self.weights.ndim != 1 or len(self.weights) == 0 or bool((self.weights < 0).any()):
            raise ValueError("weights must be a non-empty 1-D sequence of non-negative numbers")
        total = len(self.weights) if num_samples is None else int(num_samples)
        # not calling DistributedSampler.__init__ (it needs a dataset and an initialised group)
        self.dataset = None
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.seed = int(seed)
        self.shuffle = True
        self.drop_last = False
        self.replacement = replacement
        self.num_samples = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.total_size, self.replacement, generator=g)
        epoch = self.epoch  # keys carry the epoch so augmentation is seeded per (epoch, index)
        return ((epoch, i) for i in idx[self.rank:self.total_size:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


class EpochShuffleSampler(DistributedSampler):
    """Shuffled order that depends only on ``(seed, epoch)``, yielding ``(epoch, index)`` keys.

    Because the order and, through the epoch in each key, every sample's augmentation are
    functions of the seed and epoch alone, a run resumed from ``last.ckpt`` sees exactly the
    batches an uninterrupted run would have seen. Works as a plain shuffle with one process
    and as a disjoint per-rank share under DDP (Lightning keeps it and calls ``set_epoch``).
    """

    def __init__(self, dataset, seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                 drop_last: bool = False) -> None:
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, i) for i in super().__iter__())
