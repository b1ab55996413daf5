"""hdkd-report: compare runs (mean ± std over seeds) -> report.md, report.csv, runs.csv, report.png;
paired differences to a baseline (paired.csv, paired.png), a learning curve (learning_curve.png) and,
for runs evaluated with per-image attributes, balanced accuracy per subgroup (subgroups.md, subgroups.csv).

    hdkd-report logs/distill_brain logs/student_brain/multiruns/2026-11-22_10-00-00 --out report/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

#: the last lines of --help: what the exit status means (what main() returns)
EXIT_STATUS = ("Exit status: 0 the report was written; 2 a mistake in the command line (an unknown option, a path\n"
               "that is not a folder, no runs below the paths); 1 a bug (a traceback).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdkd-report",
        description="Group runs by the settings that differ between them (seeds excluded) and report test "
                    "accuracy, balanced accuracy, macro F1 and macro AUROC as mean ± std over seeds.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Failed and unfinished runs are listed, not averaged.\n\n"
               "Paired differences: each model minus the baseline of its dataset / training-set size\n"
               "(default: the plain student), seed by seed on the same test images (each run's\n"
               "predictions.csv): the mean, a 95% interval from a paired hierarchical bootstrap (seeds, then\n"
               "test images; seed 0) and how many seeds favour each model -> paired.csv, paired.png.\n"
               "Runs without predictions.csv are named and left out.\n\n"
               "Learning curve: when a dataset was trained at several data.train_per_class, test balanced\n"
               "accuracy and the paired difference against training images per class -> learning_curve.png.\n\n"
               "Subgroups: when runs have subgroups.csv (test images with attributes such as sex, age band,\n"
               "body site), each model's balanced accuracy per attribute value, mean over seeds, or 'too small' /\n"
               "'class absent' when any seed's group was not scored -> subgroups.md, subgroups.csv.\n\n"
               "Examples:\n"
               "  hdkd-report logs/ --out report/\n"
               "  hdkd-report logs/distill_brain logs/student_brain/multiruns/<date> --out report/\n"
               "  hdkd-report study/runs --out study/report --no-cost\n"
               "  hdkd-report study/runs --out study/report --baseline teacher\n\n" + EXIT_STATUS)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or folders holding runs (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: ./report)")
    parser.add_argument("--no-cost", action="store_true", help="skip the parameter / GFLOP count of each model")
    parser.add_argument("--baseline", default=None, metavar="LABEL",
                        help="the row every other row of its panel is paired with: a model label as in the table "
                             "(e.g. 'teacher', 'hdkd lambda_feat=3'); default: the plain student")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples of the paired intervals (default 2000; 0: no interval)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resamples < 0:
        parser.error("--resamples must be 0 or more")

    from hdkd_lightning.evaluation.comparison import build_comparison, find_runs, load_run, write_comparison

    try:
        run_dirs = find_runs(args.paths)
    except FileNotFoundError as exc:
        print(f"hdkd-report: {exc}", file=sys.stderr)
        return 2
    if not run_dirs:
        print(f"hdkd-report: no runs (folders with run.json or config_resolved.yaml) below "
              f"{', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    report = build_comparison([load_run(d) for d in run_dirs], with_cost=not args.no_cost, baseline=args.baseline,
                              resamples=args.resamples)
    files = write_comparison(report, args.out)
    print(files["markdown"].read_text())
    print("written: " + ", ".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
