"""report.html says which images were evaluated: the recorded split, external data, images seen in training."""

from hdkd_lightning.evaluation.report_page import _data_lines


def _texts(metrics):
    return [(line["cls"], line["text"]) for line in _data_lines(metrics)]


def test_the_page_says_external_data_and_counts_training_images():
    lines = _texts({"data_record": {"data": {"name": "ham10000"}, "split": {"seed": 0, "fingerprint": "ab",
                                                                            "counts": {"train": 7}}},
                    "split_source": "data=isic2018 as configured", "external_data": True,
                    "images_seen_in_training": {"test": 12}})
    assert ("bad", "External data: the model was not trained on this dataset's split.") in lines
    assert any(cls == "bad" and text.startswith("12 of the evaluated images were training images") for cls, text in lines)
    own = _texts({"data_record": {"split": {"seed": 0}}, "split_source": "the split recorded in the checkpoint",
                  "external_data": False, "images_seen_in_training": {"test": 0}})
    assert ("ok", "None of the evaluated images was a training image of this model.") in own
    assert not any(cls == "bad" for cls, _ in own)
    old = _texts({"data_record": None, "external_data": None})
    assert any("no data record" in text for _, text in old)


def test_the_page_says_which_classes_were_mapped_and_which_the_model_does_not_know():
    from hdkd_lightning.evaluation.class_map import resolve_class_map

    record = resolve_class_map(["MEL", "naevus", "scar"], ["mel", "nv", "bcc"], {"naevus": "nv"}, "x").describe([4, 9, 3])
    lines = _texts({"class_map": record, "external_data": True})
    assert ("muted", "Classes of these data scored as the model's (eval.class_map): MEL \u2192 mel, naevus \u2192 nv.") in lines
    assert ("bad", "Unknown to the model, left out of every metric: scar (3 images).") in lines
    assert any("bcc" in text and "undefined" in text for _, text in lines)
