"""The sections of ``hdkd-bench``. Each returns plain data (JSON-ready dicts and lists).

All comparisons inside a section run in one process, interleaved, after warm-up, and report
medians (:func:`hdkd_lightning.bench.timing.interleave`). The step is
:class:`hdkd_lightning.bench.step.DistillStep`. Its baselines: ``original`` = the original
code's *pass pattern* re-implemented on this project's networks (always), and
``original_code`` = the authors' own code (only with ``--original-code <clone>``,
:mod:`hdkd_lightning.bench.original_code`); every baseline must give our loss on the same
weights and batch. Cases that need a process of their own run through
:mod:`hdkd_lightning.bench.workers`.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from hdkd_lightning.bench.flops import count_flops, matmul_case, matmul_flops_per_s
from hdkd_lightning.bench.step import (
    DistillStep,
    LossMismatchError,
    build_models,
    check_losses,
    make_batch,
    native_bf16,
    sync,
)
from hdkd_lightning.bench.timing import interleave, summarize
from hdkd_lightning.distillation import auto_channels_last

__all__ = ["BenchConfig", "LossMismatchError", "run_distill", "run_default_allocator", "run_compile", "run_memory",
           "run_pipeline", "run_profile"]

MATMUL_N = 2048
TIMM_MODELS = ("deit_tiny_distilled_patch16_224", "mobilevit_xs", "efficientformer_l1", "resnet18",
               "mobilenetv3_large_100")


@dataclass
class BenchConfig:
    distill_sizes: Sequence[Tuple[int, int]] = ((224, 16), (64, 64))
    warmup: int = 1
    repeats: int = 3
    default_alloc_repeats: int = 1
    default_alloc_warmup: int = 1
    infer_size: int = 224
    infer_batch: int = 32
    latency_repeats: int = 10
    timm_models: Sequence[str] = TIMM_MODELS
    pipeline_images: int = 200
    pipeline_source: Optional[str] = None
    pipeline_root: Optional[str] = None
    compile_size: Tuple[int, int] = (64, 64)
    compile_timeout_s: int = 900
    matmul_n: int = MATMUL_N
    profile_size: Tuple[int, int] = (224, 4)
    devices: Sequence[str] = ("cpu",)
    original_code: Optional[str] = None  # a clone of the authors' code: time it beside our step
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda msg: None)


def _step_flops(student, teacher, image_size: int, batch: int, pattern: str) -> float:
    """FLOPs of one step per image, counted on a batch of 2 (FLOPs are linear in the batch)."""
    images, labels = make_batch(image_size, 2)
    step = DistillStep(student, teacher, images, labels, pattern=pattern)
    return count_flops(step) / 2.0


def _teacher_flops(teacher, image_size: int) -> float:
    x = torch.randn(1, 3, image_size, image_size)
    with torch.no_grad():
        return float(count_flops(lambda: teacher(x)))


def run_distill(cfg: BenchConfig, with_variants: bool = True, with_bf16: bool = True) -> dict:
    """Distillation step: ours vs the original pattern (same weights, same batch), precision, efficiency, memory."""
    entries, precision, efficiency = [], [], []
    for device in cfg.devices:
        bf16_ok = native_bf16(device)
        for image_size, batch in cfg.distill_sizes:
            cfg.log(f"distill step {image_size} px batch {batch} on {device}")
            teacher, student = build_models(image_size, cfg.seed)
            images, labels = make_batch(image_size, batch, cfg.seed)
            cl = auto_channels_last(torch.device(device).type)
            steps = {
                "original": DistillStep(student, teacher, images, labels, "original", device=device),
                "ours": DistillStep(student, teacher, images, labels, "ours", channels_last=cl, fold_teacher=True,
                                    device=device),
            }
            if with_variants:  # the alternatives the defaults were chosen against
                steps["ours_other_layout"] = DistillStep(student, teacher, images, labels, "ours", channels_last=not cl,
                                                         fold_teacher=True, device=device)
                steps["ours_unfolded_teacher"] = DistillStep(student, teacher, images, labels, "ours", channels_last=cl,
                                                             device=device)
            if cfg.original_code and device == "cpu":
                from hdkd_lightning.bench.original_code import OriginalCodeStep, load_original_code

                steps["original_code"] = OriginalCodeStep(load_original_code(cfg.original_code), teacher, student,
                                                          images, labels)
            losses = check_losses(steps)
            cases: Dict[str, Callable] = dict(steps)
            loss_bf16 = None
            if with_bf16 and bf16_ok:
                steps_bf16 = DistillStep(student, teacher, images, labels, "ours", channels_last=cl,
                                         amp=torch.bfloat16, teacher_dtype=torch.bfloat16, device=device)
                loss_bf16 = steps_bf16.loss_value()
                cases["ours_bf16"] = steps_bf16
            prepared = steps["ours"].teacher
            t_images = steps["ours"].images

            def teacher_fwd(prepared=prepared, t_images=t_images, device=device):
                with torch.no_grad():
                    prepared(t_images)
                sync(device)
            cases["teacher_forward"] = teacher_fwd
            mm, mm_flops = matmul_case(cfg.matmul_n, device=device)
            cases["matmul_fp32"] = mm
            res = {k: summarize(v) for k, v in interleave(cases, cfg.warmup, cfg.repeats, cfg.log).items()}
            img_s = {k: batch / r["wall_s"] for k, r in res.items() if k not in ("matmul_fp32",)}
            mm_rate = mm_flops / res["matmul_fp32"]["wall_s"]
            step_flops = _step_flops(student, teacher, image_size, batch, "ours")
            orig_flops = _step_flops(student, teacher, image_size, batch, "original")
            t_flops = _teacher_flops(teacher, image_size)
            entry = {
                "device": device, "image_size": image_size, "batch_size": batch, "precision": "32-true",
                "ours_img_s": img_s["ours"], "original_pattern_img_s": img_s["original"],
                "speedup": img_s["ours"] / img_s["original"],
                "loss_ours": losses["ours"], "loss_original_pattern": losses["original"],
                "loss_rel_diff": abs(losses["ours"] - losses["original"]) / abs(losses["original"]),
                "ours_config": f"{'channels-last' if cl else 'NCHW'} student + BN-folded fp32 teacher "
                               "(DistillModule's defaults on this device)",
                "original_pattern": "the original code's pass pattern on this project's networks "
                                    "(hdkd_lightning.bench.original)",
                "variants_img_s": {k: v for k, v in img_s.items() if k not in ("ours", "original", "original_code")},
                "gflop_per_img_ours": step_flops / 1e9, "gflop_per_img_original": orig_flops / 1e9,
                "timings": res,
            }
            if "original_code" in steps:
                entry.update(original_code=cfg.original_code, original_code_img_s=img_s["original_code"],
                             speedup_vs_original_code=img_s["ours"] / img_s["original_code"],
                             loss_original_code=losses["original_code"])
            entries.append(entry)
            efficiency.append({
                "device": device, "image_size": image_size, "batch_size": batch,
                "matmul_fp32_gflop_s": mm_rate / 1e9,
                "step_gflop_s": step_flops * img_s["ours"] / 1e9,
                "step_fraction_of_matmul": step_flops * img_s["ours"] / mm_rate,
                "teacher_forward_gflop_s": t_flops * img_s["teacher_forward"] / 1e9,
                "teacher_fraction_of_matmul": t_flops * img_s["teacher_forward"] / mm_rate,
                "teacher_gflop_per_img": t_flops / 1e9,
            })
            prec = {"device": device, "image_size": image_size, "batch_size": batch, "native_bf16": bf16_ok,
                    "fp32_img_s": img_s["ours"], "loss_fp32": losses["ours"]}
            if loss_bf16 is not None:
                prec.update(precision="bf16-mixed (teacher bf16)", bf16_img_s=img_s["ours_bf16"],
                            speedup_vs_fp32=img_s["ours_bf16"] / img_s["ours"], loss_bf16=loss_bf16,
                            loss_abs_diff=abs(loss_bf16 - losses["ours"]),
                            loss_rel_diff=abs(loss_bf16 - losses["ours"]) / abs(losses["ours"]))
                entries.append({"device": device, "image_size": image_size, "batch_size": batch,
                                "precision": "bf16-mixed", "ours_img_s": img_s["ours_bf16"],
                                "original_pattern_img_s": img_s["original"],
                                "speedup": img_s["ours_bf16"] / img_s["original"]})
            elif with_bf16:
                prec.update(precision="bf16-mixed", skipped="no native bf16 on this device: emulated bf16 "
                            f"runs at {matmul_flops_per_s(256, torch.bfloat16, 2, device) / 1e9:.2f} GFLOP/s "
                            f"(fp32 {mm_rate / 1e9:.1f})")
                prec.update(_bf16_loss_only(student, teacher, image_size, device, cfg.seed))
            precision.append(prec)
    return {"distill_step": entries, "precision": precision, "efficiency": efficiency}


def _bf16_loss_only(student, teacher, image_size: int, device: str, seed: int) -> dict:
    """Loss difference of bf16-mixed vs fp32 on a small batch (accuracy only, where bf16 is emulated).

    Emulated bf16 is ~100x slower than fp32, so this runs at 64 px at most, batch 2.
    """
    if image_size > 64:
        image_size = 64
        teacher, student = build_models(image_size, seed)
    images, labels = make_batch(image_size, 2, seed)
    fp32 = DistillStep(student, teacher, images, labels, "ours", device=device).loss_value()
    bf16 = DistillStep(student, teacher, images, labels, "ours", amp=torch.bfloat16, teacher_dtype=torch.bfloat16,
                       device=device).loss_value()
    return {"loss_check_batch": 2, "loss_check_image_size": image_size, "loss_fp32_small_batch": fp32,
            "loss_bf16_small_batch": bf16, "loss_rel_diff": abs(bf16 - fp32) / abs(fp32)}


# ---------------------------------------------------------------------------------------------
# default glibc allocator, in a subprocess (the tuning is process-wide and cannot be undone)

def run_default_allocator(cfg: BenchConfig, image_size: int, batch: int, tuned_ours_img_s: Optional[float],
                          timeout_s: int = 1800) -> dict:
    """The original pattern and our step with ``HDKD_MALLOC_TUNE=0`` (what a user of the original code gets)."""
    from hdkd_lightning.bench.workers import run_worker

    cfg.log(f"default allocator (subprocess, HDKD_MALLOC_TUNE=0) {image_size} px batch {batch}")
    out = run_worker("default-alloc", {"image_size": image_size, "batch": batch, "warmup": cfg.default_alloc_warmup,
                                       "repeats": cfg.default_alloc_repeats, "seed": cfg.seed},
                     dict(os.environ, HDKD_MALLOC_TUNE="0"), timeout_s)
    if "error" in out:
        return out
    if tuned_ours_img_s:
        out["ours_tuned_img_s"] = tuned_ours_img_s
        out["ours_tuned_vs_original_default"] = tuned_ours_img_s / out["original_pattern_img_s"]
    return out


# ---------------------------------------------------------------------------------------------
# memory: one process per pattern, because a tuned allocator keeps the heap's high-water mark
# (several cases measured in one process would all report the largest one's peak)

def run_memory(cfg: BenchConfig, image_size: int, batch: int, timeout_s: int = 1800) -> List[dict]:
    """Peak memory of one distillation step of each pattern, each in a fresh process."""
    from hdkd_lightning.bench.workers import run_worker

    rows = []
    for device in cfg.devices:
        for pattern in ("ours", "original"):
            cfg.log(f"memory of the {pattern} step, {image_size} px batch {batch} on {device} (subprocess)")
            out = run_worker("memory", {"image_size": image_size, "batch": batch, "pattern": pattern,
                                        "seed": cfg.seed, "device": device}, timeout_s=timeout_s)
            rows.append(dict(out, pattern=pattern, device=device, image_size=image_size, batch_size=batch))
    return rows


# ---------------------------------------------------------------------------------------------
# torch.compile, in a subprocess with a time limit (compilation on 2 cores can take minutes)

def run_compile(cfg: BenchConfig) -> dict:
    from hdkd_lightning.bench.workers import run_worker

    image_size, batch = cfg.compile_size
    cfg.log(f"torch.compile of the student step, {image_size} px batch {batch} (subprocess)")
    return run_worker("compile", {"image_size": image_size, "batch": batch, "warmup": cfg.warmup,
                                  "repeats": cfg.repeats, "seed": cfg.seed}, timeout_s=cfg.compile_timeout_s)


# ---------------------------------------------------------------------------------------------
# input pipeline

def run_pipeline(cfg: BenchConfig, step_img_s: Optional[float], image_size: int = 64) -> dict:
    """Images/s of decode+augment vs cache+augment, one worker (one core), vs the step's consumption."""
    try:
        from hdkd_lightning.data.throughput import measure
    except ImportError as exc:
        return {"status": "unavailable", "reason": f"hdkd_lightning.data.throughput: {exc}"}
    # synthetic images unless a dataset is given (--data-source / --data-root)
    source, root = (cfg.pipeline_source, cfg.pipeline_root) if cfg.pipeline_source else ("synthetic", None)
    kwargs = dict(source=source, root=root, image_size=image_size, n_images=cfg.pipeline_images, num_workers=0)
    accepted = inspect.signature(measure).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    cfg.log(f"input pipeline: {source} at {image_size} px, {cfg.pipeline_images} images, per worker")
    try:
        out = dict(measure(**kwargs))
    except Exception as exc:  # noqa: BLE001  (missing data etc. is reported in the table)
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", **kwargs}
    out["status"] = "ok"
    if step_img_s:
        out["step_img_s"] = step_img_s
        for key in ("cache_train_images_per_s", "decode_train_images_per_s"):
            if key in out:
                out[key.replace("_images_per_s", "_vs_step")] = out[key] / step_img_s
    return out


# ---------------------------------------------------------------------------------------------
# profile: where the step's time goes

def run_profile(cfg: BenchConfig, image_size: int, batch: int, row_limit: int = 15) -> dict:
    """torch.profiler table (self CPU time) of our fp32 step and of a teacher forward."""
    from torch.profiler import ProfilerActivity, profile

    teacher, student = build_models(image_size, cfg.seed)
    images, labels = make_batch(image_size, batch, cfg.seed)
    step = DistillStep(student, teacher, images, labels, "ours", fold_teacher=True)
    step()  # warm-up
    cfg.log(f"profile of the fp32 step, {image_size} px batch {batch}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    avg = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in avg)
    top = sorted(avg, key=lambda e: e.self_cpu_time_total, reverse=True)[:row_limit]
    rows = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
             "calls": e.count, "gflop": (e.flops or 0) / 1e9} for e in top]
    groups: Dict[str, float] = {}
    for e in avg:  # coarse classes of work
        k = e.key
        if "convolution" in k and "backward" in k or k in ("aten::mkldnn_convolution", "aten::_convolution"):
            cls = "convolution"
        elif k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
                   "aten::_scaled_dot_product_flash_attention_for_cpu_backward"):
            cls = "matmul/attention"
        elif "_foreach" in k or "adamw" in k.lower() or "lerp" in k:
            cls = "optimizer"
        elif "batch_norm" in k or "layer_norm" in k:
            cls = "normalisation"
        else:
            cls = "element-wise/other"
        groups[cls] = groups.get(cls, 0.0) + e.self_cpu_time_total / total
    table = avg.table(sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=48)
    return {"image_size": image_size, "batch_size": batch, "top_ops": rows, "share_by_class": groups, "table": table}
