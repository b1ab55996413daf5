"""The sections of ``hdkd-bench``. Each returns plain data (JSON-ready dicts and lists).

All comparisons inside a section run in one process, interleaved, after warm-up, and report
medians (:func:`hdkd_lightning.bench.timing.interleave`). The distillation step is exactly
:func:`hdkd_lightning.distillation.distill_forward` (what ``DistillModule`` runs) followed by
``backward``, an AdamW step (the original's optimizer settings) and ``zero_grad``.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from hdkd_lightning.bench.flops import count_flops, matmul_flops_per_s
from hdkd_lightning.bench.original import original_pattern_forward
from hdkd_lightning.bench.timing import interleave, summarize
from hdkd_lightning.deploy import deploy_student, prepare_teacher
from hdkd_lightning.distillation import auto_channels_last, distill_forward
from hdkd_lightning.losses import HdkdLoss

__all__ = ["BenchConfig", "LossMismatchError", "native_bf16", "run_distill", "run_default_allocator",
           "run_compile", "run_memory", "run_inference", "run_pipeline", "run_profile", "build_models", "make_batch",
           "check_losses", "deploy_tolerance", "DistillStep"]

NUM_CLASSES = 7
MATMUL_N = 2048
LOSS_RTOL = 1e-4  # fp32: single pass vs original pattern, folded channels-last teacher included
TIMM_MODELS = ("deit_tiny_distilled_patch16_224", "mobilevit_xs", "efficientformer_l1", "resnet18",
               "mobilenetv3_large_100")


class LossMismatchError(AssertionError):
    """This project's step and the original pattern disagree on the loss of the same batch."""


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
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda msg: None)


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 matmuls/convolutions run on native instructions (else they are emulated, ~100x slower)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_models(image_size: int, seed: int = 0, num_classes: int = NUM_CLASSES) -> Tuple[nn.Module, nn.Module]:
    """A frozen eval teacher (with non-trivial BatchNorm statistics) and a fresh HDKD student."""
    import timm

    import hdkd_lightning  # noqa: F401  (registers the models)

    torch.manual_seed(seed)
    teacher = timm.create_model("hdkd_teacher", num_classes=num_classes, img_size=image_size)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained teacher has non-identity BatchNorm; make the folds do something
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
    teacher.eval().requires_grad_(False)
    student = timm.create_model("hdkd_student_distilled", num_classes=num_classes, img_size=image_size)
    return teacher, student.train()


def make_batch(image_size: int, batch_size: int, seed: int = 0, num_classes: int = NUM_CLASSES):
    gen = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
    labels = torch.randint(0, num_classes, (batch_size,), generator=gen)
    return images, labels


class DistillStep:
    """One training step on its own copy of the student and optimizer.

    ``pattern``: ``"ours"`` (:func:`distill_forward`) or ``"original"`` (the authors' pattern).
    ``channels_last`` applies to the student and the images; ``fold_teacher`` uses
    :func:`prepare_teacher`; ``amp`` runs the student under autocast in that dtype and
    ``teacher_dtype`` puts the prepared teacher (and its images) in that dtype.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 pattern: str = "ours", channels_last: bool = False, fold_teacher: bool = False,
                 amp: Optional[torch.dtype] = None, teacher_dtype: Optional[torch.dtype] = None,
                 device: str = "cpu", compile_student: bool = False) -> None:
        if pattern not in ("ours", "original"):
            raise ValueError(f"pattern must be 'ours' or 'original', got {pattern!r}")
        self.pattern, self.amp, self.device = pattern, amp, device
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.student = copy.deepcopy(student).to(device=device, memory_format=fmt).train()
        if fold_teacher or teacher_dtype is not None:
            self.teacher = prepare_teacher(teacher, channels_last=channels_last, dtype=teacher_dtype).to(device)
        else:
            self.teacher = teacher.to(device)
        self.images = images.to(device).contiguous(memory_format=fmt)
        self.teacher_images = None if teacher_dtype is None else self.images.to(teacher_dtype)
        self.labels = labels.to(device)
        self.loss_fn = HdkdLoss()
        self.model = torch.compile(self.student) if compile_student else self.student
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=5e-5, weight_decay=0.05, eps=1e-8)

    def forward(self) -> Tuple[torch.Tensor, dict]:
        with torch.autocast(self.device.split(":")[0], dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            if self.pattern == "ours":
                loss, parts, _ = distill_forward(self.model, self.teacher, self.loss_fn, self.images, self.labels,
                                                 self.teacher_images)
            else:
                loss, parts = original_pattern_forward(self.model, self.teacher, self.loss_fn, self.images,
                                                       self.labels)
        return loss, parts

    def __call__(self) -> torch.Tensor:
        loss, _ = self.forward()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        _sync(self.device)
        return loss.detach()  # no .item(): no host-device synchronisation in the step itself

    def loss_value(self) -> float:
        """Loss of the batch without changing the step's state (on a copy of the student)."""
        saved = copy.deepcopy(self.student.state_dict())
        with torch.no_grad():
            loss, _ = self.forward()
        self.student.load_state_dict(saved)  # BatchNorm running statistics moved; put them back
        return float(loss)


def _matmul_case(device: str, n: int = MATMUL_N, reps: int = 3):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)

    def run():
        for _ in range(reps):
            a @ b
        _sync(device)
    return run, 2.0 * n ** 3 * reps


def _step_flops(student, teacher, image_size: int, batch: int, pattern: str) -> float:
    """FLOPs of one step per image, counted on a batch of 2 (FLOPs are linear in the batch)."""
    images, labels = make_batch(image_size, 2)
    step = DistillStep(student, teacher, images, labels, pattern=pattern)
    return count_flops(step) / 2.0


def _teacher_flops(teacher, image_size: int) -> float:
    x = torch.randn(1, 3, image_size, image_size)
    with torch.no_grad():
        return float(count_flops(lambda: teacher(x)))


def check_losses(steps: Dict[str, DistillStep], reference: str = "original", rtol: float = LOSS_RTOL) -> Dict[str, float]:
    """Loss of every fp32 step on its batch; raises :class:`LossMismatchError` when any differs."""
    values = {name: step.loss_value() for name, step in steps.items()}
    ref = values[reference]
    for name, value in values.items():
        if abs(value - ref) > rtol * max(abs(ref), 1e-12):
            raise LossMismatchError(f"loss of '{name}' ({value!r}) differs from '{reference}' ({ref!r}) "
                                    f"by more than rtol={rtol}")
    return values


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
                _sync(device)
            cases["teacher_forward"] = teacher_fwd
            mm, mm_flops = _matmul_case(device, cfg.matmul_n)
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
                "variants_img_s": {k: v for k, v in img_s.items() if k not in ("ours", "original")},
                "gflop_per_img_ours": step_flops / 1e9, "gflop_per_img_original": orig_flops / 1e9,
                "timings": res,
            }
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
    return {"loss_check_batch": 2, "loss_check_image_size": image_size, "loss_fp32_small_batch": fp32, "loss_bf16_small_batch": bf16,
            "loss_rel_diff": abs(bf16 - fp32) / abs(fp32)}


# ---------------------------------------------------------------------------------------------
# default glibc allocator, in a subprocess (the tuning is process-wide and cannot be undone)

def run_default_allocator(cfg: BenchConfig, image_size: int, batch: int, tuned_ours_img_s: Optional[float],
                          timeout_s: int = 1800) -> dict:
    """The original pattern and our step with ``HDKD_MALLOC_TUNE=0`` (what a user of the original code gets)."""
    env = dict(os.environ, HDKD_MALLOC_TUNE="0")
    args = [sys.executable, "-m", "hdkd_lightning.cli.bench", "--worker", "default-alloc",
            "--worker-args", json.dumps({"image_size": image_size, "batch": batch, "warmup": cfg.default_alloc_warmup,
                                         "repeats": cfg.default_alloc_repeats, "seed": cfg.seed})]
    cfg.log(f"default allocator (subprocess, HDKD_MALLOC_TUNE=0) {image_size} px batch {batch}")
    out = _run_worker(args, env, timeout_s)
    if "error" in out:
        return out
    if tuned_ours_img_s:
        out["ours_tuned_img_s"] = tuned_ours_img_s
        out["ours_tuned_vs_original_default"] = tuned_ours_img_s / out["original_pattern_img_s"]
    return out


def _run_worker(args: List[str], env: dict, timeout_s: int) -> dict:
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"worker failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}"}


def _worker_inputs(image_size: int, batch: int, seed: int):
    """What every bench subprocess starts with: the allocator setting, the models and one batch."""
    from hdkd_lightning._runtime import configure_allocator

    state = configure_allocator()
    return (state,) + build_models(image_size, seed) + make_batch(image_size, batch, seed)


def worker_default_alloc(image_size: int, batch: int, warmup: int, repeats: int, seed: int) -> dict:
    state, teacher, student, images, labels = _worker_inputs(image_size, batch, seed)
    steps = {"original": DistillStep(student, teacher, images, labels, "original"),
             "ours": DistillStep(student, teacher, images, labels, "ours", fold_teacher=True)}
    res = {k: summarize(v) for k, v in interleave(steps, warmup, repeats).items()}
    return {"allocator": state, "image_size": image_size, "batch_size": batch, "warmup": warmup, "repeats": repeats,
            "original_pattern_img_s": batch / res["original"]["wall_s"], "ours_img_s": batch / res["ours"]["wall_s"],
            "timings": res}


# ---------------------------------------------------------------------------------------------
# memory: one process per pattern, because a tuned allocator keeps the heap's high-water mark
# (several cases measured in one process would all report the largest one's peak)

def run_memory(cfg: BenchConfig, image_size: int, batch: int, timeout_s: int = 1800) -> List[dict]:
    """Peak memory of one distillation step of each pattern, each in a fresh process."""
    rows = []
    for device in cfg.devices:
        for pattern in ("ours", "original"):
            cfg.log(f"memory of the {pattern} step, {image_size} px batch {batch} on {device} (subprocess)")
            args = [sys.executable, "-m", "hdkd_lightning.cli.bench", "--worker", "memory",
                    "--worker-args", json.dumps({"image_size": image_size, "batch": batch, "pattern": pattern,
                                                 "seed": cfg.seed, "device": device})]
            rows.append(dict(_run_worker(args, dict(os.environ), timeout_s), pattern=pattern, device=device,
                             image_size=image_size, batch_size=batch))
    return rows


def worker_memory(image_size: int, batch: int, pattern: str, seed: int, device: str = "cpu") -> dict:
    from hdkd_lightning.bench.timing import peak_rss_mb, rss_mb

    _, teacher, student, images, labels = _worker_inputs(image_size, batch, seed)
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


# ---------------------------------------------------------------------------------------------
# torch.compile, in a subprocess with a time limit (compilation on 2 cores can take minutes)

def run_compile(cfg: BenchConfig) -> dict:
    image_size, batch = cfg.compile_size
    args = [sys.executable, "-m", "hdkd_lightning.cli.bench", "--worker", "compile",
            "--worker-args", json.dumps({"image_size": image_size, "batch": batch, "warmup": cfg.warmup,
                                         "repeats": cfg.repeats, "seed": cfg.seed})]
    cfg.log(f"torch.compile of the student step, {image_size} px batch {batch} (subprocess)")
    return _run_worker(args, dict(os.environ), cfg.compile_timeout_s)


def worker_compile(image_size: int, batch: int, warmup: int, repeats: int, seed: int) -> dict:
    _, teacher, student, images, labels = _worker_inputs(image_size, batch, seed)
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


# ---------------------------------------------------------------------------------------------
# inference

def _inference_models(cfg: BenchConfig) -> Dict[str, Tuple[nn.Module, nn.Module]]:
    """name -> (model as trained / built, model as run)."""
    import timm

    import hdkd_lightning  # noqa: F401

    size = cfg.infer_size
    torch.manual_seed(cfg.seed)
    teacher, _ = build_models(size, cfg.seed)
    out: Dict[str, Tuple[nn.Module, nn.Module]] = {}
    out["hdkd_teacher (deployed)"] = (teacher, deploy_student(teacher))
    student = timm.create_model("hdkd_student", num_classes=NUM_CLASSES, img_size=size).eval()
    out["hdkd_student (deployed)"] = (student, deploy_student(student))
    hdkd = timm.create_model("hdkd_student_distilled", num_classes=NUM_CLASSES, img_size=size).eval()
    out["hdkd (deployed)"] = (hdkd, deploy_student(hdkd))
    out["hdkd (deployed, NCHW)"] = (hdkd, deploy_student(hdkd, channels_last=False))
    out["hdkd (eager, NCHW)"] = (hdkd, hdkd)
    for name in cfg.timm_models:
        kwargs = {"img_size": size} if name.startswith(("deit", "efficientformer")) and size != 224 else {}
        try:
            m = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs).eval()
        except Exception as exc:  # noqa: BLE001  (a model that cannot run at this size is reported, not fatal)
            cfg.log(f"  {name}: {exc}")
            continue
        out[name] = (m, m.to(memory_format=torch.channels_last))
    return out


def run_inference(cfg: BenchConfig) -> List[dict]:
    models = _inference_models(cfg)
    size, batch = cfg.infer_size, cfg.infer_batch
    rows = {}
    x1 = torch.randn(1, 3, size, size)
    xb = torch.randn(batch, 3, size, size)

    def caller(model, x):
        # each model gets its input in the layout its weights are in
        weight = next((p for p in model.parameters() if p.dim() == 4), None)
        if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            x = x.contiguous(memory_format=torch.channels_last)

        def run():
            with torch.inference_mode():
                model(x)
        return run
    for name, (built, run_model) in models.items():
        with torch.no_grad():
            gflops = count_flops(lambda: built(x1)) / 1e9
        rows[name] = {"model": name, "params_m": sum(p.numel() for p in built.parameters()) / 1e6,
                      "gmacs": gflops / 2}
    cfg.log(f"inference: batch-1 latency, {len(models)} models, {cfg.latency_repeats} interleaved repeats")
    lat = interleave({n: caller(m, x1) for n, (_, m) in models.items()}, cfg.warmup + 1, cfg.latency_repeats)
    cfg.log(f"inference: batch-{batch} throughput")
    thr = interleave({n: caller(m, xb) for n, (_, m) in models.items()}, cfg.warmup, cfg.repeats, cfg.log)
    for name in models:
        rows[name]["latency_b1_ms"] = summarize(lat[name])["wall_s"] * 1e3
        rows[name][f"throughput_b{batch}_img_s"] = batch / summarize(thr[name])["wall_s"]
        rows[name]["image_size"] = size
    return list(rows.values())


def deploy_tolerance(image_size: int = 64, seed: int = 0) -> dict:
    """Largest deviation of the deployed HDKD (fp32 and bf16) from the model as trained."""
    _, student = build_models(image_size, seed)
    model = student.eval()
    x = make_batch(image_size, 4, seed)[0]
    with torch.no_grad():
        ref = model(x)
        fp32 = deploy_student(model)(x.contiguous(memory_format=torch.channels_last))
        out = {"max_abs_diff_fp32": float((ref - fp32).abs().max()), "logit_scale": float(ref.abs().max())}
        if native_bf16():
            bf = deploy_student(model, dtype=torch.bfloat16)(x.to(torch.bfloat16).contiguous(
                memory_format=torch.channels_last)).float()
            out["max_abs_diff_bf16"] = float((ref - bf).abs().max())
    return out


# ---------------------------------------------------------------------------------------------
# input pipeline

def default_pipeline_source() -> Tuple[str, Optional[str]]:
    here = os.path.dirname(os.path.abspath(__file__))
    for base in (os.getcwd(), os.path.join(here, "..", "..", "..")):
        root = os.path.normpath(os.path.join(base, "..", "shared", "datasets", "ham10000"))
        if os.path.isdir(root):
            return "ham10000", root
    return "synthetic", None


def run_pipeline(cfg: BenchConfig, step_img_s: Optional[float], image_size: int = 64) -> dict:
    """Images/s of decode+augment vs cache+augment, one worker (one core), vs the step's consumption."""
    try:
        from hdkd_lightning.data.throughput import measure
    except ImportError as exc:
        return {"status": "unavailable", "reason": f"hdkd_lightning.data.throughput: {exc}"}
    source, root = (cfg.pipeline_source, cfg.pipeline_root) if cfg.pipeline_source else default_pipeline_source()
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
