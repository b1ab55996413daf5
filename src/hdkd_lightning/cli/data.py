"""``hdkd-data``: get a dataset, inspect it, or build its image cache before training.

    hdkd-data download <isic2018|ham10000|brain_tumor> root=<dir> [url_base=<mirror>] [--dry-run]
    hdkd-data inspect data=<name> data.root=<dir> [data.*=...] [--json report.json] [--splits splits.csv]
    hdkd-data cache   data=<name> data.root=<dir> [data.image_size=...]

The config is composed from the packaged ``data_cli.yaml`` with Hydra's compose API, so the
command works from any directory and writes nothing but the files you name. Exit status 2
means the data or the configuration is wrong (the message says what and how to fix it).

``inspect`` exits with status 3 when it found bad files or CSV rows (unreadable images, rows
without images, images without rows, unknown labels), 0 when it found none; ``-q`` prints only
those, one per line (``path<TAB>reason``). 3 rather than 1: status 1 stays a bug (a traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

#: ``hdkd-data inspect`` found bad files or CSV rows (listed); 0: none found
EXIT_BAD_FILES = 3


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


def download_request(dataset: str | None, overrides: list[str]) -> tuple[Path, dict]:
    """The folder and the ``key=value`` settings of ``hdkd-data download <dataset> ...``, checked before
    anything is fetched (a :class:`~hdkd_lightning.errors.UserError` names what is wrong)."""
    from hdkd_lightning.data.download import DATASETS
    from hdkd_lightning.errors import UserError

    if dataset not in DATASETS:
        raise UserError(f"download {dataset or '<dataset>'}: choose one of {', '.join(DATASETS)}")
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    unknown = sorted(set(values) - {"root", "url_base"}) + [o for o in overrides if "=" not in o]
    if unknown:
        raise UserError(f"download takes root=<dir> and url_base=<url>; not {', '.join(unknown)}")
    if "root" not in values:
        raise UserError(f"download {dataset}: pass root=<folder to put the dataset in>")
    return Path(values["root"]).expanduser().resolve(), values


def _download(args, overrides: list[str], console) -> int:
    """``hdkd-data download``: fetch, verify, unpack (see hdkd_lightning.data.download), then inspect."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from hdkd_lightning.data.download import DATASETS, download_dataset

    root, values = download_request(args.dataset, overrides)
    info = DATASETS[args.dataset]
    console.print(f"{args.dataset}: {info['source']}; licence {info['licence']}; {info['size']}")
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True, disable=args.quiet) as bar:
        tasks: dict = {}

        def progress(name, done, total):
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)
        rows = download_dataset(args.dataset, root, url_base=values.get("url_base"), timeout=args.timeout,
                                dry_run=args.dry_run, log=console.print, progress=progress)
    console.print(f"{'would fetch' if args.dry_run else 'fetched'} into {root}:", highlight=False)
    for r in rows:  # plain lines: full URLs, readable in a log
        size = "size unknown" if r["size"] is None else f"{int(r['size']) / 2**20:,.1f} MiB"
        console.print(f"  {r['file']}  {size}  [{r['state']}]  checksum: {r['checksum']}\n    {r['url']}",
                      highlight=False, soft_wrap=True, markup=False)
    if args.dry_run:
        return 0
    from hdkd_lightning.data.inspect import build_report, print_report

    dm = build_datamodule([f"data={args.dataset}", f"data.root={root}"])
    print_report(build_report(dm, dm.prepare(strict=False, full_check=False)), console)
    console.print(f"ready: hdkd-train experiment=<...> data={args.dataset} data.root={root}")
    return 0


#: the data keys people set most with inspect / cache (Hydra overrides of the data config), for --help
KEYS = [
    ("data=<name>", "the dataset layout: brain_tumor, ham10000, isic2018, image_folder, synthetic"),
    ("data.root=<folder>", "the dataset's folder"),
    ("data.train_per_class=<n>", "inspect the limited-data subset a run with this setting trains on"),
    ("data.image_size=<px>", "cache: build the cache at the size training will read (default: the dataset's)"),
]
EXAMPLES = [
    "hdkd-data download ham10000 root=/data/ham10000",
    "hdkd-data download isic2018 root=/data/isic2018 --dry-run",
    "hdkd-data download brain_tumor root=/data/brain_tumor_mri      # Kaggle credentials needed",
    "hdkd-data download isic2018 root=/data/isic2018 url_base=https://mirror.lab/isic/",
    "hdkd-data inspect data=ham10000 data.root=/data/ham10000 data.train_per_class=100",
    "hdkd-data cache data=brain_tumor data.root=/data/brain_tumor_mri data.image_size=64",
    "hdkd-data inspect data=ham10000 data.root=/data/ham10000 -q > bad_files.tsv   # path<TAB>reason",
]


def build_parser() -> argparse.ArgumentParser:
    width = max(len(key) for key, _ in KEYS) + 2
    epilog = "\n".join(
        ["Keys set most often (inspect / cache take Hydra overrides of the data config, key=value):"]
        + [f"  {key:<{width}}{explanation}" for key, explanation in KEYS]
        + ["", "Examples:"] + [f"  {e}" for e in EXAMPLES]
        + ["", "Exit status:",
           "  0  done (inspect: no bad file or CSV row found)",
           f"  {EXIT_BAD_FILES}  inspect found bad files or CSV rows (unreadable image, row without image, image "
           "without row,",
           "     unknown label); -q prints only those, one per line: path<TAB>reason",
           "  2  a mistake in the command line, the configuration or the dataset layout (one line with the fix)",
           "  1  a bug (a traceback)"])
    parser = argparse.ArgumentParser(
        prog="hdkd-data", description="Download a public dataset, inspect a dataset, or pre-build its image cache.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    parser.add_argument("command", choices=["download", "inspect", "cache"],
                        help="download: fetch, verify and unpack a public dataset, then inspect it; inspect: "
                             "classes, splits and bad files of a dataset; cache: build its image cache")
    parser.add_argument("dataset", nargs="?", default=None, help="download: isic2018, ham10000 or brain_tumor")
    parser.add_argument("--json", type=Path, default=None, help="write the inspect report here")
    parser.add_argument("--splits", type=Path, default=None,
                        help="inspect: also write the split as CSV (reusable with data.split_file)")
    parser.add_argument("--quick", action="store_true",
                        help="inspect: header checks only, no full decode of every image")
    parser.add_argument("--dry-run", action="store_true", help="download: list what would be fetched, fetch nothing")
    parser.add_argument("--timeout", type=float, default=60.0, help="download: seconds without data before giving up")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="inspect: print only the bad files and CSV rows, one per line (path<TAB>reason); "
                             "download / cache: no progress bar and no INFO log lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unknown option(s) {unknown}")
    if args.dataset is not None and args.command != "download":
        overrides.insert(0, args.dataset)  # inspect / cache: it was an override
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")

    from rich.console import Console

    from hdkd_lightning.cli._common import report_error
    from hdkd_lightning.data.download import DownloadError
    from hdkd_lightning.errors import find_user_error

    console = Console(stderr=False, soft_wrap=True)
    try:
        if args.command == "download":
            return _download(args, overrides, console)
        dm = build_datamodule(overrides)
        if args.command == "inspect":
            from hdkd_lightning.data.inspect import build_report, print_report, problem_lines

            prepared = dm.prepare(strict=False, full_check=not args.quick)
            report = build_report(dm, prepared)
            if args.quiet:  # plain lines for scripts: no rich markup, highlighting or wrapping
                for line in problem_lines(prepared.problems):
                    print(line)
            else:
                print_report(report, console)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=2))
                if not args.quiet:
                    console.print(f"report written to {args.json}")
            if args.splits:
                dm.write_splits(args.splits.parent, prepared, file_name=args.splits.name)
                if not args.quiet:
                    console.print(f"split written to {args.splits}")
            return EXIT_BAD_FILES if prepared.problems else 0
        else:
            t0 = time.perf_counter()
            dm.prepare_data()
            where = getattr(dm.prepared.reader, "array_file", None)
            n = len(dm.prepared.records())
            console.print(f"image cache ready ({n} images at {dm.image_size}px) in {time.perf_counter() - t0:.1f}s"
                          + (f": {where}" if where else " (not on disk: data.cache.images=false or generated data)"))
    except DownloadError as e:  # its message names the file and what to do
        return report_error("hdkd-data", str(e))
    except Exception as e:
        user = find_user_error(e)  # e.g. a DataError of the DataModule, wrapped by Hydra's instantiate
        if user is not None:
            return report_error("hdkd-data", str(user))
        from hydra.errors import HydraException, InstantiationException
        from omegaconf.errors import OmegaConfBaseException

        # a mistake in the overrides (unknown key or option) is reported by Hydra itself, in one line;
        # anything else raised while building the data is a bug and keeps its traceback
        if isinstance(e, (HydraException, OmegaConfBaseException)) and not isinstance(e, InstantiationException):
            return report_error("hdkd-data", str(e).strip().splitlines()[0])
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
