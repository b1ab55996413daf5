"""What machine a measurement ran on: CPU model and instruction-set flags, cores, torch, GPU.

Every benchmark and study result carries it (CPUs differ between machines: some have
AVX512-BF16, some only AVX2).
"""

from __future__ import annotations

import os
import platform

__all__ = ["machine_info"]


def machine_info() -> dict:
    """CPU model, its AVX/AMX/FMA flags, logical CPUs, torch threads and version, GPU, load average."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
        for line in info.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
        isa = sorted(f for f in flags if f.startswith(("avx", "amx")) or f == "fma")
    except OSError:
        isa = []
    out = {"cpu": cpu, "cpu_isa": isa, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        out["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out
