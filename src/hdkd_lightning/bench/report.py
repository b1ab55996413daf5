"""The console report of ``hdkd-bench``: rich tables of every section, and the targets met or missed."""

from __future__ import annotations

import sys
from typing import List


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
        t = Table(title="Distillation step (img/s; teacher fwd + student fwd/bwd + loss + AdamW). 'pattern' = the "
                        "original code's pass pattern on this project's networks; 'original code' = the authors' "
                        "code itself (--original-code)")
        for c in ("device", "px", "batch", "precision", "ours", "pattern", "ours/pattern", "original code",
                  "ours/original code", "loss ours", "loss pattern", "loss original code", "peak RSS MB", "user s",
                  "sys s"):
            t.add_column(c)
        for e in res["distill_step"]:
            tm = e.get("timings", {}).get("ours", {})
            t.add_row(e["device"], str(e["image_size"]), str(e["batch_size"]), e["precision"],
                      _fmt(e["ours_img_s"], 2), _fmt(e["original_pattern_img_s"], 2), _fmt(e["speedup"], 2) + "x",
                      _fmt(e.get("original_code_img_s"), 2),
                      _fmt(e.get("speedup_vs_original_code"), 2) + ("x" if e.get("speedup_vs_original_code") else ""),
                      _fmt(e.get("loss_ours"), 6), _fmt(e.get("loss_original_pattern"), 6),
                      _fmt(e.get("loss_original_code"), 6),
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
        t = Table(title=f"Inference at {rows[0]['image_size']} px (random weights; timm models channels-last; "
                        f"onnxruntime int8 calibrated on random inputs, speed only)")
        for c in ("model", "params (M)", "GMACs", "latency b1 median (ms)", "p95 (ms)",
                  key.replace("throughput_", "img/s ").replace("_img_s", "")):
            t.add_column(c)
        for r in rows:
            t.add_row(r["model"], _fmt(r["params_m"], 2), _fmt(r["gmacs"], 2), _fmt(r["latency_b1_ms"], 1),
                      _fmt(r.get("latency_b1_p95_ms"), 1), _fmt(r[key], 1))
        con.print(t)
    if res.get("deploy_tolerance"):
        con.print(f"deployed HDKD vs trained model: {res['deploy_tolerance']}")
    for row in res.get("export_parity", []):
        con.print(f"export parity, {row['model']} at {row['image_size']} px: max |logit diff| ONNX "
                  f"{row['onnx_max_abs_logit_diff']:.2g}, pt2 {row['pt2_max_abs_logit_diff']:.2g}")
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
            v = r["value"]
            shown = f"{v:.2g}" if isinstance(v, float) and 0 < abs(v) < 0.01 else _fmt(v, 2)  # parity figures
            t.add_row(r["target"], shown, r["goal"], "yes" if r["met"] else "NO")
        con.print(t)


def targets(res: dict) -> List[dict]:
    out = []
    fp32 = {e["image_size"]: e for e in res.get("distill_step", []) if e["device"] == "cpu" and e["precision"] == "32-true"}
    eff = {e["image_size"]: e for e in res.get("efficiency", []) if e["device"] == "cpu"}
    if 224 in eff:
        out.append({"target": "fp32 step FLOP/s / matmul FLOP/s (224 px)",
                    "value": eff[224]["step_fraction_of_matmul"], "goal": ">= 0.70",
                    "met": eff[224]["step_fraction_of_matmul"] >= 0.70})
    if 224 in fp32:
        out.append({"target": "ours / original pass pattern on this project's networks, same allocator (224 px)",
                    "value": fp32[224]["speedup"], "goal": ">= 3.5", "met": fp32[224]["speedup"] >= 3.5})
        if fp32[224].get("speedup_vs_original_code"):
            out.append({"target": "ours / the authors' original code, same allocator (224 px)",
                        "value": fp32[224]["speedup_vs_original_code"], "goal": ">= 3.5",
                        "met": fp32[224]["speedup_vs_original_code"] >= 3.5})
    for p in res.get("precision", []):
        if p["device"] == "cpu" and p["image_size"] == 224:
            v = p.get("speedup_vs_fp32")
            out.append({"target": "bf16-mixed / fp32 step (224 px)" + ("" if p["native_bf16"] else
                                                                          ": not run, no native bf16 on this CPU"),
                        "value": v if v is not None else float("nan"), "goal": ">= 1.6",
                        "met": bool(v is not None and v >= 1.6)})
    da = res.get("default_allocator") or {}
    if "ours_tuned_vs_original_default" in da:
        out.append({"target": f"ours (default settings) / original pass pattern under default allocator "
                              f"({da['image_size']} px)",
                    "value": da["ours_tuned_vs_original_default"], "goal": ">= 10",
                    "met": da["ours_tuned_vs_original_default"] >= 10})
    inf = {r["model"]: r for r in res.get("inference", [])}
    if "hdkd (deployed)" in inf and "deit_tiny_distilled_patch16_224" in inf:
        key = next(k for k in inf["hdkd (deployed)"] if k.startswith("throughput_b"))
        v = inf["hdkd (deployed)"][key] / inf["deit_tiny_distilled_patch16_224"][key]
        out.append({"target": "deployed HDKD / deit-tiny-distilled throughput", "value": v, "goal": ">= 1.0",
                    "met": v >= 1.0})
    if "hdkd (onnxruntime int8)" in inf and "deit_tiny_distilled_patch16_224" in inf:
        v = inf["deit_tiny_distilled_patch16_224"]["latency_b1_ms"] / inf["hdkd (onnxruntime int8)"]["latency_b1_ms"]
        out.append({"target": "deit-tiny PyTorch fp32 / HDKD onnxruntime int8, batch-1 latency", "value": v,
                    "goal": ">= 1.0", "met": v >= 1.0})
    parity = res.get("export_parity") or []
    if parity:
        worst = max(max(r["onnx_max_abs_logit_diff"], r["pt2_max_abs_logit_diff"]) for r in parity)
        out.append({"target": "ONNX and pt2 export parity, all three networks (max |logit diff|)", "value": worst,
                    "goal": "< 1e-4", "met": worst < 1e-4})
    pipe = res.get("pipeline") or {}
    if "cache_train_vs_step" in pipe:
        out.append({"target": f"cache img/s per worker / step img/s ({pipe.get('image_size')} px)",
                    "value": pipe["cache_train_vs_step"], "goal": ">= 3", "met": pipe["cache_train_vs_step"] >= 3})
    return out
