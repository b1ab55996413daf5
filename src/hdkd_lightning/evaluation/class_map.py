"""Which class of the evaluated data is which class of the model (``hdkd-eval eval.class_map=...``).

A model scored on data it was not trained for (another dataset, another naming) needs each data
class tied to one of the model's classes:

* ``eval.class_map={MEL: mel, NV: nv}`` ties data classes (keys) to model classes (values). Several
  data classes may go to one model class (a finer labelling merged).
* A data class the map does not name goes to the model class of the same name (case-insensitive),
  so identical names need no map at all.
* A data class left without a model class is **unknown to the model**: its images are scored
  (predictions.csv) but carry no label, so no metric counts them; metrics.json, the console and
  report.html say how many there were, per class. A model class no data class goes to is absent
  from the targets (its recall and AUROC undefined), as any class without test images.

A map that names a class the data or the model does not have is refused in one line (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from hdkd_lightning.errors import ConfigError

__all__ = ["ClassMap", "resolve_class_map"]


@dataclass(frozen=True)
class ClassMap:
    """``targets[i]``: the model class index of data class ``i``, -1 when the model does not know it."""

    data_classes: List[str]
    model_classes: List[str]
    targets: List[int]
    given: Dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> bool:
        return self.data_classes == self.model_classes and self.targets == list(range(len(self.model_classes)))

    @property
    def unknown_to_model(self) -> List[str]:
        return [c for c, t in zip(self.data_classes, self.targets) if t < 0]

    @property
    def absent_from_data(self) -> List[str]:
        return [c for i, c in enumerate(self.model_classes) if i not in self.targets]

    def describe(self, data_counts: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """The record written into metrics.json; ``data_counts``: images per data class in the scored split."""
        out: Dict[str, Any] = {
            "map": {c: (self.model_classes[t] if t >= 0 else None) for c, t in zip(self.data_classes, self.targets)},
            "given": dict(self.given),
            "model_classes_absent_from_data": self.absent_from_data,
        }
        unknown = {c: None for c in self.unknown_to_model}
        if data_counts is not None:
            unknown = {c: int(data_counts[i]) for i, c in enumerate(self.data_classes) if self.targets[i] < 0}
        out["unknown_to_model"] = unknown
        return out


def _find(name: str, names: Sequence[str]) -> Optional[int]:
    if name in names:
        return list(names).index(name)
    folded = [i for i, n in enumerate(names) if n.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def resolve_class_map(data_classes: Sequence[str], model_classes: Sequence[str],
                      class_map: Optional[Mapping[str, Any]], where: str) -> ClassMap:
    """The :class:`ClassMap` of the module docstring; ``where`` names the data and checkpoint in errors."""
    data_classes, model_classes = [str(c) for c in data_classes], [str(c) for c in model_classes]
    given = {str(k): str(v) for k, v in (class_map or {}).items()}
    targets = [-1] * len(data_classes)
    for data_name, model_name in given.items():
        i, t = _find(data_name, data_classes), _find(model_name, model_classes)
        if i is None:
            raise ConfigError(f"eval.class_map: {data_name!r} is not a class of {where} (its classes: {data_classes}); "
                              f"each key must be a class of the evaluated data")
        if t is None:
            raise ConfigError(f"eval.class_map: {data_name}: {model_name!r} is not a class of the model (its classes: "
                              f"{model_classes}); each value must be one of them")
        targets[i] = t
    for i, name in enumerate(data_classes):
        if targets[i] < 0:  # not in the map: the model class of the same name, if any
            t = _find(name, model_classes)
            targets[i] = -1 if t is None else t
    if all(t < 0 for t in targets):
        pairs = ", ".join(f"{d}: {m}" for d, m in zip(data_classes, model_classes))
        raise ConfigError(f"no class of {where} ({data_classes}) is a class of the model ({model_classes}); tie them "
                          f"with eval.class_map={{{pairs}}} (data class: model class)")
    return ClassMap(data_classes, model_classes, targets, given)
