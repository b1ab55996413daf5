"""Timing helpers: every comparison runs interleaved (A, B, C, A, B, C, ...) after a warm-up,
so that load from other processes on a shared machine hits all cases alike; results are medians."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

__all__ = ["Sample", "measure", "interleave", "summarize", "reset_peak_rss", "peak_rss_mb", "rss_mb"]


@dataclass
class Sample:
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float  # peak resident size of the process during this call (or since start)


def _read_status(key: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    hwm = _read_status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    rss = _read_status("VmRSS")
    return rss if rss is not None else float("nan")


def measure(fn: Callable[[], object]) -> Sample:
    """Wall, user and system time (all threads of the process) and peak RSS of one call."""
    reset_peak_rss()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return Sample(wall, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, peak_rss_mb())


def interleave(cases: Dict[str, Callable[[], object]], warmup: int = 1, repeats: int = 3,
               log: Optional[Callable[[str], None]] = None) -> Dict[str, List[Sample]]:
    """Run every case ``warmup`` times, then ``repeats`` rounds of one call per case each."""
    for i in range(warmup):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            if log:
                log(f"  warm-up {i + 1}/{warmup} {name}: {time.perf_counter() - t0:.2f} s")
    out: Dict[str, List[Sample]] = {name: [] for name in cases}
    for r in range(repeats):
        for name, fn in cases.items():
            s = measure(fn)
            out[name].append(s)
            if log:
                log(f"  repeat {r + 1}/{repeats} {name}: {s.wall_s:.2f} s (user {s.user_s:.2f}, sys {s.sys_s:.2f})")
    return out


def summarize(samples: List[Sample]) -> dict:
    """Medians of wall/user/sys time, the largest peak RSS, and the raw wall times."""
    return {
        "wall_s": statistics.median(s.wall_s for s in samples),
        "user_s": statistics.median(s.user_s for s in samples),
        "sys_s": statistics.median(s.sys_s for s in samples),
        "peak_rss_mb": max(s.peak_rss_mb for s in samples),
        "walls_s": [round(s.wall_s, 4) for s in samples],
    }


def as_dict(sample: Sample) -> dict:
    return asdict(sample)


def latency_row(latency: List[Sample], throughput: List[Sample], batch: int) -> dict:
    """Batch-1 latency (median and p95, ms) and throughput at ``batch`` (img/s) from interleaved samples."""
    walls = sorted(s.wall_s for s in latency)
    return {"latency_b1_ms": summarize(latency)["wall_s"] * 1e3,
            "latency_b1_p95_ms": walls[min(len(walls) - 1, int(round(0.95 * (len(walls) - 1))))] * 1e3,
            f"throughput_b{batch}_img_s": batch / summarize(throughput)["wall_s"]}
