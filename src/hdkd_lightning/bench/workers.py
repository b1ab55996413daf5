"""Bench cases that need a process of their own, and how ``hdkd-bench`` starts them.

* ``default-alloc``: the allocator tuning of :mod:`hdkd_lightning._runtime` is process-wide and
  cannot be undone, so the default glibc allocator is measured in a fresh process
  (``HDKD_MALLOC_TUNE=0``);
* ``memory``: a tuned allocator keeps the heap's high-water mark, so each pattern's peak memory
  is measured alone;
* ``compile``: ``torch.compile`` may take minutes on 2 cores; it runs under a time limit;
* ``onnxruntime``: ONNX Runtime's thread pool timed beside PyTorch's (spinning OpenMP threads) in
  one process runs 2-3x slower than alone.

:func:`run_worker` runs ``python -m hdkd_lightning.bench.workers <name> '<json kwargs>'``; the
worker prints one JSON line with its result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, Optional

import torch

from hdkd_lightning.bench.step import DistillStep, build_models, make_batch
from hdkd_lightning.bench.timing import interleave, summarize
from hdkd_lightning.distillation import auto_channels_last

__all__ = ["run_worker", "WORKERS"]


def run_worker(name: str, kwargs: dict, env: Optional[Dict[str, str]] = None, timeout_s: int = 1800) -> dict:
    """Run worker ``name`` in a fresh Python process; its JSON result, or ``{"error": ...}``."""
    args = [sys.executable, "-m", "hdkd_lightning.bench.workers", name, json.dumps(kwargs)]
    try:
        proc = subprocess.run(args, env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"worker failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}"}


def worker_inputs(image_size: int, batch: int, seed: int):
    """What every bench subprocess starts with: the allocator setting, the models and one batch."""
    from hdkd_lightning._runtime import configure_allocator

    state = configure_allocator()
    return (state,) + build_models(image_size, seed) + make_batch(image_size, batch, seed)


def worker_default_alloc(image_size: int, batch: int, warmup: int, repeats: int, seed: int) -> dict:
    state, teacher, student, images, labels = worker_inputs(image_size, batch, seed)
    steps = {"original": DistillStep(student, teacher, images, labels, "original"),
             "ours": DistillStep(student, teacher, images, labels, "ours", fold_teacher=True)}
    res = {k: summarize(v) for k, v in interleave(steps, warmup, repeats).items()}
    return {"allocator": state, "image_size": image_size, "batch_size": batch, "warmup": warmup, "repeats": repeats,
            "original_pattern_img_s": batch / res["original"]["wall_s"], "ours_img_s": batch / res["ours"]["wall_s"],
            "timings": res}


def worker_memory(image_size: int, batch: int, pattern: str, seed: int, device: str = "cpu") -> dict:
    from hdkd_lightning.bench.timing import peak_rss_mb, rss_mb

    _, teacher, student, images, labels = worker_inputs(image_size, batch, seed)
    step = DistillStep(student, teacher, images, labels, pattern, channels_last=auto_channels_last(torch.device(device).type),
                       fold_teacher=pattern == "ours", device=device)
    out = {"rss_before_step_mb": rss_mb()}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    step()
    step()  # the second step holds the optimizer state as well
    out["peak_rss_mb"] = peak_rss_mb()
    if device.startswith("cuda"):
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["gpu_step_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    return out


def worker_compile(image_size: int, batch: int, warmup: int, repeats: int, seed: int) -> dict:
    _, teacher, student, images, labels = worker_inputs(image_size, batch, seed)
    eager = DistillStep(student, teacher, images, labels, "ours", fold_teacher=True)
    compiled = DistillStep(student, teacher, images, labels, "ours", fold_teacher=True, compile_student=True)
    t0 = time.perf_counter()
    loss_compiled = float(compiled())  # first step: compiles forward and backward
    compile_s = time.perf_counter() - t0
    loss_eager = float(eager())  # the same first step (same weights and batch), eagerly
    res = {k: summarize(v) for k, v in interleave({"eager": eager, "compiled": compiled}, warmup, repeats).items()}
    return {"image_size": image_size, "batch_size": batch, "first_step_s (compile)": compile_s,
            "eager_img_s": batch / res["eager"]["wall_s"], "compiled_img_s": batch / res["compiled"]["wall_s"],
            "speedup": res["eager"]["wall_s"] / res["compiled"]["wall_s"],
            "loss_rel_diff": abs(loss_eager - loss_compiled) / abs(loss_eager), "timings": res}


def worker_onnxruntime(image_size: int, batch: int, models: list, threads: int, warmup: int, latency_repeats: int,
                       repeats: int, seed: int) -> dict:
    """ONNX Runtime fp32 and int8 of each model (random weights; int8 calibrated on random inputs: speed only)."""
    import tempfile

    import numpy as np
    import onnxruntime as ort
    import timm

    import hdkd_lightning  # noqa: F401  (registers the HDKD networks)
    from hdkd_lightning.bench.timing import latency_row
    from hdkd_lightning.deploy.export import exported_program, write_onnx
    from hdkd_lightning.deploy.quantize import quantize_int8

    torch.manual_seed(seed)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    x1 = torch.randn(1, 3, image_size, image_size)
    xb = torch.randn(batch, 3, image_size, image_size)
    sessions, rows = {}, {}
    with tempfile.TemporaryDirectory(prefix="hdkd-bench-onnx-") as work:
        for i, name in enumerate(models):
            kwargs = {"img_size": image_size} if name.startswith(("hdkd", "deit")) and image_size != 224 else {}
            net = timm.create_model(name, num_classes=7, **kwargs).eval()
            fp32 = f"{work}/{i}.onnx"
            write_onnx(exported_program(net, x1.expand(2, -1, -1, -1).clone(), fold=name.startswith("hdkd")), fp32)
            gen = np.random.default_rng(seed)
            int8 = quantize_int8(fp32, f"{work}/{i}.int8.onnx", (gen.standard_normal(x1.shape).astype(np.float32)
                                                                 for _ in range(8)))
            label = "hdkd" if name == "hdkd_student_distilled" else name
            for precision, path in (("fp32", fp32), ("int8", str(int8))):
                key = f"{label} (onnxruntime {precision})"
                sessions[key] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                rows[key] = {"model": key, "params_m": sum(p.numel() for p in net.parameters()) / 1e6, "gmacs": None,
                             "image_size": image_size, "runtime": f"onnxruntime {precision}, {threads} threads"}

        def caller(session, x):
            feed = {"image": x.numpy()}
            return lambda: session.run(None, feed)
        lat = interleave({k: caller(s, x1) for k, s in sessions.items()}, warmup + 1, latency_repeats)
        thr = interleave({k: caller(s, xb) for k, s in sessions.items()}, warmup, repeats)
    for key in sessions:
        rows[key].update(latency_row(lat[key], thr[key], batch))
    return {"rows": list(rows.values())}


WORKERS = {"default-alloc": worker_default_alloc, "memory": worker_memory, "compile": worker_compile,
           "onnxruntime": worker_onnxruntime}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in WORKERS:
        print(f"usage: python -m hdkd_lightning.bench.workers {{{','.join(WORKERS)}}} '<json kwargs>'", file=sys.stderr)
        return 2
    print(json.dumps(WORKERS[argv[0]](**json.loads(argv[1]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
