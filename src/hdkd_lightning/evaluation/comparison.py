"""``hdkd-report``: many runs -> one comparison (mean ± std over seeds), as Markdown, CSV and a plot.

Input: any mix of run directories and folders that hold them (``logs/``, a multirun folder, a
study's ``runs/``); every directory with a ``run.json`` or ``config_resolved.yaml`` below them
is a run. Each run contributes its resolved config and its test ``metrics.json``.

Grouping: runs whose configs agree on every *setting* form one row; the seeds (``seed``,
``data.seed``) are what varies inside a row. Settings are the config keys minus bookkeeping
that does not change what is trained (paths, loggers, callbacks, the teacher's file, cache and
worker options, ``task_name``, tags; :data:`IGNORED`). Each row is labelled by

* its **panel**: the dataset (``data.source``) and training-set size (``data.train_per_class``
  or ``data.train_fraction``, "all" when neither is set); the plot has one panel each;
* its **model**: ``teacher`` / ``student`` (a network trained on labels alone), ``hdkd``
  (distillation with feature loss), ``logit-only`` (``model.loss.lambda_feat=0``) or
  ``feature-only`` (``model.loss.kind=none``), followed by the settings that differ between
  rows of the same model in the same panel (e.g. ``lambda_feat=3``).

A distillation run is also told apart by its **teacher**: the settings that differ between the
teachers of the runs compared (e.g. one trained for 60 epochs, the others for 30) become its
settings ``teacher.<key>`` (label ``teacher.max_epochs=60``). The teacher's run is the folder
holding the run's ``model.teacher.resolved.path`` (else ``model.teacher.ckpt_path``), or, for run
folders copied elsewhere, the run among those given whose last folders match it
(``<model>/seed<k>`` at least). A row never silently averages two runs of one seed: such a row
is named under the table (its runs differ in something the report cannot see).

Per row: ``n`` (completed runs), mean and sample standard deviation (``ddof=1``; empty for
n = 1) of test accuracy, balanced accuracy, macro F1 and macro AUROC, the validation score the
best epoch was chosen on, the deployed network's parameters and inference GFLOPs per image
(multiply-adds x 2, at the run's image size). Runs that failed or are unfinished (by
``run.json``, or completed without ``metrics.json``) are listed under the table, never averaged.

**Paired differences** (:mod:`hdkd_lightning.evaluation.paired`): each row against the baseline of
its panel (default: the plain student; ``--baseline <label>``), seed by seed on the same test
images, read from each run's ``predictions.csv``: the per-seed differences in test balanced
accuracy, their mean, a 95% interval from a paired hierarchical bootstrap (seeds, then test
images; 2000 resamples, seed 0) and how many seeds favour each model. Runs without
``predictions.csv``, and pairs of runs tested on different images, are named, not compared.

**Learning curve** (:mod:`hdkd_lightning.evaluation.curve`): when a dataset's runs span more than one
``data.train_per_class``, test balanced accuracy against training images per class (each model's
mean and its seeds) and each model's paired difference to the baseline against the same axis.

**Subgroups** (:func:`subgroup_comparison`): when runs have a ``subgroups.csv`` (an evaluation with
per-image attributes, :mod:`hdkd_lightning.evaluation.subgroups`), per row and per (attribute, value):
the mean over seeds of the group's test balanced accuracy and the number of seeds, or "too small" /
"class absent" when any seed's group has that status (one seed's unscored group makes the mean a
mean of other seeds, which would mislead).

Outputs in ``--out``: ``report.md``, ``report.csv`` (one line per row), ``runs.csv`` (one line per
run, for paired or per-seed analyses), ``report.png`` (balanced accuracy per model: mean ± std
and each seed, on a y-range taken from the data, short model labels whose settings report.md lists;
one panel per dataset / training-set size), and when there is something to
show, ``paired.csv`` + ``paired.png`` (the paired differences), ``learning_curve.png`` and
``subgroups.md`` + ``subgroups.csv`` (the subgroup table).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from hdkd_lightning.checkpoints.runs import read_run_state
from hdkd_lightning.files import atomic_write

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure

__all__ = ["RunResult", "find_runs", "load_run", "build_comparison", "write_comparison", "render_comparison_plot",
           "plot_labels", "subgroup_comparison", "METRICS", "IGNORED"]

#: test metrics reported, with their column titles
METRICS = {"balanced_accuracy": "balanced acc.", "accuracy": "accuracy", "f1_macro": "macro F1",
           "auroc_macro": "macro AUROC"}
#: config keys (and prefixes) that are bookkeeping, not settings
IGNORED = ("seed", "data.seed", "task_name", "tags", "ckpt_path", "train", "test", "paths", "hydra", "logger",
           "callbacks", "model.teacher", "data.root", "data.output_dir", "data.cache", "data.num_workers",
           "data.pin_memory", "data.persistent_workers", "data.eval_batch_size", "trainer.default_root_dir",
           "trainer.enable_progress_bar", "trainer.log_every_n_steps", "model.compile", "model.channels_last",
           "model.teacher_fold_bn", "model.teacher_dtype", "model.nonfinite_loss", "data.on_bad_image")
_PANEL_KEYS = ("data.source", "data.train_per_class", "data.train_fraction")
_MODEL_ORDER = ("teacher", "student", "logit-only", "feature-only", "hdkd")


@dataclass
class RunResult:
    run_dir: Path
    status: str                      # completed | running | failed | unknown | no metrics
    settings: Dict[str, Any]         # flattened config, bookkeeping removed
    metrics: Dict[str, Any] = field(default_factory=dict)
    best_val: Optional[float] = None
    seed: Any = None
    error: str = ""
    teacher_checkpoint: Optional[str] = None  # distillation runs: the teacher's file, as recorded
    data_root: Optional[str] = None  # predictions.csv paths are paired relative to it (paired.py)

    @property
    def usable(self) -> bool:
        return self.status == "completed" and bool(self.metrics)


def _flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(node, list):
        return {prefix[:-1]: json.dumps(node)}
    return {prefix[:-1]: node}


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IGNORED)


def _is_run_dir(d: Path) -> bool:
    return (d / "run.json").is_file() or (d / "config_resolved.yaml").is_file()


def find_runs(paths: Iterable[Path]) -> List[Path]:
    """Run directories at or below ``paths`` (a run's own sub-folders are not searched)."""
    found: List[Path] = []

    def walk(d: Path) -> None:
        if _is_run_dir(d):
            found.append(d)
            return
        for child in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            walk(child)

    for p in paths:
        p = Path(p)
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: not a directory (give run directories or folders holding runs)")
        walk(p)
    return sorted(set(found))


def load_run(run_dir: Path) -> RunResult:
    from omegaconf import OmegaConf

    state = read_run_state(run_dir)
    cfg_file = run_dir / "config_resolved.yaml"
    config = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False) if cfg_file.is_file() else {}
    flat = _flatten(config)
    settings = {k: v for k, v in flat.items() if not _ignored(k)}
    metrics: Dict[str, Any] = {}
    if (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
    status = state.status
    if status == "completed" and not metrics:
        status = "no metrics"
    best = state.data.get("best_score")
    teacher = flat.get("model.teacher.resolved.path") or flat.get("model.teacher.ckpt_path")
    return RunResult(run_dir, status, settings, metrics, None if best is None else float(best),
                     seed=(flat.get("seed"), flat.get("data.seed")), error=str(state.data.get("error") or ""),
                     teacher_checkpoint=str(teacher) if teacher else None,
                     data_root=str(flat["data.root"]) if flat.get("data.root") else None)


def _teacher_run(run: RunResult, runs: Sequence[RunResult], loaded: Dict[Path, Optional[RunResult]]) -> Optional[RunResult]:
    """The run that trained ``run``'s teacher: at its recorded place, or among ``runs`` by matching
    trailing folder names (run folders copied elsewhere keep ``<model>/seed<k>``)."""
    ckpt = Path(run.teacher_checkpoint)
    teacher_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    scored = [(_shared_tail(other.run_dir, teacher_dir), other) for other in runs]
    longest = max((n for n, _ in scored), default=0)
    matches = [other for n, other in scored if n == longest]
    if longest >= 2 and len(matches) == 1:  # the run itself (whole path), or its copy
        return matches[0]
    if teacher_dir not in loaded:
        loaded[teacher_dir] = load_run(teacher_dir) if _is_run_dir(teacher_dir) else None
    return loaded[teacher_dir]


def _shared_tail(a: Path, b: Path) -> int:
    """How many trailing folder names two paths share."""
    n = 0
    for x, y in zip(reversed(a.parts), reversed(b.parts)):
        if x != y:
            break
        n += 1
    return n


def _add_teacher_settings(runs: Sequence[RunResult]) -> None:
    """Give each distillation run, as ``teacher.<key>``, the settings that differ between the teachers."""
    loaded: Dict[Path, Optional[RunResult]] = {}
    teachers = {id(r): _teacher_run(r, runs, loaded) for r in runs if r.teacher_checkpoint}
    found = [t for t in teachers.values() if t is not None]
    keys = sorted({k for t in found for k in t.settings})
    varying = [k for k in keys if len({json.dumps(t.settings.get(k), default=str) for t in found}) > 1]
    for r in runs:
        teacher = teachers.get(id(r))
        if teacher is not None:
            r.settings.update({f"teacher.{k}": teacher.settings.get(k) for k in varying})


def model_name(settings: Dict[str, Any]) -> str:
    target = str(settings.get("model._target_", ""))
    if target.endswith("DistillModule"):
        if str(settings.get("model.loss.kind", "soft")) == "none":
            return "feature-only"
        lam = settings.get("model.loss.lambda_feat", 10.0)
        return "logit-only" if lam is not None and float(lam) == 0.0 else "hdkd"
    arch = str(settings.get("model.net.arch", ""))
    return {"hdkd_teacher": "teacher", "hdkd_student": "student"}.get(arch, arch or target.rsplit(".", 1)[-1])


def _panel(settings: Dict[str, Any]) -> str:
    size = settings.get("data.train_per_class")
    frac = settings.get("data.train_fraction")
    what = f"{size}/class" if size is not None else (f"{float(frac):g} of train" if frac is not None else "all")
    return f"{settings.get('data.source', '?')}, train {what}"


def _short(key: str, keys: Sequence[str]) -> str:
    """The last part of a dotted key, longer when another key shares that last part."""
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
        tail = ".".join(parts[-n:])
        if sum(1 for k in keys if k.endswith("." + tail) or k == tail) <= 1:
            return tail
    return key


def _describe(varying: Sequence[str], settings: Dict[str, Any]) -> str:
    """``key=value`` for the varying settings; a node whose ``_target_`` varies (another optimiser,
    no scheduler) is shown once, by its class name, instead of every key under it."""
    swapped = {k[: -len("._target_")] for k in varying if k.endswith("._target_")}
    parts = []
    for node in sorted(swapped):
        target = settings.get(node + "._target_")
        parts.append(f"{node.rsplit('.', 1)[-1]}={str(target).rsplit('.', 1)[-1] if target else 'none'}")
    rest = [k for k in varying if not any(k.startswith(n + ".") for n in swapped)]
    own = [k for k in rest if not k.startswith("teacher.")]
    of_teacher = [k[len("teacher."):] for k in rest if k.startswith("teacher.")]
    parts += [f"{_short(k, own)}={_value(settings.get(k))}" for k in own]
    parts += [f"teacher.{_short(k, of_teacher)}={_value(settings.get('teacher.' + k))}" for k in of_teacher]
    return " ".join(parts)


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _mean_std(values: List[float]) -> Tuple[Optional[float], Optional[float]]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _network_cost(run_dir: Path, cache: Dict[str, Tuple[int, float]]) -> Tuple[Optional[int], Optional[float]]:
    """Parameters and inference GFLOPs per image of the run's deployed network (from its checkpoint's metadata)."""
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        return None, None
    import timm
    import torch

    import hdkd_lightning.models  # noqa: F401  (registers the architectures)
    from hdkd_lightning.bench.flops import count_flops
    from hdkd_lightning.checkpoints import META_KEY, read_checkpoint
    from hdkd_lightning.checkpoints.format import check_network_spec

    meta = read_checkpoint(ckpt).get(META_KEY) or {}
    key = json.dumps([meta.get("arch"), meta.get("net_kwargs")], sort_keys=True, default=str)
    if key not in cache:
        check_network_spec(meta.get("arch"), meta.get("net_kwargs"), ckpt)  # the file names what timm builds
        net = timm.create_model(meta["arch"], **meta["net_kwargs"]).eval()
        size = int(meta.get("image_size") or meta["net_kwargs"].get("img_size", 224))
        x = torch.zeros(1, int(meta["net_kwargs"].get("in_chans", 3)), size, size)
        with torch.inference_mode():
            flops = count_flops(lambda: net(x))
        cache[key] = (sum(p.numel() for p in net.parameters()), flops / 1e9)
    return cache[key]


def _panel_key(key: str) -> bool:
    """A key that places a run in a panel, its own or its teacher's (the teacher trained on the same data)."""
    return key in _PANEL_KEYS or (key.startswith("teacher.") and key[len("teacher."):] in _PANEL_KEYS)


def build_comparison(runs: List[RunResult], with_cost: bool = True, baseline: Optional[str] = None,
                     resamples: Optional[int] = None) -> Dict[str, Any]:
    """Rows (one per group of runs that differ only in seed), the runs left out, the paired differences
    against ``baseline`` (default: each panel's plain student; ``evaluation/paired.py``) and the learning
    curves (``evaluation/curve.py``)."""
    from hdkd_lightning.evaluation.curve import learning_curves
    from hdkd_lightning.evaluation.paired import RESAMPLES, paired_differences

    _add_teacher_settings(runs)
    usable = [r for r in runs if r.usable]
    keys = sorted({k for r in usable for k in r.settings})
    differing = [k for k in keys if len({json.dumps(r.settings.get(k), default=str) for r in usable}) > 1]
    groups: Dict[Tuple, List[RunResult]] = {}
    for r in usable:
        groups.setdefault(tuple(json.dumps(r.settings.get(k), default=str) for k in differing), []).append(r)

    # label: model name + the settings that differ among groups of that model within one panel
    described: Dict[Tuple, Tuple[str, str]] = {}
    by_panel_model: Dict[Tuple[str, str], List[Tuple]] = {}
    for gkey, members in groups.items():
        s = members[0].settings
        by_panel_model.setdefault((_panel(s), model_name(s)), []).append(gkey)
    for (panel, name), gkeys in by_panel_model.items():
        varying = [k for i, k in enumerate(differing) if k not in _PANEL_KEYS and len({g[i] for g in gkeys}) > 1]
        for g in gkeys:
            s = groups[g][0].settings
            described[g] = (panel, f"{name} {_describe(varying, s)}".strip())

    cost_cache: Dict[str, Tuple[int, float]] = {}
    rows: List[Dict[str, Any]] = []
    repeated: List[str] = []  # rows holding two runs of one seed
    for gkey, members in groups.items():
        panel, label = described[gkey]
        members = sorted(members, key=lambda m: (str(m.seed[0]), str(m.run_dir)))
        row: Dict[str, Any] = {"panel": panel, "model": label, "n": len(members),
                               "seeds": [str(m.seed[0]) for m in members]}
        for metric in METRICS:
            mean, std = _mean_std([m.metrics.get(metric) for m in members])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
            row[f"{metric}_values"] = [m.metrics.get(metric) for m in members]
        row["val_score_mean"], row["val_score_std"] = _mean_std([m.best_val for m in members])
        params, gflops = _network_cost(members[0].run_dir, cost_cache) if with_cost else (None, None)
        row["params"] = params if params is not None else members[0].metrics.get("params")
        row["gflops"] = gflops
        row["runs"] = [str(m.run_dir) for m in members]
        row["data_roots"] = [m.data_root for m in members]
        s = members[0].settings
        row["dataset"], row["train_per_class"] = s.get("data.source"), s.get("data.train_per_class")
        # the same model at another training-set size: every setting but the panel's
        row["line"] = json.dumps([[k, v] for k, v in zip(differing, gkey) if not _panel_key(k)])
        rows.append(row)
        if len(set(row["seeds"])) < len(row["seeds"]):
            repeated.append(f"{panel} | {label}")

    def order(row):
        name = row["model"].split(" ")[0]
        size = row["train_per_class"]  # numerically: 50 before 150 (a learning curve's panels)
        return (str(row["dataset"]), float(size) if isinstance(size, (int, float)) else math.inf, row["panel"],
                _MODEL_ORDER.index(name) if name in _MODEL_ORDER else len(_MODEL_ORDER), row["model"])

    rows.sort(key=order)
    left_out = [{"run": str(r.run_dir), "status": r.status, "error": r.error} for r in runs if not r.usable]
    paired = paired_differences(rows, baseline, RESAMPLES if resamples is None else resamples)
    return {"rows": rows, "left_out": left_out, "differing_settings": differing, "num_runs": len(runs),
            "repeated_seeds": repeated, "paired": paired, "curves": learning_curves(rows, paired),
            "subgroups": subgroup_comparison(rows)}


# -- subgroups --------------------------------------------------------------------------------

def subgroup_comparison(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per row of the comparison and per (attribute, value) of its runs' ``subgroups.csv``: ``seeds`` (runs
    holding the group), ``images`` (the group's size in each of them), ``status`` (``too_small`` or
    ``class_absent`` when any run's group has it, else ``ok``), mean and standard deviation over seeds of
    balanced accuracy (None unless ``ok``), mean macro AUROC, and the per-seed values. Empty when no run
    has a ``subgroups.csv``; a row's runs without one are left out of its groups (``seeds`` says how many
    remain)."""
    from hdkd_lightning.evaluation.subgroups import SUBGROUPS_CSV, read_subgroups_csv, value_order

    out: List[Dict[str, Any]] = []
    for row in rows:
        found: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
        attributes: List[str] = []
        for run in row["runs"]:
            path = Path(run) / SUBGROUPS_CSV
            if not path.is_file():
                continue
            for g in read_subgroups_csv(path):
                if g["attribute"] not in attributes:
                    attributes.append(g["attribute"])
                found.setdefault((g["attribute"], g["value"]), []).append(g)
        keys = sorted(found, key=lambda k: (attributes.index(k[0]), value_order(k[1])))
        for attribute, value in keys:
            groups = found[(attribute, value)]
            statuses = {g["status"] for g in groups}
            status = next((s for s in ("too_small", "class_absent") if s in statuses), "ok")
            scored = status == "ok"
            bal, std = _mean_std([g["balanced_accuracy"] for g in groups]) if scored else (None, None)
            auc = _mean_std([g["auroc_macro"] for g in groups])[0] if scored else None
            out.append({"panel": row["panel"], "model": row["model"], "attribute": attribute, "value": value,
                        "seeds": len(groups), "images": [g["n"] for g in groups], "status": status,
                        "balanced_accuracy_mean": bal, "balanced_accuracy_std": std, "auroc_macro_mean": auc,
                        "balanced_accuracy_values": [g["balanced_accuracy"] for g in groups] if scored else []})
    return out


def _images(counts: Sequence[int]) -> str:
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def _subgroup_markdown(entries: Sequence[Dict[str, Any]], rows: Sequence[Dict[str, Any]]) -> str:
    """subgroups.md: per panel, one line per (attribute, value), one column per model of the panel."""
    from hdkd_lightning.evaluation.subgroups import STATUS_TEXT, value_order

    def md(text: str) -> str:
        return str(text).replace("|", "\\|")

    out = ["# Subgroups", "",
           "Test balanced accuracy per subgroup of the test images (each run's `subgroups.csv`), per model: the mean "
           "over seeds, with the number of seeds in brackets. \"too small\": fewer test images than the "
           "evaluation's `report.subgroup_min_images`, \"class absent\": some class has no image in the group, in "
           "at least one seed's test split; such a group is not scored. \"images\": the group's test images (a "
           "range when the runs' test splits differ). The intervals of each run are in its own `subgroups.csv` "
           "and `report.html`.", ""]
    panels: Dict[str, List[Dict[str, Any]]] = {}
    for e in entries:
        panels.setdefault(e["panel"], []).append(e)
    for panel, items in panels.items():
        models = [r["model"] for r in rows if r["panel"] == panel and any(e["model"] == r["model"] for e in items)]
        cells: Dict[Tuple[str, str], Dict[str, Dict[str, Any]]] = {}
        attributes: List[str] = []
        for e in items:
            cells.setdefault((e["attribute"], e["value"]), {})[e["model"]] = e
            if e["attribute"] not in attributes:
                attributes.append(e["attribute"])
        # one order for the panel, whichever model holds a group
        order = sorted(cells, key=lambda k: (attributes.index(k[0]), value_order(k[1])))
        out += [f"## {panel}", "", "| attribute | value | images | " + " | ".join(md(m) for m in models) + " |",
                "|---|---|---|" + "---|" * len(models)]
        for attribute, value in order:
            by_model = cells[(attribute, value)]
            counts = [n for e in by_model.values() for n in e["images"]]
            texts = []
            for m in models:
                e = by_model.get(m)
                if e is None:
                    texts.append("–")
                elif e["status"] != "ok":
                    texts.append(f"{STATUS_TEXT[e['status']]} ({e['seeds']})")
                else:
                    texts.append(("–" if e["balanced_accuracy_mean"] is None else f"{e['balanced_accuracy_mean']:.3f}")
                                 + f" ({e['seeds']})")
            out.append(f"| {md(attribute)} | {md(value)} | {_images(counts)} | " + " | ".join(texts) + " |")
        out.append("")
    return "\n".join(out)


SUBGROUP_COLUMNS = ("panel", "model", "attribute", "value", "seeds", "images", "status", "balanced_accuracy_mean",
                    "balanced_accuracy_std", "auroc_macro_mean", "balanced_accuracy_values")


def _write_subgroup_csv(fh, entries: Sequence[Dict[str, Any]]) -> None:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(SUBGROUP_COLUMNS)
    for e in entries:
        cells = []
        for c in SUBGROUP_COLUMNS:
            v = e[c]
            if isinstance(v, list):  # per seed, space-separated
                v = " ".join("" if x is None else str(x) for x in v)
            cells.append("" if v is None else v)
        w.writerow(cells)


def _pm(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _markdown(report: Dict[str, Any], figures: Optional[Dict[str, str]] = None) -> str:
    lines = ["| dataset / training set | model | n | " + " | ".join(f"test {t}" for t in METRICS.values())
             + " | val. score | params | GFLOPs/img |",
             "|---|---|---|" + "---|" * len(METRICS) + "---|---|---|"]
    for r in report["rows"]:
        cells = [_pm(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS]
        params = f"{r['params'] / 1e6:.2f} M" if r.get("params") else "–"
        gflops = f"{r['gflops']:.3f}" if r.get("gflops") is not None else "–"
        lines.append(f"| {r['panel']} | {r['model']} | {r['n']} | " + " | ".join(cells)
                     + f" | {_pm(r['val_score_mean'], r['val_score_std'])} | {params} | {gflops} |")
    out = ["# Run comparison", "",
           f"{report['num_runs']} run(s); mean ± sample standard deviation over seeds (n per row). "
           f"Settings that differ between rows: {', '.join(report['differing_settings']) or 'none'}.", "",
           *lines, ""]
    renamed = [(r, short) for r, short in zip(report["rows"], plot_labels(report["rows"])) if short != r["model"]]
    if renamed:  # the plot names rows by model only; the settings that tell them apart are here
        out += ["Labels in report.png:", ""]
        out += [f"- {r['panel']} | {short}: {r['model']}" for r, short in renamed]
        out.append("")
    if report.get("repeated_seeds"):
        out += ["## Rows with two runs of one seed", "",
                "These runs agree on every setting the report reads, yet were trained twice with one seed: "
                "they differ in something it cannot see (a teacher whose run folder is not among the runs given?).", ""]
        out += [f"- {x}" for x in report["repeated_seeds"]]
        out.append("")
    from hdkd_lightning.evaluation.curve import curve_markdown
    from hdkd_lightning.evaluation.paired import paired_markdown

    figures = figures or {}
    if report.get("paired"):
        out += paired_markdown(report["paired"], figures.get("paired"))
    out += curve_markdown(report.get("curves") or {}, figures.get("curve"))
    if report.get("subgroups"):
        out += ["## Subgroups", "",
                "Test balanced accuracy per subgroup of the test images (sex, age band, body site, ...), per model, "
                "mean over seeds: [subgroups.md](subgroups.md) (one table per dataset / training set), "
                "`subgroups.csv` (one line per model and group).", ""]
    if report["left_out"]:
        out += ["## Not included (failed or unfinished)", ""]
        out += [f"- `{x['run']}`: {x['status']}" + (f" ({x['error']})" if x["error"] else "") for x in report["left_out"]]
        out.append("")
    return "\n".join(out)


def plot_labels(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Short labels for the plot, one per row: the model's name, lettered when a panel holds several rows of
    one model (``teacher (a)``); report.md says which settings each letter stands for."""
    names = [r["model"].split(" ")[0] for r in rows]
    count: Dict[Tuple[str, str], int] = {}
    for r, name in zip(rows, names):
        count[(r["panel"], name)] = count.get((r["panel"], name), 0) + 1
    seen: Dict[Tuple[str, str], int] = {}
    labels = []
    for r, name in zip(rows, names):
        key = (r["panel"], name)
        if count[key] == 1:
            labels.append(name)
        else:
            labels.append(f"{name} ({chr(ord('a') + seen.get(key, 0))})")
            seen[key] = seen.get(key, 0) + 1
    return labels


def _y_range(rows: Sequence[Dict[str, Any]]) -> Tuple[float, float]:
    """The panel's y-range from its seeds and mean ± std, with a margin: starting at 0 would flatten
    differences of a few points into bars of equal height."""
    values: List[float] = []
    for r in rows:
        values += [v for v in r["balanced_accuracy_values"] if v is not None]
        mean, std = r["balanced_accuracy_mean"], r["balanced_accuracy_std"] or 0.0
        if mean is not None:
            values += [mean - std, mean + std]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    margin = max(0.02, 0.15 * (hi - lo))
    return max(0.0, lo - margin), min(1.0, hi + margin)


def render_comparison_plot(report: Dict[str, Any]) -> "Figure":
    """``report.png``: per panel, each row's mean ± std (a bar over a y-range chosen from the data, not from 0)
    and its seeds as points, labelled with short model names (:func:`plot_labels`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = plot_labels(report["rows"])
    panels: Dict[str, List[Tuple[str, Dict[str, Any]]]] = {}
    for label, r in zip(labels, report["rows"]):
        panels.setdefault(r["panel"], []).append((label, r))
    n = max(1, len(panels))
    # at most two panels side by side: four in one row made a figure too wide to read on a page
    cols, rows_of_panels = min(n, 2), -(-n // 2)
    width = max(3.6, max((len(v) for v in panels.values()), default=1) * 0.9 + 1.4)
    fig = Figure(figsize=(width * cols, 4.2 * rows_of_panels), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows_of_panels, cols, squeeze=False).ravel())
    for spare in axes[n:]:
        fig.delaxes(spare)
    for ax, (panel, entries) in zip(axes, panels.items()):
        rows = [r for _, r in entries]
        lo, hi = _y_range(rows)
        xs = list(range(len(rows)))
        means = [r["balanced_accuracy_mean"] for r in rows]
        stds = [r["balanced_accuracy_std"] or 0.0 for r in rows]
        shown = [(x, m, s) for x, m, s in zip(xs, means, stds) if m is not None]
        if shown:
            # bars drawn from the axis floor: their height is the mean's distance above it, not from 0
            ax.bar([x for x, _, _ in shown], [m - lo for _, m, _ in shown], bottom=lo, width=0.6,
                   color="#4C72B0", alpha=0.35, gid="mean")
            ax.errorbar([x for x, _, _ in shown], [m for _, m, _ in shown], yerr=[s for _, _, s in shown],
                        fmt="_", markersize=22, color="#1f3b6e", capsize=5, linewidth=1.2)
        for x, r in zip(xs, rows):
            seeds = [v for v in r["balanced_accuracy_values"] if v is not None]
            # spread a little sideways so equal seeds stay visible
            offsets = [0.0] if len(seeds) == 1 else [-0.12 + 0.24 * i / (len(seeds) - 1) for i in range(len(seeds))]
            ax.scatter([x + o for o in offsets], seeds, color="black", s=16, zorder=3, gid="seeds")
        ax.set_xticks(xs, [f"{label}\nn={r['n']}" for label, r in entries], fontsize=8)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_ylim(lo, hi)
        floor = "" if lo == 0.0 else f" (axis from {lo:.2f}, not 0)"
        ax.set_ylabel(f"test balanced accuracy{floor}", fontsize=9)
        ax.set_title(panel, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Test balanced accuracy: mean (top of the bar) ± std over seeds, each seed a dot", fontsize=10)
    return fig


def _plot(report: Dict[str, Any], path: Path) -> None:
    fig = render_comparison_plot(report)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"), binary=True)


def write_comparison(report: Dict[str, Any], out_dir: Path) -> Dict[str, Path]:
    from hdkd_lightning.evaluation.curve import plot_learning_curves
    from hdkd_lightning.evaluation.paired import plot_paired, write_paired_csv

    out_dir = Path(out_dir)
    # the paired table and the curve exist only when there is something to show
    comparisons = bool(report.get("paired") and report["paired"]["comparisons"])
    figures = {**({"paired": "paired.png"} if comparisons else {}),
               **({"curve": "learning_curve.png"} if report.get("curves") else {})}
    md = atomic_write(out_dir / "report.md", lambda fh: fh.write(_markdown(report, figures)))
    columns = ["panel", "model", "n", "seeds"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")] + \
              ["val_score_mean", "val_score_std", "params", "gflops"]

    def write_rows(fh) -> None:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in report["rows"]:
            w.writerow(["" if r.get(c) is None else (" ".join(r[c]) if c == "seeds" else r[c]) for c in columns])

    def write_runs(fh) -> None:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["panel", "model", "seed", "run", *METRICS])
        for r in report["rows"]:
            for run, seed, *vals in zip(r["runs"], r["seeds"], *[r[f"{m}_values"] for m in METRICS]):
                w.writerow([r["panel"], r["model"], seed, run, *["" if v is None else v for v in vals]])

    files = {"markdown": md, "csv": atomic_write(out_dir / "report.csv", write_rows),
             "runs": atomic_write(out_dir / "runs.csv", write_runs)}
    png = out_dir / "report.png"
    _plot(report, png)
    files["plot"] = png
    if comparisons:
        files["paired"] = atomic_write(out_dir / "paired.csv", lambda fh: write_paired_csv(fh, report["paired"]))
        files["paired_plot"] = plot_paired(report["paired"], out_dir / figures["paired"])
    if report.get("curves"):
        files["curve"] = plot_learning_curves(report["curves"], out_dir / figures["curve"])
    if report.get("subgroups"):
        text = _subgroup_markdown(report["subgroups"], report["rows"])
        files["subgroups"] = atomic_write(out_dir / "subgroups.md", lambda fh: fh.write(text))
        files["subgroups_csv"] = atomic_write(out_dir / "subgroups.csv",
                                              lambda fh: _write_subgroup_csv(fh, report["subgroups"]))
    # left by an earlier report, now untrue
    for name in ("paired.csv", "paired.png", "learning_curve.png", "subgroups.md", "subgroups.csv"):
        if out_dir / name not in files.values():
            (out_dir / name).unlink(missing_ok=True)
    return files
