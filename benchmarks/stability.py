"""Long-run stability: train many epochs on small synthetic images, record RSS and epoch time.

    .venv/bin/python benchmarks/stability.py --epochs 25 --json stability.json

Runs the real ``hdkd-train`` job (teacher, then HDKD with that teacher) in this process with a
callback that samples the resident set size (from /proc) and the wall time of every epoch.
Memory should stay flat after the first epochs and epoch time should not creep up.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class EpochProbe(pl.Callback):
    def __init__(self) -> None:
        self.rows = []
        self._t = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.rows.append({"epoch": trainer.current_epoch, "rss_mib": round(rss_mib(), 1),
                          "seconds": round(time.perf_counter() - self._t, 2)})
        print(f"epoch {trainer.current_epoch:3d}  rss {self.rows[-1]['rss_mib']:8.1f} MiB  "
              f"{self.rows[-1]['seconds']:6.2f} s", flush=True)


def run(model: str, epochs: int, log_dir: Path, extra) -> list:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from hdkd_lightning._paths import config_dir
    from hdkd_lightning.cli._common import prepare_process
    from hdkd_lightning.pipeline import run_train

    prepare_process()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", f"model={model}", f"task_name=stability_{model}",
                                          "data.image_size=32", f"trainer.max_epochs={epochs}",
                                          "callbacks.rich_progress_bar=null", "data.num_workers=0",
                                          "model.teacher.experiment=stability_teacher" if model == "distill" else
                                          "tags=[stability]", *extra])
    probe = EpochProbe()
    with open_dict(cfg):
        cfg.paths.log_dir = str(log_dir)
        cfg.paths.output_dir = str(log_dir / f"stability_{model}" / "runs" / "run")
        cfg.test = False
    run_train(cfg, extra_callbacks=[probe])
    return probe.rows


def summarise(rows: list) -> dict:
    warm = rows[2:] if len(rows) > 4 else rows
    half = len(warm) // 2
    first, second = warm[:half], warm[half:]
    mean = lambda xs: sum(xs) / max(len(xs), 1)
    return {"rss_first_mib": rows[0]["rss_mib"], "rss_after_warmup_mib": warm[0]["rss_mib"],
            "rss_last_mib": rows[-1]["rss_mib"],
            "rss_growth_after_warmup_mib": round(warm[-1]["rss_mib"] - warm[0]["rss_mib"], 1),
            "epoch_seconds_first_half": round(mean([r["seconds"] for r in first]), 2),
            "epoch_seconds_second_half": round(mean([r["seconds"] for r in second]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--json", default="stability.json")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HDKD_CACHE_DIR", str(Path(tmp) / "cache"))
        result = {}
        for model in ("teacher", "distill"):
            rows = run(model, args.epochs, Path(tmp) / "logs", args.overrides)
            result[model] = {"epochs": rows, "summary": summarise(rows)}
            print(model, json.dumps(result[model]["summary"]), flush=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
