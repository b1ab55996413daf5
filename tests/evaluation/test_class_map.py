"""eval.class_map: the evaluated data's classes tied to the model's."""

from __future__ import annotations

import pytest
import torch

from hdkd_lightning.errors import ConfigError, find_user_error
from hdkd_lightning.evaluation.class_map import resolve_class_map

MODEL = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def test_identical_names_need_no_map():
    m = resolve_class_map(MODEL, MODEL, None, "data=isic2018")
    assert m.identity and m.targets == list(range(7))
    # names differing in case only are the same class
    assert resolve_class_map([c.upper() for c in MODEL], MODEL, None, "x").targets == list(range(7))


def test_a_map_ties_merges_and_leaves_unknown_classes_reported():
    data = ["MEL", "naevus", "blue_naevus", "scar", "BCC"]
    m = resolve_class_map(data, MODEL, {"naevus": "nv", "blue_naevus": "nv"}, "data=image_folder")
    assert m.targets == [4, 5, 5, -1, 1]  # MEL and BCC by name, both naevi to nv, scar unknown
    record = m.describe([10, 20, 3, 7, 5])
    assert record["unknown_to_model"] == {"scar": 7}
    assert record["map"]["scar"] is None and record["map"]["blue_naevus"] == "nv"
    assert record["model_classes_absent_from_data"] == ["akiec", "bkl", "df", "vasc"]
    assert not m.identity


@pytest.mark.parametrize("class_map, words", [
    ({"MELANOMA": "mel"}, ["'MELANOMA' is not a class of data=image_folder", "each key"]),
    ({"MEL": "melanoma"}, ["'melanoma' is not a class of the model", "each value"]),
])
def test_a_map_naming_an_unknown_class_is_refused_in_one_line(class_map, words):
    with pytest.raises(ConfigError) as info:
        resolve_class_map(["MEL", "NV"], MODEL, class_map, "data=image_folder")
    text = str(info.value)
    assert "\n" not in text and text.startswith("eval.class_map:") and all(w in text for w in words)
    assert find_user_error(info.value) is not None  # a user error: one line, exit 2


def test_no_shared_class_asks_for_a_map_ready_to_edit():
    with pytest.raises(ConfigError, match=r"eval.class_map=\{glioma: akiec"):
        resolve_class_map(["glioma", "meningioma"], MODEL, None, "data=brain_tumor")


def test_the_eval_module_scores_data_labels_as_the_model_classes():
    from torch import nn

    from hdkd_lightning.lit.evaluate import EvalModule

    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7))
    module = EvalModule(net, {"class_names": MODEL, "arch": "x"}, label_map=[4, 5, 5, -1, 1])
    batch = {"image": torch.zeros(5, 3, 4, 4), "label": torch.tensor([0, 1, 2, 3, -1]), "path": list("abcde")}
    assert module.test_step(batch, 0)["label"].tolist() == [4, 5, 5, -1, -1]


def test_a_model_class_without_test_images_has_no_sensitivity():
    import warnings

    import numpy as np

    from hdkd_lightning.evaluation.metrics import compute_metrics

    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = compute_metrics(["a", "b", "c"], np.array([0, 1, 0, 1]), probs)  # no image of class c
    assert np.isnan(m["per_class"]["c"]["sensitivity"]) and m["per_class"]["a"]["sensitivity"] == 1.0
    assert m["balanced_accuracy"] == 0.75  # mean over the classes present: (1 + 0.5) / 2
