"""``hdkd-data inspect``: what the DataModule would train on, and what is wrong with the data.

:func:`build_report` summarises a preparation in *report* mode (``dm.prepare(strict=False)``:
problems are collected, bad files dropped, nothing raises except layout errors) and always hashes the files to count
byte-identical duplicates and fully decodes every image (both cached per file, so a second
run is fast), whatever ``data.dedup`` says (definitions in
:mod:`hdkd_lightning.data.dedup`; ``duplicates_across_splits`` counts the copies that dedup
removes because of a copy in another split, ``duplicates_across_splits_kept`` the copies on
the winning side, e.g. Testing images that also exist in Training):

* with ``data.dedup=true``: ``duplicates_across_splits`` / ``duplicates_within_splits`` are
  counted on the layout's splits *before* removal (for Brain Tumor: Training vs Testing), and
  ``duplicates_removed`` is what was removed;
* with ``data.dedup=false`` (the default except for Brain Tumor): they are counted on the final
  splits (what you would train and evaluate on), and ``duplicates_removed`` is 0.

``groups_across_splits`` counts the groups (lesions, patients; never ungrouped images) found
in more than one split: 0 unless a split file or the layout's official splits say otherwise.
"""

from __future__ import annotations

import time
from collections import Counter

from hdkd_lightning.data.base import PROBLEM_KINDS, SPLITS, class_counts


def build_report(dm, prepared=None, full_check: bool = True) -> dict:
    """The report as a dict (JSON-ready). ``prepared`` defaults to ``dm.prepare(strict=False,
    full_check=full_check)``; ``full_check`` decodes every image completely (cached per file), so
    ``bad_files`` also lists corrupt files a header check misses."""
    t0 = time.perf_counter()
    state = prepared if prepared is not None else dm.prepare(strict=False, full_check=full_check)
    names = state.class_names
    splits = state.splits
    report: dict = {
        "source": dm.source_name,
        "root": str(dm.source.root) if dm.source.root is not None else None,
        "classes": list(names),
        "splits": {},
        "totals": {},
        "groups": {},
        "seed": dm.seed,
        "dedup": dm.dedup,
        "split_file": dm.split_file,
        "split_seed": dm.split_seed,
        "subset": dm.subset.describe(),
    }
    for s in SPLITS:
        counts = class_counts(splits[s], len(names))
        report["splits"][s] = {n: int(c) for n, c in zip(names, counts)}
        report["totals"][s] = len(splits[s])
        report["groups"][s] = len({r.group for r in splits[s] if r.group is not None})
    report["total"] = sum(report["totals"].values())
    unused = state.unused
    report["unused"] = {n: int(c) for n, c in zip(names, class_counts(unused, len(names)))}
    report["total_unused"] = len(unused)
    group_splits: dict[str, set] = {}
    for s in SPLITS:
        for r in splits[s]:
            if r.group is not None:
                group_splits.setdefault(r.group, set()).add(s)
    report["groups_across_splits"] = sum(1 for v in group_splits.values() if len(v) > 1)

    # duplicates
    if dm.source.root is not None:
        from hdkd_lightning.data.dedup import find_duplicates

        if dm.dedup and state.duplicates is not None:
            dup = state.duplicates
        else:
            used = state.records()
            dup = find_duplicates(used, dm.file_checker().hashes(r.path for r in used))
        report["duplicates_across_splits"] = dup.across_splits
        report["duplicates_within_splits"] = dup.within_splits
        report["duplicate_sets"] = len(dup.sets)
        report["duplicate_sets_across_splits"] = dup.sets_across_splits
        report["duplicates_across_splits_kept"] = dup.kept_side_across
        report["duplicate_examples"] = [[r.path for r in s] for s in dup.sets[:5]]
    else:
        report.update(duplicates_across_splits=0, duplicates_within_splits=0, duplicate_sets=0,
                      duplicate_sets_across_splits=0, duplicates_across_splits_kept=0,
                      duplicate_examples=[])
    report["duplicates_removed"] = int(state.duplicates_removed)

    problems = state.problems
    by_kind: dict[str, list] = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p)
    report["bad_files"] = sorted(p.path for p in by_kind.get("unreadable", []))
    report["bad_file_errors"] = {p.path: p.detail for p in by_kind.get("unreadable", [])}
    report["missing_images"] = [f"{p.path}: {p.detail}" for p in by_kind.get("missing_image", [])]
    report["unlisted_images"] = sorted(p.path for p in by_kind.get("unlisted_image", []))
    report["unknown_labels"] = [f"{p.path}: {p.detail}" for p in by_kind.get("unknown_label", [])]

    info = state.file_info
    used_paths = [r.path for s in SPLITS for r in splits[s]]
    sizes = Counter(f"{info[p]['width']}x{info[p]['height']}" for p in used_paths if p in info)
    modes = Counter(str(info[p]["mode"]) for p in used_paths if p in info)
    formats = Counter(str(info[p]["format"]) for p in used_paths if p in info)
    report["image_sizes"] = dict(sizes.most_common(10))
    report["distinct_image_sizes"] = len(sizes)
    report["image_modes"] = dict(modes.most_common())
    report["image_formats"] = dict(formats.most_common())
    report["notes"] = list(state.notes)
    report["time_s"] = round(time.perf_counter() - t0, 2)
    return report


def problem_lines(problems) -> list[str]:
    """``path<TAB>reason`` per bad file or CSV row (``hdkd-data inspect -q``), sorted by path: one line
    each, so ``cut -f1`` gives the paths. A CSV row without its image is ``<csv file>:<line>``."""
    # a tab or line break inside a name or a message would break the one-line-per-file promise
    flat = str.maketrans({"\t": " ", "\n": " ", "\r": " "})
    lines = []
    for p in sorted(problems, key=lambda p: (p.path, p.kind)):
        reason = p.detail or PROBLEM_KINDS.get(p.kind, (p.kind,))[0]
        lines.append(f"{p.path.translate(flat)}\t{str(reason).translate(flat)}")
    return lines


def print_report(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    names = report["classes"]
    t = Table(title=f"{report['source']}  {report['root'] or ''}".strip())
    t.add_column("class")
    for s in SPLITS:
        t.add_column(s, justify="right")
    unused = report.get("total_unused", 0)
    if unused:
        t.add_column("unused", justify="right")
    t.add_column("all", justify="right")
    for n in names:
        row = [report["splits"][s][n] for s in SPLITS] + ([report["unused"][n]] if unused else [])
        t.add_row(n, *map(str, row), str(sum(row)))
    t.add_row("[bold]total", *[f"[bold]{report['totals'][s]}" for s in SPLITS],
              *([f"[bold]{unused}"] if unused else []), f"[bold]{report['total'] + unused}")
    t.add_row("groups", *[str(report["groups"][s]) for s in SPLITS], *([""] if unused else []),
              str(sum(report["groups"].values())))
    if unused:
        t.caption = f"training subset: {report['subset']} (seed {report['seed']}); unused = left out of train"
    console.print(t)
    f = Table(show_header=False, title="checks")
    f.add_row("groups in more than one split", str(report["groups_across_splits"]))
    f.add_row("duplicates across splits (before removal)", str(report["duplicates_across_splits"]))
    f.add_row("  their copies in the kept split (test > val > train)",
              str(report["duplicates_across_splits_kept"]))
    f.add_row("duplicates within splits (before removal)", str(report["duplicates_within_splits"]))
    f.add_row("duplicates removed (data.dedup)", str(report["duplicates_removed"]))
    f.add_row("unreadable files", str(len(report["bad_files"])))
    f.add_row("CSV rows without image", str(len(report["missing_images"])))
    f.add_row("images without CSV row", str(len(report["unlisted_images"])))
    f.add_row("unknown labels", str(len(report["unknown_labels"])))
    f.add_row("image sizes (top)", ", ".join(f"{k}: {v}" for k, v in
                                             list(report["image_sizes"].items())[:4])
              + (f" ({report['distinct_image_sizes']} distinct)" if report["distinct_image_sizes"] > 4 else ""))
    f.add_row("image modes", ", ".join(f"{k}: {v}" for k, v in report["image_modes"].items()))
    f.add_row("time", f"{report['time_s']} s")
    console.print(f)
    for key in ("bad_files", "missing_images", "unlisted_images", "unknown_labels"):
        items = report[key]
        if items:
            console.print(f"[red]{key}[/red] ({len(items)}): " + "; ".join(
                (f"{p}: {report['bad_file_errors'].get(p, '')}" if key == "bad_files" else p)
                for p in items[:5]) + (" ..." if len(items) > 5 else ""))
    for note in report["notes"]:
        console.print(f"[dim]note: {note}")
