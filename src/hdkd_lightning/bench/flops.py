"""FLOP counting with ``torch.utils.flop_counter.FlopCounterMode`` and the matmul reference rate.

The counter counts matrix products and convolutions (forward and backward, including
``scaled_dot_product_attention``), 2 FLOPs per multiply-add, and ignores element-wise work
(norms, activations, the optimizer): the usual convention of fvcore and papers (GMACs = FLOPs/2).

Correction: torch's formula for ``convolution_backward`` (2.14) counts the weight gradient of a
*grouped* convolution as if it were dense, i.e. ``groups`` times too much: a depthwise 3x3 conv
with 64 channels counts 64x its forward cost for backward instead of 2x. HDKD is full of
depthwise convolutions, so the uncorrected count of a training step is more than twice the real
one. :func:`count_flops` replaces that formula: input and weight gradients each cost one forward.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

__all__ = ["count_flops", "matmul_case", "matmul_flops_per_s"]


_aten = torch.ops.aten


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    if transposed:  # not used by HDKD: keep torch's own formula
        return flop_registry[_aten.convolution_backward](grad_out_shape, x_shape, w_shape, bias, stride, padding,
                                                          dilation, transposed, output_padding, groups, output_mask,
                                                          out_shape, **kwargs)
    # forward cost: 2 * N * C_out * prod(out spatial) * (C_in / groups) * prod(kernel); w_shape[1] is C_in / groups
    forward = 2 * grad_out_shape[0] * math.prod(grad_out_shape[1:]) * math.prod(w_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs executed by ``fn()`` (it runs once, under the counter; grouped-conv backward corrected)."""
    with FlopCounterMode(display=False, custom_mapping={_aten.convolution_backward: _conv_backward_flop}) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_case(n: int = 2048, dtype: torch.dtype = torch.float32, device: str = "cpu", reps: int = 1):
    """A callable running ``reps`` ``n x n @ n x n`` products (synchronised), and the FLOPs of one call.

    The hardware's practical peak: time the callable (alone, or interleaved with other cases)
    and divide its FLOPs by the time.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run() -> None:
        for _ in range(reps):
            a @ b
        sync()
    return run, 2.0 * n ** 3 * reps


def matmul_flops_per_s(n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5,
                       device: str = "cpu") -> float:
    """Median FLOP/s of an ``n x n @ n x n`` product (:func:`matmul_case` timed on its own)."""
    run, flops = matmul_case(n, dtype, device)
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return flops / statistics.median(times)
