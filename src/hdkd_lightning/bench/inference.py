"""The ``inference`` section of ``hdkd-bench``: batch-1 latency (median, p95) and batch throughput of the
deployed (BatchNorm-folded) HDKD networks beside timm models of similar size, in PyTorch fp32 and,
in a process of their own, through ONNX Runtime fp32 and int8; and how far the deployed network
deviates from the network as trained (:func:`deploy_tolerance`)."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from hdkd_lightning.bench.flops import count_flops
from hdkd_lightning.bench.step import NUM_CLASSES, build_models, make_batch, native_bf16
from hdkd_lightning.bench.suite import BenchConfig
from hdkd_lightning.bench.timing import interleave, latency_row
from hdkd_lightning.deploy import deploy_student

__all__ = ["run_inference", "deploy_tolerance", "export_parity", "ONNX_MODELS"]


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
            with torch.no_grad():  # some build at any size but run only at their own (efficientformer's biases)
                m(torch.zeros(1, 3, size, size))
        except Exception as exc:  # noqa: BLE001  (a model that cannot run at this size is reported, not fatal)
            cfg.log(f"  {name} left out at {size} px: {type(exc).__name__}: {str(exc)[:200]}")
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
    for name, (built, _) in models.items():
        with torch.no_grad():
            gflops = count_flops(lambda built=built: built(x1)) / 1e9
        rows[name] = {"model": name, "params_m": sum(p.numel() for p in built.parameters()) / 1e6,
                      "gmacs": gflops / 2}
    cfg.log(f"inference: batch-1 latency, {len(models)} models, {cfg.latency_repeats} interleaved repeats")
    lat = interleave({n: caller(m, x1) for n, (_, m) in models.items()}, cfg.warmup + 1, cfg.latency_repeats)
    cfg.log(f"inference: batch-{batch} throughput")
    thr = interleave({n: caller(m, xb) for n, (_, m) in models.items()}, cfg.warmup, cfg.repeats, cfg.log)
    for name in models:
        rows[name].update(latency_row(lat[name], thr[name], batch), image_size=size, runtime="PyTorch fp32")
    rows.update(_onnxruntime_rows(cfg, cfg.timm_models))
    return list(rows.values())


ONNX_MODELS = ("hdkd_student_distilled", "deit_tiny_distilled_patch16_224")


def _onnxruntime_rows(cfg: BenchConfig, timm_models: Sequence[str]) -> Dict[str, dict]:
    """HDKD and deit-tiny through ONNX Runtime, fp32 and int8 (same exporter, same thread count), in a
    process of their own: ONNX Runtime's threads measured beside PyTorch's spinning OpenMP threads
    in one process ran 2-3x slower than alone."""
    from hdkd_lightning.bench.workers import run_worker

    models = [m for m in ONNX_MODELS if m.startswith("hdkd") or m in timm_models]
    cfg.log(f"inference: onnxruntime fp32 and int8 of {', '.join(models)} (subprocess)")
    out = run_worker("onnxruntime", {"image_size": cfg.infer_size, "batch": cfg.infer_batch, "models": models,
                                     "threads": torch.get_num_threads(), "warmup": cfg.warmup,
                                     "latency_repeats": cfg.latency_repeats, "repeats": cfg.repeats,
                                     "seed": cfg.seed})
    if "error" in out:  # kept in the results (and shown as a row), not dropped
        cfg.log(f"  onnxruntime: {out['error'][-300:]}")
        return {"onnxruntime": {"model": "onnxruntime (failed)", "params_m": None, "gmacs": None,
                                "latency_b1_ms": None, "latency_b1_p95_ms": None,
                                f"throughput_b{cfg.infer_batch}_img_s": None, "error": out["error"][-2000:]}}
    return {row["model"]: row for row in out["rows"]}


def deploy_tolerance(image_size: int = 64, seed: int = 0) -> dict:
    """Largest deviation of the deployed HDKD (fp32 and bf16) from the model as trained."""
    from hdkd_lightning.deploy.export import max_logit_diff

    _, student = build_models(image_size, seed)
    model = student.eval()
    x = make_batch(image_size, 4, seed)[0]
    with torch.no_grad():
        ref = model(x)
        fp32 = deploy_student(model)(x.contiguous(memory_format=torch.channels_last))
        out = {"max_abs_diff_fp32": max_logit_diff(fp32, ref), "logit_scale": float(ref.abs().max())}
        if native_bf16():
            bf = deploy_student(model, dtype=torch.bfloat16)(x.to(torch.bfloat16).contiguous(
                memory_format=torch.channels_last)).float()
            out["max_abs_diff_bf16"] = max_logit_diff(bf, ref)
    return out


def export_parity(image_size: int = 64, seed: int = 0, images: int = 8) -> List[dict]:
    """Largest |logit difference| of each HDKD network's ONNX and pt2 exports (the exporter of
    ``hdkd-export``) against the network as trained, on random inputs of a batch size other than
    the traced one (so the dynamic batch axis is exercised)."""
    import tempfile

    import timm

    import hdkd_lightning  # noqa: F401  (registers the networks)
    from hdkd_lightning.deploy.export import exported_program, max_logit_diff, run_onnx, write_onnx

    torch.manual_seed(seed)
    x = torch.randn(images, 3, image_size, image_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hdkd-bench-parity-") as work:
        for name in ("hdkd_teacher", "hdkd_student", "hdkd_student_distilled"):
            net = timm.create_model(name, num_classes=NUM_CLASSES, img_size=image_size).eval()
            with torch.no_grad():
                ref = net(x)
                program = exported_program(net, x[:2])
                pt2 = program.module()(x)
            write_onnx(program, f"{work}/{name}.onnx")
            rows.append({"model": name, "image_size": image_size, "images": images,
                         "onnx_max_abs_logit_diff": max_logit_diff(run_onnx(f"{work}/{name}.onnx", x), ref),
                         "pt2_max_abs_logit_diff": max_logit_diff(pt2, ref)})
    return rows
