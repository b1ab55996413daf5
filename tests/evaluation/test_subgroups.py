"""Per-subgroup results of a scored split (evaluation/subgroups.py), their files in an evaluation, and
hdkd-report's subgroup table, on made-up predictions (no network, small bootstrap counts)."""

from __future__ import annotations

import csv
import json
import zlib
from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from hdkd_lightning.evaluation.subgroups import (
    read_subgroups_csv,
    render_subgroup_figure,
    subgroup_columns,
    subgroup_metrics,
    write_subgroups_csv,
)

CLASSES = ["akiec", "bcc", "df"]


def _predictions(n, seed=0, skill=1.0):
    """Labels and probabilities from integer logits: many images share a score, so AUROC meets ties."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.integers(0, 3, (n, 3)).astype(float)
    logits[np.arange(n), labels] += skill * rng.integers(0, 2, n)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def _by_value(result, attribute):
    return {g["value"]: g for g in result["attributes"][attribute]}


def _hand_bootstrap(labels, probs, attribute, value, seed, resamples, level):
    """The documented draws, redone with a loop and scikit-learn on each resample."""
    rng = np.random.default_rng([seed, zlib.crc32(attribute.encode()), zlib.crc32(value.encode())])
    members = [np.flatnonzero(labels == c) for c in range(len(CLASSES))]
    draws = [rng.integers(0, len(m), size=(resamples, len(m))) for m in members]
    stats = {"balanced_accuracy": [], "auroc_macro": [], **{c: [] for c in CLASSES}}
    for b in range(resamples):
        idx = np.concatenate([m[d[b]] for m, d in zip(members, draws)])
        y, p = labels[idx], probs[idx]
        pred = p.argmax(axis=1)
        stats["balanced_accuracy"].append(balanced_accuracy_score(y, pred))
        stats["auroc_macro"].append(np.mean([roc_auc_score(y == c, p[:, c]) for c in range(len(CLASSES))]))
        for c, name in enumerate(CLASSES):
            stats[name].append(np.mean(pred[y == c] == c))
    q = [(1 - level) / 2, (1 + level) / 2]
    return {k: np.quantile(v, q) for k, v in stats.items()}


def test_numbers_equal_sklearn_and_a_hand_written_stratified_bootstrap_with_the_same_draws():
    labels, probs = _predictions(160)
    labels[:6] = -1  # unlabelled: in no group, in no count
    sex = np.array(["female", "male"] * 80, dtype=object)
    sex[10:14] = None  # missing -> "unknown"
    sex[14:16] = ""
    result = subgroup_metrics(CLASSES, labels, probs, {"sex": list(sex)}, min_images=3, resamples=25, seed=5,
                              level=0.9)
    assert (result["min_images"], result["resamples"], result["seed"], result["level"]) == (3, 25, 5, 0.9)
    assert "stratified by true class" in result["method"]
    groups = _by_value(result, "sex")
    assert list(groups) == ["female", "male", "unknown"]
    scored = 0
    for value, g in groups.items():
        inside = (sex == value) if value != "unknown" else np.array([v in (None, "") for v in sex])
        inside &= labels >= 0
        y, p = labels[inside], probs[inside]
        assert g["n"] == inside.sum()
        if g["status"] != "ok":
            continue
        scored += 1
        pred = p.argmax(axis=1)
        assert g["balanced_accuracy"]["estimate"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
        auroc = np.mean([roc_auc_score(y == c, p[:, c]) for c in range(3)])
        assert g["auroc_macro"]["estimate"] == pytest.approx(auroc, abs=1e-12)
        bounds = _hand_bootstrap(y, p, "sex", value, 5, 25, 0.9)
        for key in ("balanced_accuracy", "auroc_macro"):
            assert [g[key]["low"], g[key]["high"]] == pytest.approx(list(bounds[key]), abs=1e-12)
        for c, name in enumerate(CLASSES):
            sens = g["sensitivity"][name]
            assert sens["n"] == (y == c).sum()
            assert sens["estimate"] == pytest.approx(np.mean(pred[y == c] == c), abs=1e-12)
            assert [sens["low"], sens["high"]] == pytest.approx(list(bounds[name]), abs=1e-12)
    assert scored == 2  # female and male; the unknown group (6 images) may lack a class
    json.dumps(result, allow_nan=False)  # JSON-ready


def test_small_groups_have_no_numbers_and_a_group_without_a_class_no_balanced_accuracy():
    labels, probs = _predictions(120, seed=1)
    site = np.array(["ear"] * 10 + ["face"] * 40 + ["back"] * 70, dtype=object)
    labels[10:50] = np.arange(40) % 2  # face: akiec and bcc only, no df
    labels[50:53] = 2  # back: every class
    result = subgroup_metrics(CLASSES, labels, probs, {"site": list(site)}, min_images=15, resamples=20)
    groups = _by_value(result, "site")
    assert list(groups) == ["back", "ear", "face"]
    ear = groups["ear"]
    assert (ear["n"], ear["status"], ear["note"]) == (10, "too_small", "fewer than 15 images")
    assert ear["balanced_accuracy"] is None and ear["auroc_macro"] is None
    assert all(v is None for v in ear["sensitivity"].values())
    face = groups["face"]
    assert (face["n"], face["status"]) == (40, "class_absent")
    assert face["absent_classes"] == ["df"] and face["note"] == "no df in this group"
    assert face["balanced_accuracy"] is None and face["auroc_macro"] is None
    assert face["sensitivity"]["df"] is None
    y, pred = labels[10:50], probs[10:50].argmax(axis=1)
    for c, name in enumerate(CLASSES[:2]):  # the present classes keep their sensitivity, with an interval
        sens = face["sensitivity"][name]
        assert sens["estimate"] == pytest.approx(np.mean(pred[y == c] == c), abs=1e-12)
        assert sens["low"] <= sens["high"] and sens["n"] == 20
    back = groups["back"]
    assert (back["n"], back["status"], back["note"]) == (70, "ok", "")
    assert back["balanced_accuracy"]["low"] <= back["balanced_accuracy"]["high"]


def test_order_unknown_last_unlabelled_left_out_and_resamples_zero():
    labels, probs = _predictions(90, seed=2)
    age = np.array(["10-19", "<5", "5-9", "40-59", "60+"] * 18, dtype=object)
    age[:3] = [None, "", "  "]
    only_unlabelled = np.arange(90) >= 87
    age[only_unlabelled] = "90-99"
    labels[only_unlabelled] = -1
    result = subgroup_metrics(CLASSES, labels, probs, {"age": list(age)}, min_images=5, resamples=0)
    groups = _by_value(result, "age")
    # natural order (5 before 10, the open band "<5" first), "unknown" (None, "", blanks) last; a value held by
    # unlabelled images only is no group
    assert list(groups) == ["<5", "5-9", "10-19", "40-59", "60+", "unknown"]
    assert groups["unknown"]["n"] == 3 and sum(g["n"] for g in groups.values()) == 87
    for g in groups.values():
        if g["status"] == "ok":
            assert g["balanced_accuracy"]["low"] is None and g["balanced_accuracy"]["high"] is None
            inside = (age == g["value"]) & (labels >= 0)
            assert g["balanced_accuracy"]["estimate"] == pytest.approx(
                balanced_accuracy_score(labels[inside], probs[inside].argmax(axis=1)), abs=1e-12)
    with pytest.raises(ValueError, match="'age' has 89 values for 90 images"):
        subgroup_metrics(CLASSES, labels, probs, {"age": list(age)[:-1]})


def test_a_groups_interval_depends_on_its_own_draws_only():
    labels, probs = _predictions(100, seed=3)
    sex = ["female" if i % 3 else "male" for i in range(100)]
    site = ["back" if i % 2 else "face" for i in range(100)]
    alone = subgroup_metrics(CLASSES, labels, probs, {"sex": sex}, min_images=5, resamples=30)
    both = subgroup_metrics(CLASSES, labels, probs, {"site": site, "sex": sex}, min_images=5, resamples=30)
    assert alone["attributes"]["sex"] == both["attributes"]["sex"]
    other = subgroup_metrics(CLASSES, labels, probs, {"sex": sex}, min_images=5, resamples=30, seed=1)
    assert other["attributes"]["sex"] != alone["attributes"]["sex"]


def _ham_like_result(resamples=20):
    """~4 attributes, ~25 rows, every status."""
    labels, probs = _predictions(600, seed=4, skill=2.0)
    rng = np.random.default_rng(4)
    attributes = {
        "sex": rng.choice(["female", "male", None], 600, p=[0.48, 0.48, 0.04]).tolist(),
        "age band": rng.choice(["0-19", "20-39", "40-59", "60-79", "80+"], 600, p=[0.02, 0.28, 0.3, 0.3, 0.1]).tolist(),
        "body site": rng.choice(["back", "lower extremity", "trunk", "face", "upper extremity", "ear", "hand",
                                 "acral", "scalp", "neck"], 600,
                                p=[0.25, 0.2, 0.15, 0.12, 0.12, 0.03, 0.04, 0.01, 0.05, 0.03]).tolist(),
        "diagnosis type": rng.choice(["histo", "follow_up", "consensus", "confocal"], 600,
                                     p=[0.5, 0.35, 0.12, 0.03]).tolist(),
    }
    df_free = np.array(attributes["body site"]) == "scalp"
    labels[df_free & (labels == 2)] = 0  # the scalp group has no df
    return labels, probs, subgroup_metrics(CLASSES, labels, probs, attributes, min_images=30, resamples=resamples)


def test_csv_one_row_per_group_empty_cells_where_undefined(tmp_path):
    _, _, result = _ham_like_result()
    path = write_subgroups_csv(tmp_path / "subgroups.csv", result, CLASSES)
    with open(path, newline="") as fh:
        raw = list(csv.reader(fh))
    assert raw[0] == subgroup_columns(CLASSES)
    assert raw[0][:11] == ["attribute", "value", "n", "status", "note", "balanced_accuracy", "balanced_accuracy_low",
                           "balanced_accuracy_high", "auroc_macro", "auroc_macro_low", "auroc_macro_high"]
    assert raw[0][11:14] == ["sensitivity_akiec", "sensitivity_akiec_low", "sensitivity_akiec_high"]
    groups = [(a, g) for a, gs in result["attributes"].items() for g in gs]
    assert len(raw) == 1 + len(groups)
    rows = read_subgroups_csv(path)
    for (attribute, g), row in zip(groups, rows):
        assert (row["attribute"], row["value"], row["n"], row["status"], row["note"]) == \
            (attribute, g["value"], g["n"], g["status"], g["note"])
        for key in ("balanced_accuracy", "auroc_macro"):
            entry = g[key] or {}
            assert (row[key], row[f"{key}_low"], row[f"{key}_high"]) == \
                (entry.get("estimate"), entry.get("low"), entry.get("high"))  # floats round-trip exactly
        assert row["sensitivity_df"] == (g["sensitivity"]["df"] or {}).get("estimate")
    statuses = {row["status"] for row in rows}
    assert statuses == {"ok", "too_small", "class_absent"}
    small = next(r for r in raw[1:] if r[3] == "too_small")
    assert small[5:] == [""] * (len(raw[0]) - 5)  # no number at all


def _inside(inner, outer, pad=0.5):
    return (inner.x0 >= outer.x0 - pad and inner.x1 <= outer.x1 + pad and inner.y0 >= outer.y0 - pad
            and inner.y1 <= outer.y1 + pad)


def test_forest_plot_rows_labels_legend_and_nothing_overlapping():
    labels, probs, result = _ham_like_result()
    overall = balanced_accuracy_score(labels, probs.argmax(axis=1))
    fig = render_subgroup_figure(result, overall)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax, right = fig.axes
    groups = [(a, g) for a, gs in result["attributes"].items() for g in gs]
    expected = []
    for attribute, gs in result["attributes"].items():
        expected += [attribute] + [f"{g['value']}  (n={g['n']})" for g in gs]
    ticks = ax.get_yticklabels()
    assert [t.get_text() for t in ticks] == expected
    assert [t.get_fontweight() == "bold" for t in ticks] == [t in result["attributes"] for t in expected]
    # a point per scored group, at its balanced accuracy, on its row
    scored = [(expected.index(f"{g['value']}  (n={g['n']})"), g) for _, g in groups if g["balanced_accuracy"]]
    points = next(line for line in ax.get_lines() if line.get_gid() == "subgroup-points")
    assert list(points.get_ydata()) == [y for y, _ in scored]
    assert list(points.get_xdata()) == pytest.approx([g["balanced_accuracy"]["estimate"] for _, g in scored])
    assert [t.get_text() for t in right.get_yticklabels()] == [
        f"{g['balanced_accuracy']['estimate']:.3f} [{g['balanced_accuracy']['low']:.3f}, "
        f"{g['balanced_accuracy']['high']:.3f}]" for _, g in scored]
    # unscored groups: grey text saying why, on their row, no point
    status = [t for t in ax.texts if t.get_gid() == "status-text"]
    unscored = [g for _, g in groups if not g["balanced_accuracy"]]
    assert len(status) == len(unscored) and any(g["status"] == "too_small" for g in unscored)
    for text, g in zip(status, unscored):
        assert text.get_position()[1] == expected.index(f"{g['value']}  (n={g['n']})")
        if g["status"] == "too_small":
            assert text.get_text().startswith(f"n={g['n']}: too few images")
        else:
            assert text.get_text() == f"not scored: no {', '.join(g['absent_classes'])} in this group"
    # the whole test set: a dashed vertical line with its legend entry
    line = next(line for line in ax.get_lines() if line.get_gid() == "whole-test")
    assert line.get_linestyle() == "--" and list(line.get_xdata()) == [overall, overall]
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["group: balanced accuracy, 95% interval",
                                                          f"whole test set ({overall:.3f})"]

    figure_box = fig.bbox
    axes_box = ax.get_window_extent(renderer)
    texts = [*ticks, *right.get_yticklabels(), ax.title, ax.xaxis.label, *status, legend]
    for t in texts:  # everything readable lies inside the figure
        assert _inside(t.get_window_extent(renderer), figure_box), t
    for t in status:  # grey notes inside the plot, between its left edge and the right
        assert _inside(t.get_window_extent(renderer), axes_box), t.get_text()
    for a, b in combinations([t.get_window_extent(renderer) for t in ticks], 2):
        assert not a.overlaps(b)  # row labels do not run into each other
    for t in ticks:  # left labels left of the plot, the numbers right of it
        assert t.get_window_extent(renderer).x1 <= axes_box.x0 + 0.5
    for t in right.get_yticklabels():
        assert t.get_window_extent(renderer).x0 >= axes_box.x1 - 0.5
    assert not legend.get_window_extent(renderer).overlaps(axes_box)
    # more rows, a taller figure
    fewer = {"min_images": 30, "level": 0.95, "attributes": {"sex": result["attributes"]["sex"]}}
    assert render_subgroup_figure(fewer, overall).get_figheight() < fig.get_figheight()


def test_evaluation_artefacts_have_subgroups_only_when_attributes_are_given(tmp_path):
    from hdkd_lightning.evaluation.artefacts import EvaluationOptions, write_evaluation_artefacts

    labels, probs = _predictions(80, seed=6, skill=2.0)
    paths = [f"img/{i:03d}.jpg" for i in range(80)]
    sex = ["female" if i % 2 else "male" for i in range(80)]
    sex[0] = None
    options = EvaluationOptions(bootstrap=15, seed=3, gradcam_per_class=0, subgroup_min_images=20)
    out = tmp_path / "test"
    result = write_evaluation_artefacts(out, CLASSES, paths, labels, probs, options=options,
                                        subgroups={"sex": sex})
    saved = json.loads((out / "metrics.json").read_text())
    expected = subgroup_metrics(CLASSES, labels, probs, {"sex": sex}, min_images=20, resamples=15, seed=3)
    assert saved["subgroups"] == result["subgroups"] == json.loads(json.dumps(expected))
    assert [g["value"] for g in saved["subgroups"]["attributes"]["sex"]] == ["female", "male", "unknown"]
    assert [r["value"] for r in read_subgroups_csv(out / "subgroups.csv")] == ["female", "male", "unknown"]
    assert (out / "subgroups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "<h2>Subgroups</h2>" in page and 'id="subgroups"' in page and 'id="subgroup-table"' in page
    assert ('<tr data-status="too_small">\n<td>sex</td><td>unknown</td><td>1</td>'
            '<td class="muted" colspan="2" style="text-align: left">not scored: fewer than 20 images</td></tr>') in page
    female = saved["subgroups"]["attributes"]["sex"][0]["balanced_accuracy"]
    assert f"{female['estimate']:.3f} [{female['low']:.3f}, {female['high']:.3f}]" in page

    # the same folder evaluated again without attributes: no subgroup files, no section
    again = write_evaluation_artefacts(out, CLASSES, paths, labels, probs, options=options, subgroups={})
    assert again["subgroups"] is None and json.loads((out / "metrics.json").read_text())["subgroups"] is None
    assert not (out / "subgroups.csv").exists() and not (out / "subgroups.png").exists()
    assert "Subgroups" not in (out / "report.html").read_text()


def _fake_run(root, name, arch, seed, groups):
    """A completed run folder as hdkd-report reads it, with a subgroups.csv of made-up groups
    ``{(attribute, value): (n, status, balanced accuracy)}``."""
    from omegaconf import OmegaConf

    run = root / name
    run.mkdir(parents=True)
    cfg = {"seed": seed, "data": {"source": "ham10000", "seed": seed},
           "model": {"_target_": "hdkd_lightning.lit.teacher.TeacherModule", "net": {"arch": arch}}}
    OmegaConf.save(OmegaConf.create(cfg), run / "config_resolved.yaml")
    (run / "run.json").write_text(json.dumps({"status": "completed", "best_score": 0.5}))
    (run / "metrics.json").write_text(json.dumps({"balanced_accuracy": 0.6, "accuracy": 0.7, "f1_macro": 0.6,
                                                  "auroc_macro": 0.8}))
    result = {"attributes": {}}
    for (attribute, value), (n, status, bal) in groups.items():
        number = {"estimate": bal, "low": bal - 0.1, "high": bal + 0.1} if status == "ok" else None
        result["attributes"].setdefault(attribute, []).append(
            {"value": value, "n": n, "status": status, "note": "", "absent_classes": [],
             "balanced_accuracy": number, "auroc_macro": number, "sensitivity": {}})
    write_subgroups_csv(run / "subgroups.csv", result, CLASSES)


def test_report_tables_each_models_subgroups_over_its_seeds(tmp_path):
    from hdkd_lightning.cli.report import main

    runs = tmp_path / "runs"
    made_up = {  # model -> seed -> groups
        "hdkd_teacher": {0: {("sex", "female"): (50, "ok", 0.70), ("sex", "male"): (45, "ok", 0.60),
                             ("site", "ear"): (12, "too_small", None), ("site", "face"): (40, "ok", 0.50)},
                         1: {("sex", "female"): (50, "ok", 0.80), ("sex", "male"): (45, "ok", 0.64),
                             ("site", "ear"): (12, "too_small", None), ("site", "face"): (40, "class_absent", None)}},
        "hdkd_student": {0: {("sex", "female"): (50, "ok", 0.55), ("sex", "male"): (45, "ok", 0.45),
                             ("site", "ear"): (12, "too_small", None), ("site", "face"): (40, "ok", 0.40)},
                         1: {("sex", "female"): (52, "ok", 0.65), ("sex", "male"): (45, "ok", 0.47),
                             ("site", "ear"): (12, "too_small", None), ("site", "face"): (40, "ok", 0.42)}},
    }
    for arch, seeds in made_up.items():
        for seed, groups in seeds.items():
            _fake_run(runs, f"{arch}/seed{seed}", arch, seed, groups)
    out = tmp_path / "report"
    assert main([str(runs), "--out", str(out), "--no-cost", "--resamples", "0"]) == 0

    with open(out / "subgroups.csv", newline="") as fh:
        table = {(r["model"], r["attribute"], r["value"]): r for r in csv.DictReader(fh)}
    assert len(table) == 8
    female = table[("teacher", "sex", "female")]
    assert (female["seeds"], female["status"], female["images"]) == ("2", "ok", "50 50")
    assert float(female["balanced_accuracy_mean"]) == pytest.approx(0.75, abs=1e-12)
    assert float(female["balanced_accuracy_std"]) == pytest.approx(np.std([0.7, 0.8], ddof=1), abs=1e-12)
    assert float(table[("student", "sex", "male")]["balanced_accuracy_mean"]) == pytest.approx(0.46, abs=1e-12)
    # one seed's face group lacks a class: no mean for the teacher there, the student keeps its own
    face = table[("teacher", "site", "face")]
    assert face["status"] == "class_absent" and face["balanced_accuracy_mean"] == ""
    assert float(table[("student", "site", "face")]["balanced_accuracy_mean"]) == pytest.approx(0.41, abs=1e-12)
    assert table[("student", "site", "ear")]["status"] == "too_small"

    md = (out / "subgroups.md").read_text()
    assert "| attribute | value | images | teacher | student |" in md
    assert "| sex | female | 50–52 | 0.750 (2) | 0.600 (2) |" in md
    assert "| site | ear | 12 | too small (2) | too small (2) |" in md
    assert "| site | face | 40 | class absent (2) | 0.410 (2) |" in md
    assert "## Subgroups" in (out / "report.md").read_text() and "[subgroups.md](subgroups.md)" in (
        out / "report.md").read_text()

    # runs without subgroups.csv: no table, and the earlier report's files go
    for f in runs.rglob("subgroups.csv"):
        f.unlink()
    assert main([str(runs), "--out", str(out), "--no-cost", "--resamples", "0"]) == 0
    assert not (out / "subgroups.md").exists() and not (out / "subgroups.csv").exists()
    assert "## Subgroups" not in (out / "report.md").read_text()
