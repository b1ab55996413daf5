"""Benchmark code behind ``hdkd-bench``: timing, FLOP counting, and the original code's pattern.

* :mod:`~hdkd_lightning.bench.timing`: interleaved repeats, medians, CPU user/system time, peak RSS.
* :mod:`~hdkd_lightning.bench.flops`: FLOPs of any callable (``torch.utils.flop_counter``), matmul peak.
* :mod:`~hdkd_lightning.bench.original`: the authors' distillation computation pattern
  (network prefixes re-run per distilled stage), for the speed comparison and a loss-equality check.
* :mod:`~hdkd_lightning.bench.suite`: the sections of the benchmark; its inference section in
  :mod:`~hdkd_lightning.bench.inference`.
"""

from hdkd_lightning.bench.flops import count_flops, matmul_flops_per_s
from hdkd_lightning.bench.original import original_pattern_forward
from hdkd_lightning.bench.timing import Sample, interleave, summarize

__all__ = ["count_flops", "matmul_flops_per_s", "original_pattern_forward", "Sample", "interleave", "summarize"]
