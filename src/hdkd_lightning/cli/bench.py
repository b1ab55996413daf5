"""``hdkd-bench``: speed, efficiency and memory of HDKD training and inference on this machine.

    hdkd-bench --quick                  # a few minutes on 2 CPU cores
    hdkd-bench                          # full run (more repeats, torch.compile, all sections)
    hdkd-bench --only distill,inference --json out.json
    hdkd-bench --skip default-alloc,compile

Sections: ``distill`` (this project's distillation step vs the original code's pass pattern
re-implemented on this project's networks, and with ``--original-code <clone>`` vs the authors'
own code, on the same weights and batch with a loss-equality assertion; bf16-mixed; FLOP/s vs
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
import sys
import time
from typing import List, Optional

SECTIONS = ("distill", "default-alloc", "memory", "compile", "inference", "pipeline", "profile")


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    summary, examples, sections = __doc__.split("\n\n")[:3]
    p = argparse.ArgumentParser(prog="hdkd-bench", description=summary.replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Examples:\n" + examples + "\n\n" + sections.replace("``", ""))
    p.add_argument("--quick", action="store_true", help="short run: fewer repeats, no torch.compile")
    p.add_argument("--json", default="bench.json", help="where to write the results (default: ./bench.json)")
    p.add_argument("--only", default=None, help=f"comma-separated sections to run, from {','.join(SECTIONS)}")
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    for s in SECTIONS:
        p.add_argument(f"--skip-{s}", action="store_true", help=f"skip the {s} section")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per case")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--data-source", default=None, help="pipeline section: data source (default: synthetic)")
    p.add_argument("--data-root", default=None, help="pipeline section: dataset root")
    p.add_argument("--infer-size", type=int, default=None, metavar="PX",
                   help="inference section: image size (default 224; 64 is the real-data study's)")
    p.add_argument("--no-gpu", action="store_true", help="CPU only even when a GPU is present")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--original-code", default=None, metavar="DIR",
                   help="a clone of the authors' HDKD code (needs einops): its training step is timed beside ours "
                        "(same weights, same batch, equal loss asserted); without it the baseline is the original "
                        "pass pattern on this project's networks")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: 32 px, batch 2
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
    if args.infer_size:
        import inspect

        from hdkd_lightning.models import HdkdStudent, valid_image_sizes  # the models' own size rule

        # the student (DFLT patches on the stage-4 grid) is the stricter of the two networks
        patch = inspect.signature(HdkdStudent).parameters["patch_size"].default
        valid = valid_image_sizes(patch_size=patch, upto=max(args.infer_size, 256))
        if args.infer_size not in valid:
            raise SystemExit(f"hdkd-bench: --infer-size {args.infer_size}: the networks take multiples of "
                             f"{valid[0]} ({', '.join(map(str, valid[:8]))}, ...)")
        cfg.infer_size = args.infer_size
    if args.repeats:
        cfg.repeats = args.repeats
    if args.warmup is not None:
        cfg.warmup = args.warmup
    cfg.pipeline_source, cfg.pipeline_root = args.data_source, args.data_root
    cfg.original_code = args.original_code
    if torch.cuda.is_available() and not args.no_gpu:
        cfg.devices = ("cpu", "cuda")
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    from hdkd_lightning._runtime import configure_allocator

    allocator = configure_allocator()
    args = _parse(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sections = _sections(args)
    if args.original_code:
        from hdkd_lightning.bench.original_code import OriginalCodeError, load_original_code

        try:
            load_original_code(args.original_code)  # refuse a wrong folder before any timing
        except OriginalCodeError as exc:
            print(f"hdkd-bench: {exc}", file=sys.stderr)
            return 2

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    from hdkd_lightning.bench import inference, suite
    from hdkd_lightning.bench.machine import machine_info
    from hdkd_lightning.bench.report import print_report, targets

    cfg = _config(args, log)
    t_start = time.perf_counter()
    res = {"command": "hdkd-bench " + " ".join(sys.argv[1:] if argv is None else argv), "quick": args.quick,
           "machine": machine_info(), "allocator": allocator, "sections": sections,
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
        res["inference"] = inference.run_inference(cfg)
        res["deploy_tolerance"] = inference.deploy_tolerance(32 if args.tiny else 64, cfg.seed)
        res["export_parity"] = inference.export_parity(cfg.infer_size, cfg.seed)
    if "pipeline" in sections:
        size, batch = cfg.distill_sizes[-1]
        res["pipeline"] = suite.run_pipeline(cfg, step_img_s.get((size, batch)), image_size=size)
    if "profile" in sections:
        res["profile"] = suite.run_profile(cfg, *cfg.profile_size)
    res["targets"] = targets(res)
    res["total_s"] = time.perf_counter() - t_start
    with open(args.json, "w") as fh:
        json.dump(res, fh, indent=2, default=str)
    print_report(res)
    print(f"results written to {args.json} ({res['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
