"""``report.html``: one self-contained page (every image embedded) that summarises an evaluation.

Sections: headline metrics with 95% confidence intervals; the per-class table (sensitivity,
specificity, PPV, NPV, F1, AUROC, support); the confusion matrix; ROC and precision-recall curves
(side by side, one under the other on a narrow screen); calibration (ECE, temperature, the
reliability diagram); subgroups, when the evaluation had per-image attributes (the forest plot and a
table: balanced accuracy with its interval, or why a group is not scored, and macro AUROC per
value of each attribute); Grad-CAM examples per class, correct and wrong; the definitions. Rendered
with Jinja2 (autoescaped); no external file, script or font.
"""

from __future__ import annotations

import base64
from typing import Any, Mapping, Sequence

__all__ = ["render_report"]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title>
<style>
 body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1150px;
        color: #222; line-height: 1.4; padding: 0 1rem; }
 h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
 table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
 th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 th { background: #f3f3f3; }
 .muted { color: #666; font-size: .85rem; }
 .figures img { max-width: 100%; border: 1px solid #eee; margin: .3rem 0; }
 .pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: .8rem; align-items: start; }
 .pair img { width: 100%; height: auto; margin: 0; }
 .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: .8rem; }
 .ex { border: 1px solid #ddd; padding: .3rem; } .ex img { width: 100%; }
 .ok { color: #1a7f37; } .bad { color: #b42318; }
</style></head>
<body>
<h1>{{ title }}</h1>
{% for text in warnings %}<p class="warning"
 style="color: #b42318; border: 2px solid #b42318; padding: .5rem .8rem; font-weight: bold;">Warning: {{ text }}</p>
{% endfor %}<p class="muted">{{ subtitle }}</p>
{% if data_lines %}<ul id="data-record">{% for line in data_lines %}
<li class="{{ line.cls }}">{{ line.text }}</li>{% endfor %}
</ul>{% endif %}

<h2>Summary</h2>
<table id="summary">
<tr><th>metric</th><th>value</th><th>95% confidence interval</th></tr>
{% for row in summary %}<tr><td>{{ row.name }}</td><td>{{ row.value }}</td><td>{{ row.ci }}</td></tr>
{% endfor %}</table>
<p class="muted">{{ ci_note }}</p>

<h2>Per class (one class vs the rest)</h2>
<table id="per-class">
<tr><th>class</th>{% for c in per_class_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in per_class %}<tr><td>{{ row.name }}</td>{% for v in row.cells %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>

<h2>Confusion matrix</h2>
<div class="figures"><img id="confusion" alt="confusion matrix" src="{{ images['confusion_matrix.png'] }}"></div>

<h2>ROC and precision-recall curves</h2>
<div class="figures pair" id="curves">
<img id="roc" alt="ROC curves" src="{{ images['roc_curves.png'] }}">
<img id="pr" alt="precision-recall curves" src="{{ images['pr_curves.png'] }}">
</div>

<h2>Calibration</h2>
<p>{{ calibration_text }}</p>
<div class="figures"><img id="reliability" alt="reliability diagram" src="{{ images['reliability.png'] }}"></div>
{% if subgroups %}
<h2>Subgroups</h2>
<p>{{ subgroups.reading }}</p>
<div class="figures"><img id="subgroups" alt="balanced accuracy per subgroup" src="{{ images['subgroups.png'] }}"></div>
<table id="subgroup-table">
<tr><th>attribute</th><th>value</th><th>n</th><th>balanced accuracy [{{ subgroups.level }} interval]</th><th>macro AUROC</th></tr>
{% for row in subgroups.rows %}<tr data-status="{{ row.status }}">
<td>{{ row.attribute }}</td><td>{{ row.value }}</td><td>{{ row.n }}</td>
{%- if row.balanced_accuracy %}<td>{{ row.balanced_accuracy }}</td><td>{{ row.auroc }}</td>
{%- else %}<td class="muted" colspan="2" style="text-align: left">{{ row.note }}</td>{% endif %}</tr>
{% endfor %}</table>
<p class="muted">{{ subgroups.method }}.</p>
{% endif %}

<h2>Where the model looks (Grad-CAM)</h2>
{% if examples %}
<p class="muted">Grad-CAM of the predicted class on the last block of the third convolutional stage;
for each true class, the first correctly and wrongly classified test images.</p>
<div class="grid" id="gradcam">
{% for ex in examples %}<div class="ex">
<div class="{{ 'ok' if ex.correct else 'bad' }}">{{ 'correct' if ex.correct else 'wrong' }}:
 true {{ ex.label }}, predicted {{ ex.predicted }} ({{ '%.2f'|format(ex.probability) }})</div>
<img alt="Grad-CAM of {{ ex.path }}" src="{{ ex.src }}"><div class="muted">{{ ex.path }}</div></div>
{% endfor %}</div>
{% else %}<p class="muted">No Grad-CAM examples (report.gradcam_per_class=0, or no labelled image).</p>{% endif %}

<h2>Definitions</h2>
<ul class="muted">
<li>Balanced accuracy: mean per-class sensitivity over the classes present in the targets (ISIC's ranking metric).</li>
<li>Sensitivity = recall = TP / (TP + FN); specificity = TN / (TN + FP); PPV = precision = TP / (TP + FP);
 NPV = TN / (TN + FN), each class against the rest.</li>
<li>Macro F1 and macro AUROC: unweighted means over classes; AUROC is one-vs-rest.</li>
<li>ECE: image-weighted mean of |accuracy - confidence| over {{ bins }} equal-width bins of the top-class probability.</li>
</ul>
</body></html>
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{float(v):.4f}"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_report(metrics: Mapping[str, Any], pngs: Mapping[str, bytes], examples: Sequence[Mapping[str, Any]]) -> str:
    """The HTML text of report.html for ``metrics`` (the content of metrics.json)."""
    from jinja2 import Environment

    from hdkd_lightning.evaluation.metrics import PER_CLASS_KEYS

    ci = metrics.get("confidence_intervals") or {}
    names = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "f1_macro": "macro F1",
             "auroc_macro": "macro AUROC"}
    summary = [{"name": label, "value": _fmt(metrics.get(key)),
                "ci": "n/a" if not ci.get(key) else f"{ci[key][0]:.4f} - {ci[key][1]:.4f}"} for key, label in names.items()]
    summary.append({"name": "images", "value": _fmt(metrics.get("num_samples")), "ci": ""})
    ci_note = (f"Intervals: {ci.get('method', 'none')}, {ci.get('resamples', 0)} resamples, seed {ci.get('seed', '-')}."
               if ci.get("resamples") else "No confidence intervals (report.bootstrap=0).")
    per_class = [{"name": name, "cells": [_fmt(row.get(k)) for k in PER_CLASS_KEYS]}
                 for name, row in (metrics.get("per_class") or {}).items()]
    cal = metrics.get("calibration") or {}
    text = f"Expected calibration error (ECE): {_fmt(cal.get('ece'))}"
    if cal.get("temperature") not in (None, 1.0):
        text += (f" with temperature scaling (T = {cal['temperature']:.3f}, fitted on the validation split); "
                 f"without it {_fmt(cal.get('ece_uncalibrated'))}")
    text += "."
    model = metrics.get("model") or metrics.get("arch") or "model"
    where = ", ".join(str(metrics[k]) for k in ("data", "split") if metrics.get(k))
    subtitle = f"checkpoint {metrics.get('checkpoint', '')} | {metrics.get('num_samples')} images" + \
        (f" | {where}" if where else "")
    env = Environment(autoescape=True)
    data_lines = _data_lines(metrics)
    return env.from_string(_TEMPLATE).render(
        title=f"Evaluation report: {model}", subtitle=subtitle, summary=summary, ci_note=ci_note,
        per_class_columns=[k.upper() if k in ("ppv", "npv") else k for k in PER_CLASS_KEYS], per_class=per_class,
        images={name: _data_uri(data) for name, data in pngs.items()}, calibration_text=text,
        bins=cal.get("bins", 15), examples=[dict(ex, src=_data_uri(ex["png"])) for ex in examples],
        data_lines=data_lines, warnings=list(metrics.get("warnings") or []),
        subgroups=_subgroups(metrics.get("subgroups")) if "subgroups.png" in pngs else None)


def _with_interval(entry: Mapping[str, Any]) -> str:
    text = f"{entry['estimate']:.3f}"
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" [{entry['low']:.3f}, {entry['high']:.3f}]"
    return text


def _subgroups(result: Any) -> Any:
    """The Subgroups section's rows and sentences (None without subgroup results)."""
    if not result or not result.get("attributes"):
        return None
    rows = []
    for attribute, groups in result["attributes"].items():
        for g in groups:
            ba, auc = g.get("balanced_accuracy"), g.get("auroc_macro")
            note = (f"not scored: fewer than {result['min_images']} images" if g["status"] == "too_small"
                    else f"not scored: {g['note']}" if g["status"] == "class_absent" else "")
            rows.append({"attribute": attribute, "value": g["value"], "n": g["n"], "status": g["status"],
                         "balanced_accuracy": _with_interval(ba) if ba else None,
                         "auroc": _with_interval(auc) if auc else "n/a", "note": note})
    level = f"{result.get('level', 0.95):.0%}"
    if result.get("resamples"):
        reading = (f"Each value of each attribute scored on its own test images. The bars are {level} intervals: "
                   f"a group whose bar spans the whole test set's balanced accuracy (dashed line) is not shown to "
                   f"differ from it. Groups with fewer than {result['min_images']} images, or without some class, "
                   f"are not scored: their balanced accuracy would not be comparable.")
    else:
        reading = (f"Each value of each attribute scored on its own test images (no intervals: report.bootstrap=0; "
                   f"small differences may be chance). Groups with fewer than {result['min_images']} images, or "
                   f"without some class, are not scored: their balanced accuracy would not be comparable.")
    return {"rows": rows, "level": level, "reading": reading, "method": str(result.get("method", ""))}


def _data_lines(metrics: Mapping[str, Any]) -> list:
    """What the page says about the evaluated images: their split, external data, images seen in training."""
    lines = []
    record = metrics.get("data_record") or {}
    split = record.get("split") or {}
    if split:
        lines.append({"cls": "muted", "text": f"Trained on data={(record.get('data') or {}).get('name')} "
                      f"(split seed {split.get('seed')}, split fingerprint {split.get('fingerprint')}, "
                      f"{(split.get('counts') or {}).get('train')} training images)."})
    if metrics.get("split_source"):
        lines.append({"cls": "muted", "text": f"Images evaluated: {metrics['split_source']}."})
    if metrics.get("external_data"):
        lines.append({"cls": "bad", "text": "External data: the model was not trained on this dataset's split."})
    class_map = metrics.get("class_map") or {}
    if class_map:
        pairs = ", ".join(f"{d} \u2192 {m}" for d, m in (class_map.get("map") or {}).items() if m is not None)
        lines.append({"cls": "muted", "text": f"Classes of these data scored as the model's (eval.class_map): {pairs}."})
        unknown = class_map.get("unknown_to_model") or {}
        if unknown:
            listed = ", ".join(f"{c} ({n} images)" if n is not None else c for c, n in unknown.items())
            lines.append({"cls": "bad", "text": f"Unknown to the model, left out of every metric: {listed}."})
        if class_map.get("model_classes_absent_from_data"):
            lines.append({"cls": "muted", "text": "Model classes without images here (recall and AUROC undefined): "
                          f"{', '.join(class_map['model_classes_absent_from_data'])}."})
    seen = sum((metrics.get("images_seen_in_training") or {}).values())
    if seen:
        lines.append({"cls": "bad", "text": f"{seen} of the evaluated images were training images of this model: "
                      "their scores are not an estimate of performance on new images."})
    elif metrics.get("images_seen_in_training") is not None:
        lines.append({"cls": "ok", "text": "None of the evaluated images was a training image of this model."})
    if "data_record" in metrics and not metrics["data_record"]:
        lines.append({"cls": "muted", "text": "The checkpoint carries no data record (an earlier version wrote it): "
                      "its split and training images cannot be checked."})
    return lines

