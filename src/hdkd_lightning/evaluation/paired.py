"""Paired differences between two models tested on the same images (``hdkd-report``'s paired table).

A model and its baseline in one panel (same dataset, same training-set size) trained with the same
seed were tested on the same images, so their difference in test balanced accuracy is measured
with the images' own difficulty cancelled out. For each model of a panel against the baseline
(by default the plain student of that panel), per seed: the difference; over seeds: the mean, a
95% interval and how many seeds favour each model.

Pairing: runs by seed (``seed``; a study sets ``data.seed`` to the same value); images by their
path in each run's ``predictions.csv``, taken relative to the run's ``data.root`` when it lies
under it (runs trained with the dataset in different places still pair). A pair of runs whose
test images, labels or class names differ is refused, and named in the notes; so is a run without
``predictions.csv``. Images without a label (empty ``label``) are left out, as in ``metrics.json``.

The interval is a paired, hierarchical percentile bootstrap. Each of ``resamples`` (default 2000,
random seed 0 for every comparison) draws S seeds with replacement from the S paired seeds, then,
for each drawn seed, as many test images with replacement as it has, the same images for both
models; its statistic is the mean over the drawn seeds of balanced_accuracy(model) -
balanced_accuracy(baseline). The 2.5th and 97.5th percentiles of the statistics bound the
interval, which so holds both the spread between training runs and the finite test set. With 3
seeds there are only 10 distinct seed resamples: read the interval as a description of the
evidence, not as a guaranteed 95% coverage.

Balanced accuracy is the mean recall over the classes present in the (resampled) labels, as in
:mod:`hdkd_lightning.evaluation.metrics`. All resamples of one drawn seed are scored at once from per-class
counts (``np.bincount`` over resample x class), so 2000 resamples of 3 seeds x 1,300 images take
a fraction of a second.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Predictions", "read_predictions", "pair_predictions", "balanced_accuracy", "paired_bootstrap",
           "paired_differences", "paired_markdown", "write_paired_csv", "plot_paired", "RESAMPLES", "LEVEL",
           "PairingError"]

RESAMPLES = 2000
LEVEL = 0.95
PREDICTIONS_CSV = "predictions.csv"  # the name evaluation/artefacts.py writes


class PairingError(ValueError):
    """Two runs cannot be compared image by image (named in the message)."""


@dataclass(frozen=True)
class Predictions:
    """The labelled rows of one run's ``predictions.csv``."""

    keys: Tuple[str, ...]        # image identity: path, relative to the run's data.root when under it
    labels: np.ndarray           # [N] int64 class indices
    predicted: np.ndarray        # [N] int64 arg-max classes
    class_names: Tuple[str, ...]
    unlabelled: frozenset        # keys of rows without a label (they must match too)


def _image_key(path: str, root: Optional[str]) -> str:
    if root:
        prefix = str(root).rstrip("/\\")
        for sep in ("/", "\\"):
            if path.startswith(prefix + sep):
                return path[len(prefix) + 1:].replace("\\", "/")
    return path


def read_predictions(run_dir: Path, data_root: Optional[str] = None) -> Optional[Predictions]:
    """``None`` when the run has no ``predictions.csv``; ValueError when it cannot be read as one."""
    path = Path(run_dir) / PREDICTIONS_CSV
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[:3] != ["path", "label", "predicted"]:
            raise ValueError(f"{path}: not a predictions file (expected the columns path,label,predicted,prob_...)")
        names = tuple(h[len("prob_"):] for h in header[3:] if h.startswith("prob_"))
        index = {n: i for i, n in enumerate(names)}
        keys, labels, predicted, unlabelled = [], [], [], set()
        for line, row in enumerate(reader, start=2):
            if len(row) < 3:
                raise ValueError(f"{path}, line {line}: too few cells")
            key = _image_key(row[0], data_root)
            if row[1] == "":
                unlabelled.add(key)
                continue
            if row[1] not in index or row[2] not in index:
                raise ValueError(f"{path}, line {line}: class {row[1]!r} or {row[2]!r} is not one of {list(names)}")
            keys.append(key)
            labels.append(index[row[1]])
            predicted.append(index[row[2]])
    return Predictions(tuple(keys), np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64),
                       names, frozenset(unlabelled))


def pair_predictions(model: Predictions, base: Predictions, model_run: str = "model", base_run: str = "baseline"
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, model correct, baseline correct)`` over the shared images, in the model's order.

    Raises PairingError, naming both runs, unless both hold the same images with the same labels
    and the same classes.
    """
    pair = f"{model_run} and {base_run}"
    if model.class_names != base.class_names:
        raise PairingError(f"{pair} have different classes ({list(model.class_names)} vs {list(base.class_names)})")
    where = {k: i for i, k in enumerate(base.keys)}
    if len(where) != len(base.keys) or len(set(model.keys)) != len(model.keys):
        raise PairingError(f"{pair}: an image appears twice in one predictions.csv")
    only_model = set(model.keys) - set(where)
    only_base = set(where) - set(model.keys)
    if only_model or only_base or model.unlabelled != base.unlabelled:
        example = sorted(only_model or only_base or (model.unlabelled ^ base.unlabelled))[0]
        raise PairingError(f"{pair} were tested on different images: {len(only_model)} labelled images only in the "
                           f"first, {len(only_base)} only in the second (e.g. {example!r})")
    order = np.fromiter((where[k] for k in model.keys), dtype=np.int64, count=len(model.keys))
    if not np.array_equal(model.labels, base.labels[order]):
        bad = int(np.flatnonzero(model.labels != base.labels[order])[0])
        raise PairingError(f"{pair} label the same image differently (e.g. {model.keys[bad]!r})")
    return model.labels, model.predicted == model.labels, base.predicted[order] == base.labels[order]


def balanced_accuracy(labels: np.ndarray, correct: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``labels`` (``correct``: whether each image was right)."""
    support = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=correct.astype(np.float64), minlength=num_classes)
    present = support > 0
    return float((hits[present] / support[present]).mean())


def _balanced_from_counts(hits: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Row-wise mean of hits / support over the classes with support (works for a difference of hits too)."""
    present = support > 0
    recall = np.divide(hits, support, out=np.zeros(hits.shape), where=present)
    return recall.sum(axis=-1) / present.sum(axis=-1)


def paired_bootstrap(seeds: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int,
                     resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Dict[str, Any]:
    """Per-seed differences, their mean and the hierarchical bootstrap interval (module docstring).

    Args:
        seeds: per seed, ``(labels, model correct, baseline correct)`` from :func:`pair_predictions`.

    The draws, in order: ``rng.integers(0, S, (resamples, S))`` (the seeds of each resample), then
    for each slot j of a resample ``rng.random((resamples, max N))``, whose first N_s numbers x N_s
    (rounded down) are the images drawn for the seed in that slot.
    """
    if not seeds:
        raise ValueError("no paired seeds")
    differences = [balanced_accuracy(lab, cm, num_classes) - balanced_accuracy(lab, cb, num_classes)
                   for lab, cm, cb in seeds]
    out: Dict[str, Any] = {"differences": differences, "mean": float(np.mean(differences)), "low": None,
                           "high": None, "resamples": int(resamples), "seed": int(seed), "level": float(level)}
    if resamples <= 0:
        return out
    rng = np.random.default_rng(seed)
    sizes = [len(lab) for lab, _, _ in seeds]
    # per image: +1 model right only, -1 baseline right only; summed per class over support, the
    # difference of the two recalls
    gains = [cm.astype(np.float64) - cb.astype(np.float64) for _, cm, cb in seeds]
    n_seeds = len(seeds)
    drawn = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    total = np.zeros(resamples)
    for slot in range(n_seeds):
        uniform = rng.random((resamples, max(sizes)))
        for s, (labels, _, _) in enumerate(seeds):
            rows = np.flatnonzero(drawn[:, slot] == s)
            if rows.size == 0:
                continue
            n = sizes[s]
            idx = np.minimum((uniform[rows, :n] * n).astype(np.int64), n - 1)
            cells = (np.arange(rows.size)[:, None] * num_classes + labels[idx]).ravel()
            support = np.bincount(cells, minlength=rows.size * num_classes).reshape(rows.size, num_classes)
            gain = np.bincount(cells, weights=gains[s][idx].ravel(),
                               minlength=rows.size * num_classes).reshape(rows.size, num_classes)
            total[rows] += _balanced_from_counts(gain, support)
    stats = total / n_seeds
    tail = (1.0 - level) / 2.0 * 100.0
    out["low"], out["high"] = (float(v) for v in np.percentile(stats, [tail, 100.0 - tail]))
    return out


# -- over the rows of a comparison -------------------------------------------------------------

def _find_baseline(rows: List[Dict[str, Any]], spec: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """The row labelled ``spec``, else the only row of that model (its label's first word)."""
    exact = [r for r in rows if r["model"] == spec]
    if len(exact) == 1:
        return exact[0], ""
    named = [r for r in rows if r["model"].split(" ")[0] == spec]
    if len(named) == 1:
        return named[0], ""
    if named:
        return None, (f"{len(named)} rows could be the baseline ({', '.join(r['model'] for r in named)}); "
                      f"choose one with --baseline '<label>'")
    return None, f"no row {spec!r} to compare with"


def paired_differences(rows: List[Dict[str, Any]], baseline: Optional[str] = None, resamples: int = RESAMPLES,
                       seed: int = 0) -> Dict[str, Any]:
    """Every model of each panel against the panel's baseline (rows of ``build_comparison``)."""
    spec = baseline or "student"
    cache: Dict[str, Any] = {}
    notes: List[str] = []
    comparisons: List[Dict[str, Any]] = []

    def load(row: Dict[str, Any], i: int) -> Optional[Predictions]:
        run = row["runs"][i]
        if run not in cache:
            try:
                cache[run] = read_predictions(Path(run), row["data_roots"][i])
            except (OSError, ValueError) as exc:
                cache[run] = exc
        return cache[run]

    panels: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        panels.setdefault(row["panel"], []).append(row)
    for panel, members in panels.items():
        if len(members) < 2:
            continue
        base, why = _find_baseline(members, spec)
        if base is None:
            notes.append(f"{panel}: {why}")
            continue
        missing: Dict[str, List[str]] = {}  # row label -> seeds without predictions.csv
        for row in members:
            for i, run_seed in enumerate(row["seeds"]):
                if load(row, i) is None:
                    missing.setdefault(row["model"], []).append(run_seed)
        runs = sum(len(row["runs"]) for row in members)
        if sum(len(seeds) for seeds in missing.values()) == runs:
            notes.append(f"{panel}: none of its {runs} runs has a predictions.csv")
            continue
        for label, seeds in missing.items():
            notes.append(f"{panel} | {label}: no predictions.csv for seed(s) {', '.join(seeds)}")
        for row in members:
            if row is base:
                continue
            result = _compare(row, base, load, resamples, seed, notes)
            if result is not None:
                comparisons.append(result)
    return {"baseline": spec, "comparisons": comparisons, "notes": notes, "resamples": int(resamples),
            "seed": int(seed), "level": LEVEL}


def _compare(row: Dict[str, Any], base: Dict[str, Any], load, resamples: int, seed: int,
             notes: List[str]) -> Optional[Dict[str, Any]]:
    where = f"{row['panel']} | {row['model']} vs {base['model']}"
    base_at = {s: i for i, s in enumerate(base["seeds"])}
    pairs, used, sizes = [], [], []
    names: Optional[Tuple[str, ...]] = None
    unmatched = [s for s in row["seeds"] if s not in base_at]
    if unmatched:
        notes.append(f"{where}: seed(s) {', '.join(unmatched)} have no baseline run")
    for i, run_seed in enumerate(row["seeds"]):
        if run_seed not in base_at:
            continue
        j = base_at[run_seed]
        mine, theirs = load(row, i), load(base, j)
        if mine is None or theirs is None:
            continue  # named once per run in the panel's notes
        for got, run in ((mine, row["runs"][i]), (theirs, base["runs"][j])):
            if isinstance(got, Exception):
                notes.append(f"{where}, seed {run_seed}: {run}: {got}")
        if isinstance(mine, Exception) or isinstance(theirs, Exception):
            continue
        try:
            pair = pair_predictions(mine, theirs, row["runs"][i], base["runs"][j])
            if names is not None and mine.class_names != names:
                raise PairingError(f"{row['runs'][i]} has other classes than the seeds before it")
        except PairingError as exc:
            notes.append(f"{where}, seed {run_seed}: refused, {exc}")
            continue
        names = mine.class_names
        pairs.append(pair)
        used.append(run_seed)
        sizes.append(len(pair[0]))
    if not pairs:
        return None
    stats = paired_bootstrap(pairs, len(names), resamples, seed)
    diffs = stats["differences"]
    return {"panel": row["panel"], "dataset": row.get("dataset"), "train_per_class": row.get("train_per_class"),
            "model": row["model"], "baseline": base["model"], "line": row.get("line"), "seeds": used,
            "n": len(used), "images": sizes, **stats,
            "model_ahead": sum(d > 0 for d in diffs), "baseline_ahead": sum(d < 0 for d in diffs),
            "tied": sum(d == 0 for d in diffs)}


# -- output --------------------------------------------------------------------------------------

def _points(v: Optional[float]) -> str:
    return "–" if v is None else f"{v * 100:+.1f}"


def paired_markdown(paired: Dict[str, Any], figure: Optional[str] = None) -> List[str]:
    """The report.md section (lines): the table, the figure, the notes."""
    comps = paired["comparisons"]
    if not comps and not paired["notes"]:
        return []
    level = int(round(paired["level"] * 100))
    out = ["## Paired differences", "",
           f"Test balanced accuracy of each model minus that of its panel's baseline "
           f"(`{paired['baseline']}` unless `--baseline` says otherwise), seed by seed on the same test images, "
           f"in percentage points. Interval: {level}% paired hierarchical bootstrap (seeds, then test images, "
           f"the same images for both models; {paired['resamples']} resamples, seed {paired['seed']}).", ""]
    if comps:
        out += ["| dataset / training set | model | baseline | n | per seed | mean | "
                f"{level}% interval | seeds ahead: model / baseline / tied |",
                "|---|---|---|---|---|---|---|---|"]
        for c in comps:
            per_seed = ", ".join(f"{_points(d)} (seed {s})" for s, d in zip(c["seeds"], c["differences"]))
            interval = "–" if c["low"] is None else f"{_points(c['low'])} to {_points(c['high'])}"
            out.append(f"| {c['panel']} | {c['model']} | {c['baseline']} | {c['n']} | {per_seed} | "
                       f"**{_points(c['mean'])}** | {interval} | {c['model_ahead']} / {c['baseline_ahead']} / "
                       f"{c['tied']} |")
        out.append("")
        if figure:
            out += [f"![paired differences per seed, mean and interval]({figure})", ""]
    if paired["notes"]:
        out += ["Left out of the paired table (a paired difference needs both runs' `predictions.csv`, "
                "on the same test images):", ""]
        out += [f"- {n}" for n in paired["notes"]]
        out.append("")
    return out


PAIRED_COLUMNS = ["panel", "model", "baseline", "n", "seeds", "differences", "mean_difference", "ci_low", "ci_high",
                  "model_ahead", "baseline_ahead", "tied", "test_images", "resamples", "bootstrap_seed"]


def write_paired_csv(fh, paired: Dict[str, Any]) -> None:
    """One line per comparison; differences in balanced accuracy (fractions, as report.csv)."""
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(PAIRED_COLUMNS)
    for c in paired["comparisons"]:
        w.writerow([c["panel"], c["model"], c["baseline"], c["n"], " ".join(c["seeds"]),
                    " ".join(repr(d) for d in c["differences"]), c["mean"],
                    "" if c["low"] is None else c["low"], "" if c["high"] is None else c["high"],
                    c["model_ahead"], c["baseline_ahead"], c["tied"], " ".join(map(str, c["images"])),
                    c["resamples"], c["seed"]])


def plot_paired(paired: Dict[str, Any], path: Path) -> Path:
    """One panel per dataset / training-set size, one row per model: the seeds' differences (circles),
    their mean (diamond) with its interval, and the zero line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hdkd_lightning.files import atomic_write

    panels: Dict[str, List[Dict[str, Any]]] = {}
    for c in paired["comparisons"]:
        panels.setdefault(c["panel"], []).append(c)
    heights = [0.55 * len(cs) + 1.0 for cs in panels.values()]
    fig = Figure(figsize=(8.0, sum(heights) + 0.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    # one x scale for every panel: differences at different sizes compare at a glance
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights, sharex=True)[:, 0]
    level = int(round(paired["level"] * 100))
    for ax, (panel, comps) in zip(axes, panels.items()):
        for y, c in enumerate(comps):
            diffs = np.asarray(c["differences"]) * 100
            # the seeds just above the mean and its interval, spread a little so that close ones stay visible
            offsets = np.linspace(-0.26, -0.1, len(diffs)) if len(diffs) > 1 else np.full(1, -0.18)
            ax.scatter(diffs, y + offsets, s=26, facecolors="none", edgecolors="#4C72B0", linewidths=1.2,
                       zorder=3, label="one seed" if y == 0 else None)
            mean = c["mean"] * 100
            if c["low"] is not None:
                err = [[mean - c["low"] * 100], [c["high"] * 100 - mean]]
                ax.errorbar([mean], [y + 0.12], xerr=err, fmt="none", ecolor="black", capsize=4, lw=1.4, zorder=2)
            ax.scatter([mean], [y + 0.12], marker="D", s=36, color="black", zorder=4,
                       label=f"mean, {level}% interval" if y == 0 else None)
        ax.axvline(0.0, color="grey", lw=1, ls="--", zorder=1)
        ax.set_yticks(range(len(comps)),
                      [f"{c['model']}\n({c['model_ahead']} of {c['n']} seeds ahead)" for c in comps], fontsize=8)
        ax.set_ylim(len(comps) - 0.5, -0.5)
        ax.set_title(f"{panel}: difference to {comps[0]['baseline']}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelbottom=True)
    axes[-1].set_xlabel("difference in test balanced accuracy (percentage points)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png"), binary=True)
