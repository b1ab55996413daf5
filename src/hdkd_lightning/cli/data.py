"""``hdkd-data``: inspect a dataset or build its image cache before training.

    hdkd-data inspect data=<name> data.root=<dir> [data.*=...] [--json report.json] [--splits splits.csv]
    hdkd-data cache   data=<name> data.root=<dir> [data.image_size=...]

The config is composed from the packaged ``data_cli.yaml`` with Hydra's compose API, so the
command works from any directory and writes nothing but the files you name. Exit status 2
means the data or the configuration is wrong (the message says what and how to fix it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hydra.core.global_hydra import GlobalHydra

    from hdkd_lightning import _paths

    if GlobalHydra.instance().is_initialized():  # e.g. left over by an earlier compose in-process
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(_paths.config_dir()), version_base="1.3"):
        return hydra_compose("data_cli", overrides=overrides)


def build_datamodule(overrides: list[str]):
    import hydra

    cfg = compose(overrides)
    return hydra.utils.instantiate(cfg.data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hdkd-data", description="Inspect a dataset or pre-build its image cache.",
        epilog="Overrides are Hydra overrides of the data config, e.g. data=ham10000 "
               "data.root=/data/ham10000 data.dedup=true data.image_size=224.")
    parser.add_argument("command", choices=["inspect", "cache"])
    parser.add_argument("--json", type=Path, default=None, help="write the inspect report here")
    parser.add_argument("--splits", type=Path, default=None,
                        help="inspect: also write the split as CSV (reusable with data.split_file)")
    parser.add_argument("--quick", action="store_true",
                        help="inspect: header checks only, no full decode of every image")
    parser.add_argument("-q", "--quiet", action="store_true", help="no table, only errors")
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unknown option(s) {unknown}")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")

    from rich.console import Console

    from hdkd_lightning.data.base import DataError

    console = Console(stderr=False, soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    try:
        dm = build_datamodule(overrides)
        if args.command == "inspect":
            from hdkd_lightning.data.inspect import build_report, print_report

            prepared = dm.prepare(strict=False, full_check=not args.quick)
            report = build_report(dm, prepared)
            if not args.quiet:
                print_report(report, console)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=2))
                console.print(f"report written to {args.json}")
            if args.splits:
                dm.write_splits(args.splits.parent, prepared, file_name=args.splits.name)
                console.print(f"split written to {args.splits}")
        else:
            t0 = time.perf_counter()
            dm.prepare_data()
            where = getattr(dm.prepared.reader, "array_file", None)
            n = len(dm.prepared.records())
            console.print(f"image cache ready ({n} images at {dm.image_size}px) in "
                          f"{time.perf_counter() - t0:.1f}s" + (f": {where}" if where else
                                                                " (not on disk: data.cache.images=false or generated data)"))
    except DataError as e:
        err.print(f"[red]data error:[/red] {e}", markup=True, highlight=False)
        return 2
    except Exception as e:  # config composition errors from Hydra
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(e, (HydraException, OmegaConfBaseException)):
            err.print(f"[red]config error:[/red] {e}", highlight=False)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
