"""Evaluation results on the console: one rich table per scored split."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

from hdkd_lightning.evaluation.metrics import PER_CLASS_KEYS

if TYPE_CHECKING:  # annotations only: the import happens where the object is made
    from rich.table import Table

__all__ = ["format_metrics_table", "print_metrics_table"]


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{float(v):.{digits}f}"


def format_metrics_table(metrics: Mapping[str, Any], title: str = "Evaluation") -> "Table":
    """A rich Table: one row per class, then the macro averages; accuracy and balanced
    accuracy in the caption. Undefined values show as ``n/a``."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("class", style="bold")
    for key in PER_CLASS_KEYS:
        table.add_column(key, justify="right")
    for name, row in (metrics.get("per_class") or {}).items():
        table.add_row(str(name), *[_fmt(row.get(k)) for k in PER_CLASS_KEYS])
    table.add_section()
    macro = {"sensitivity": metrics.get("recall_macro"), "ppv": metrics.get("precision_macro"),
             "f1": metrics.get("f1_macro"), "auroc": metrics.get("auroc_macro"), "support": metrics.get("num_samples")}
    table.add_row("macro avg", *[_fmt(macro.get(k)) for k in PER_CLASS_KEYS], style="bold")
    caption = (f"accuracy {_fmt(metrics.get('accuracy'))}   "
               f"balanced accuracy {_fmt(metrics.get('balanced_accuracy'))}   "
               f"images {_fmt(metrics.get('num_samples'))}")
    absent = metrics.get("classes_absent_from_targets") or []
    if absent:
        caption += f"\nabsent from targets (not in balanced accuracy / AUROC): {', '.join(map(str, absent))}"
    table.caption = caption
    return table


def print_metrics_table(metrics: Mapping[str, Any], title: str = "Evaluation", console: Any = None) -> None:
    """Print :func:`format_metrics_table` to ``console`` (a new rich Console by default)."""
    from rich.console import Console

    (console or Console()).print(format_metrics_table(metrics, title))
