"""``hdkd-bench``: speed, efficiency and memory of HDKD training and inference on this machine.

    hdkd-bench --quick                  # a few minutes on 2 CPU cores
    hdkd-bench                          # full run (more repeats, torch.compile, all sections)
    hdkd-bench --only distill,inference --json out.json
    hdkd-bench --skip default-alloc,compile

Sections: ``distill`` (this project's distillation step vs the original code's computation
pattern on the same weights and batch, with a loss-equality assertion; bf16-mixed; FLOP/s vs
a large matmul; peak RSS and user/system CPU time), ``default-alloc`` (the same steps with the
glibc allocator tuning switched off, in a subprocess), ``memory`` (peak RSS, and peak GPU
memory where used, of one step of each pattern, each in its own process), ``compile``
(torch.compile), ``inference`` (deployed HDKD vs timm models of similar size), ``pipeline``
(JPEG decode + augment vs the cache, per worker), ``profile`` (where the step's time goes).
Every comparison is interleaved and reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import List, Optional

SECTIONS = ("distill", "default-alloc", "memory", "compile", "inference", "pipeline", "profile")


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hdkd-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run: fewer repeats, no torch.compile")
    p.add_argument("--json", default="bench.json", help="where to write the results (default: ./bench.json)")
    p.add_argument("--only", default=None, help=f"comma-separated sections to run, from {','.join(SECTIONS)}")
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    for s in SECTIONS:
        p.add_argument(f"--skip-{s}", action="store_true", help=f"skip the {s} section")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per case")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--data-source", default=None, help="pipeline section: data source (default: HAM10000 in "
                                                           "../shared/datasets if present, else synthetic)")
    p.add_argument("--data-root", default=None, help="pipeline section: dataset root")
    p.add_argument("--no-gpu", action="store_true", help="CPU only even when a GPU is present")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: 32 px, batch 2
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _sections(args: argparse.Namespace) -> List[str]:
    chosen = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    skip |= {s for s in SECTIONS if getattr(args, f"skip_{s.replace('-', '_')}")}
    unknown = (set(chosen) | skip) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"hdkd-bench: unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.quick and not args.only:
        skip |= {"compile", "profile"}
    return [s for s in chosen if s not in skip]


def _machine() -> dict:
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


def _config(args: argparse.Namespace, log):
    import torch

    from hdkd_lightning.bench.suite import BenchConfig

    cfg = BenchConfig(log=log)
    if args.quick:
        cfg.repeats, cfg.warmup, cfg.latency_repeats, cfg.pipeline_images = 2, 1, 7, 100
        cfg.default_alloc_warmup, cfg.default_alloc_repeats = 0, 1
    else:
        cfg.repeats, cfg.warmup, cfg.latency_repeats, cfg.pipeline_images = 5, 1, 15, 300
        cfg.default_alloc_warmup, cfg.default_alloc_repeats = 1, 2
    if args.tiny:
        cfg.distill_sizes, cfg.repeats, cfg.warmup = ((32, 2),), 1, 0
        cfg.infer_size, cfg.infer_batch, cfg.latency_repeats = 32, 2, 1
        cfg.timm_models, cfg.compile_size, cfg.pipeline_images = ("resnet18",), (32, 2), 8
        cfg.default_alloc_warmup, cfg.default_alloc_repeats = 0, 1
        cfg.matmul_n, cfg.profile_size = 512, (32, 2)
    if args.repeats:
        cfg.repeats = args.repeats
    if args.warmup is not None:
        cfg.warmup = args.warmup
    cfg.pipeline_source, cfg.pipeline_root = args.data_source, args.data_root
    if torch.cuda.is_available() and not args.no_gpu:
        cfg.devices = ("cpu", "cuda")
    return cfg


def _fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def print_report(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 150)
    m = res["machine"]
    con.print(f"[bold]hdkd-bench[/] on {m['cpu']} ({m['logical_cpus']} logical CPUs, torch {m['torch']}, "
              f"{m['torch_threads']} threads, ISA {' '.join(m['cpu_isa'])}); allocator: "
              f"{res['allocator'].get('reason')}")
    if res.get("distill_step"):
        t = Table(title="Distillation step (img/s; teacher fwd + student fwd/bwd + loss + AdamW)")
        for c in ("device", "px", "batch", "precision", "ours", "original pattern", "ratio", "loss ours",
                  "loss original", "peak RSS MB", "user s", "sys s"):
            t.add_column(c)
        for e in res["distill_step"]:
            tm = e.get("timings", {}).get("ours", {})
            t.add_row(e["device"], str(e["image_size"]), str(e["batch_size"]), e["precision"],
                      _fmt(e["ours_img_s"], 2), _fmt(e["original_pattern_img_s"], 2), _fmt(e["speedup"], 2) + "x",
                      _fmt(e.get("loss_ours"), 6), _fmt(e.get("loss_original_pattern"), 6),
                      _fmt(tm.get("peak_rss_mb"), 0), _fmt(tm.get("user_s"), 2), _fmt(tm.get("sys_s"), 2))
        con.print(t)
        t = Table(title="Step variants and memory (median wall s per step; peak RSS MB; user/sys CPU s)")
        for c in ("px", "case", "img/s", "wall s", "user s", "sys s", "peak RSS MB"):
            t.add_column(c)
        for e in res["distill_step"]:
            for name, tm in e.get("timings", {}).items():
                ips = "-" if name == "matmul_fp32" else _fmt(e["batch_size"] / tm["wall_s"], 2)
                t.add_row(str(e["image_size"]), name, ips, _fmt(tm["wall_s"], 2), _fmt(tm["user_s"], 2),
                          _fmt(tm["sys_s"], 2), _fmt(tm["peak_rss_mb"], 0))
        con.print(t)
    if res.get("efficiency"):
        t = Table(title="Hardware efficiency (FLOPs from torch.utils.flop_counter)")
        for c in ("device", "px", "batch", "matmul GFLOP/s", "step GFLOP/s", "step / matmul", "teacher GFLOP/s",
                  "teacher / matmul", "step GFLOP/img"):
            t.add_column(c)
        de = {(e["device"], e["image_size"]): e for e in res.get("distill_step", []) if e["precision"] == "32-true"}
        for e in res["efficiency"]:
            t.add_row(e["device"], str(e["image_size"]), str(e["batch_size"]), _fmt(e["matmul_fp32_gflop_s"]),
                      _fmt(e["step_gflop_s"]), f"{e['step_fraction_of_matmul']:.0%}", _fmt(e["teacher_forward_gflop_s"]),
                      f"{e['teacher_fraction_of_matmul']:.0%}",
                      _fmt(de.get((e["device"], e["image_size"]), {}).get("gflop_per_img_ours"), 2))
        con.print(t)
    if res.get("precision"):
        t = Table(title="Precision")
        for c in ("device", "px", "native bf16", "fp32 img/s", "bf16 img/s", "bf16/fp32", "loss rel diff", "note"):
            t.add_column(c)
        for e in res["precision"]:
            t.add_row(e["device"], str(e["image_size"]), str(e["native_bf16"]), _fmt(e["fp32_img_s"], 2),
                      _fmt(e.get("bf16_img_s"), 2), _fmt(e.get("speedup_vs_fp32"), 2),
                      f"{e['loss_rel_diff']:.2e}" if "loss_rel_diff" in e else "-", e.get("skipped", ""))
        con.print(t)
    da = res.get("default_allocator")
    if da:
        if "error" in da:
            con.print(f"[red]default allocator: {da['error']}[/]")
        else:
            tm = da["timings"]
            con.print(f"[bold]Default glibc allocator[/] ({da['image_size']} px, batch {da['batch_size']}, subprocess "
                      f"HDKD_MALLOC_TUNE=0): original pattern {da['original_pattern_img_s']:.3f} img/s "
                      f"(user {tm['original']['user_s']:.1f} s, sys {tm['original']['sys_s']:.1f} s per step), ours "
                      f"{da['ours_img_s']:.2f} img/s (sys {tm['ours']['sys_s']:.1f} s); ours with the tuned allocator: "
                      f"{_fmt(da.get('ours_tuned_img_s'), 2)} img/s = "
                      f"{_fmt(da.get('ours_tuned_vs_original_default'), 1)}x the original under the default allocator")
    for row in res.get("memory") or []:
        if "error" in row:
            con.print(f"[red]memory ({row['pattern']}): {row['error']}[/]")
            continue
        gpu = f", GPU max allocated {row['gpu_max_allocated_mb']:.0f} MB" if "gpu_max_allocated_mb" in row else ""
        con.print(f"[bold]Memory[/] of the {row['pattern']} step ({row['image_size']} px, batch {row['batch_size']}, "
                  f"{row['device']}, own process): peak RSS {row['peak_rss_mb']:.0f} MB (after building the models: "
                  f"{row['rss_before_step_mb']:.0f} MB){gpu}")
    comp = res.get("compile")
    if comp:
        if "error" in comp:
            con.print(f"[yellow]torch.compile: {comp['error'][-400:]}[/]")
        else:
            con.print(f"[bold]torch.compile[/] ({comp['image_size']} px, batch {comp['batch_size']}): first step "
                      f"{comp['first_step_s (compile)']:.0f} s; eager {comp['eager_img_s']:.2f} img/s, compiled "
                      f"{comp['compiled_img_s']:.2f} img/s ({comp['speedup']:.2f}x), loss rel diff "
                      f"{comp['loss_rel_diff']:.1e}")
    if res.get("inference"):
        rows = res["inference"]
        key = next(k for k in rows[0] if k.startswith("throughput_b"))
        t = Table(title=f"Inference at {rows[0]['image_size']} px (random weights; timm models channels-last)")
        for c in ("model", "params (M)", "GMACs", "latency b1 (ms)", key.replace("throughput_", "img/s ").replace(
                "_img_s", "")):
            t.add_column(c)
        for r in rows:
            t.add_row(r["model"], _fmt(r["params_m"], 2), _fmt(r["gmacs"], 2), _fmt(r["latency_b1_ms"], 1),
                      _fmt(r[key], 1))
        con.print(t)
    if res.get("deploy_tolerance"):
        con.print(f"deployed HDKD vs trained model: {res['deploy_tolerance']}")
    pipe = res.get("pipeline")
    if pipe:
        if pipe.get("status") != "ok":
            con.print(f"[yellow]input pipeline: {pipe.get('status')} ({pipe.get('reason')})[/]")
        else:
            con.print(f"[bold]Input pipeline[/] ({pipe.get('source')}, {pipe.get('image_size')} px, 1 worker): decode+"
                      f"augment {_fmt(pipe.get('decode_train_images_per_s'))} img/s, cache+augment "
                      f"{_fmt(pipe.get('cache_train_images_per_s'))} img/s; the step consumes "
                      f"{_fmt(pipe.get('step_img_s'), 2)} img/s -> cache feeds {_fmt(pipe.get('cache_train_vs_step'))}x")
    prof = res.get("profile")
    if prof:
        con.print(f"[bold]Profile of the fp32 step[/] ({prof['image_size']} px, batch {prof['batch_size']}), share of "
                  "self CPU time by class: " + ", ".join(f"{k} {v:.0%}" for k, v in
                                                        sorted(prof["share_by_class"].items(), key=lambda kv: -kv[1])))
        con.print(prof["table"])
    if res.get("targets"):
        t = Table(title="Targets")
        for c in ("target", "value", "goal", "met"):
            t.add_column(c)
        for r in res["targets"]:
            t.add_row(r["target"], _fmt(r["value"], 2), r["goal"], "yes" if r["met"] else "NO")
        con.print(t)


def _targets(res: dict) -> List[dict]:
    out = []
    fp32 = {e["image_size"]: e for e in res.get("distill_step", []) if e["device"] == "cpu" and e["precision"] == "32-true"}
    eff = {e["image_size"]: e for e in res.get("efficiency", []) if e["device"] == "cpu"}
    if 224 in eff:
        out.append({"target": "fp32 step FLOP/s / matmul FLOP/s (224 px)",
                    "value": eff[224]["step_fraction_of_matmul"], "goal": ">= 0.70",
                    "met": eff[224]["step_fraction_of_matmul"] >= 0.70})
    if 224 in fp32:
        out.append({"target": "ours / original pattern, same allocator (224 px)", "value": fp32[224]["speedup"],
                    "goal": ">= 3.5", "met": fp32[224]["speedup"] >= 3.5})
    for p in res.get("precision", []):
        if p["device"] == "cpu" and p["image_size"] == 224:
            v = p.get("speedup_vs_fp32")
            out.append({"target": "bf16-mixed / fp32 step (224 px)" + ("" if p["native_bf16"] else
                                                                          ": not run, no native bf16 on this CPU"),
                        "value": v if v is not None else float("nan"), "goal": ">= 1.6",
                        "met": bool(v is not None and v >= 1.6)})
    da = res.get("default_allocator") or {}
    if "ours_tuned_vs_original_default" in da:
        out.append({"target": f"ours (default settings) / original under default allocator ({da['image_size']} px)",
                    "value": da["ours_tuned_vs_original_default"], "goal": ">= 10",
                    "met": da["ours_tuned_vs_original_default"] >= 10})
    inf = {r["model"]: r for r in res.get("inference", [])}
    if "hdkd (deployed)" in inf and "deit_tiny_distilled_patch16_224" in inf:
        key = next(k for k in inf["hdkd (deployed)"] if k.startswith("throughput_b"))
        v = inf["hdkd (deployed)"][key] / inf["deit_tiny_distilled_patch16_224"][key]
        out.append({"target": "deployed HDKD / deit-tiny-distilled throughput", "value": v, "goal": ">= 1.0",
                    "met": v >= 1.0})
    pipe = res.get("pipeline") or {}
    if "cache_train_vs_step" in pipe:
        out.append({"target": f"cache img/s per worker / step img/s ({pipe.get('image_size')} px)", "value": pipe["cache_train_vs_step"],
                    "goal": ">= 3", "met": pipe["cache_train_vs_step"] >= 3})
    return out


def _worker(args: argparse.Namespace) -> int:
    from hdkd_lightning.bench import suite

    kwargs = json.loads(args.worker_args)
    fn = {"default-alloc": suite.worker_default_alloc, "compile": suite.worker_compile,
          "memory": suite.worker_memory}[args.worker]
    print(json.dumps(fn(**kwargs)), flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from hdkd_lightning._runtime import configure_allocator

    allocator = configure_allocator()
    args = _parse(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return _worker(args)
    sections = _sections(args)

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    from hdkd_lightning.bench import suite

    cfg = _config(args, log)
    t_start = time.perf_counter()
    res = {"command": "hdkd-bench " + " ".join(sys.argv[1:] if argv is None else argv), "quick": args.quick,
           "machine": _machine(), "allocator": allocator, "sections": sections,
           "distill_step": [], "precision": [], "efficiency": []}
    if "distill" in sections:
        res.update(suite.run_distill(cfg, with_variants=not args.quick or args.tiny))
    step_img_s = {(e["image_size"], e["batch_size"]): e["ours_img_s"] for e in res["distill_step"]
                  if e["device"] == "cpu" and e["precision"] == "32-true"}
    if "default-alloc" in sections:
        size, batch = cfg.distill_sizes[0]
        res["default_allocator"] = suite.run_default_allocator(cfg, size, batch, step_img_s.get((size, batch)))
    if "memory" in sections:
        res["memory"] = suite.run_memory(cfg, *cfg.distill_sizes[0])
    if "compile" in sections:
        res["compile"] = suite.run_compile(cfg)
    if "inference" in sections:
        res["inference"] = suite.run_inference(cfg)
        res["deploy_tolerance"] = suite.deploy_tolerance(32 if args.tiny else 64, cfg.seed)
    if "pipeline" in sections:
        size, batch = cfg.distill_sizes[-1]
        res["pipeline"] = suite.run_pipeline(cfg, step_img_s.get((size, batch)), image_size=size)
    if "profile" in sections:
        res["profile"] = suite.run_profile(cfg, *cfg.profile_size)
    res["targets"] = _targets(res)
    res["total_s"] = time.perf_counter() - t_start
    with open(args.json, "w") as fh:
        json.dump(res, fh, indent=2, default=str)
    print_report(res)
    print(f"results written to {args.json} ({res['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
