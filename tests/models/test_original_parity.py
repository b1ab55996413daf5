"""Parity with the authors' original code on the shared vectors."""

import json

import pytest
import torch

from hdkd_lightning.losses import FeatureDistillationLoss, HdkdLoss, LogitDistillationLoss
from hdkd_lightning.models import OriginalCheckpointError, checkpoint_filter_fn, load_original_checkpoint
from hdkd_lightning.models.original import read_state_dict

FILES = {"hdkd_teacher": "official_teacher.pth", "hdkd_student": "official_student.pth",
         "hdkd_student_distilled": "official_hdkd.pth"}


@pytest.fixture(scope="module")
def ref(parity_dir):
    expected = torch.load(parity_dir / "expected.pt", weights_only=True)
    meta = json.loads((parity_dir / "expected.json").read_text())
    models = {arch: load_original_checkpoint(parity_dir / f, arch) for arch, f in FILES.items()}
    return expected, meta, models


def test_loaded_models_are_in_eval_mode_with_classes_from_the_file(ref):
    _, meta, models = ref
    for arch, m in models.items():
        assert not m.training
        assert m.num_classes == meta["num_classes"]
        assert sum(p.numel() for p in m.parameters()) == meta["param_counts"][
            {"hdkd_teacher": "teacher", "hdkd_student": "student", "hdkd_student_distilled": "hdkd"}[arch]]


def test_logits_match_the_original(ref):
    e, _, models = ref
    x = e["x"]
    with torch.no_grad():
        assert (models["hdkd_teacher"](x) - e["teacher_logits"]).abs().max() < 1e-4
        assert (models["hdkd_student"](x) - e["student_logits"]).abs().max() < 1e-4
        h = models["hdkd_student_distilled"]
        assert (h(x) - e["hdkd_eval_logits"]).abs().max() < 1e-4
        cls_logits, dist_logits = h.forward_heads(h.forward_features(x))
        assert (cls_logits - e["hdkd_cls_logits"]).abs().max() < 1e-4
        assert (dist_logits - e["hdkd_distill_logits"]).abs().max() < 1e-4


def test_every_loss_value_matches_with_one_forward_per_network(ref):
    e, meta, models = ref
    expected = meta["losses"]
    x, y = e["x"], e["y"]
    with torch.no_grad():
        t_logits, t_feats = models["hdkd_teacher"].forward_intermediates(x, return_logits=True)
        h = models["hdkd_student_distilled"]
        tokens, s_feats = h.forward_intermediates(x)
        c, d = h.forward_heads(tokens)
    got = {
        "logit_soft": LogitDistillationLoss("soft", 0.5, 1.0)(c, d, t_logits, y)["loss_logit"],
        "logit_hard": LogitDistillationLoss("hard", 0.5)(c, d, t_logits, y)["loss_logit"],
        "logit_soft_alpha0.3_tau2": LogitDistillationLoss("soft", 0.3, 2.0)(c, d, t_logits, y)["loss_logit"],
        "feature": FeatureDistillationLoss(exponent=1)(s_feats, t_feats)[0],
        "feature_alpha2": FeatureDistillationLoss(exponent=2)(s_feats, t_feats)[0],
        "total_soft": HdkdLoss(lambda_feat=10)(c, d, s_feats, t_logits, t_feats, y)[0],
        "total_hard": HdkdLoss(LogitDistillationLoss("hard"), lambda_feat=10)(c, d, s_feats, t_logits, t_feats, y)[0],
    }
    assert set(got) == set(expected)
    for key, value in got.items():
        assert float(value) == pytest.approx(expected[key], rel=1e-5), key


def test_wrong_arch_for_a_file_lists_the_offending_keys(parity_dir):
    with pytest.raises(OriginalCheckpointError, match=r"dflt\.dist_token"):
        load_original_checkpoint(parity_dir / "official_student.pth", "hdkd_student_distilled")
    with pytest.raises(OriginalCheckpointError, match=r"not used by HdkdStudent.*dflt\.dist_token.*head_dist"):
        load_original_checkpoint(parity_dir / "official_hdkd.pth", "hdkd_student")
    with pytest.raises(OriginalCheckpointError, match="missing from the file"):
        load_original_checkpoint(parity_dir / "official_teacher.pth", "hdkd_student")


def test_unknown_and_mismatched_keys_are_errors(parity_dir, tmp_path):
    sd = read_state_dict(parity_dir / "official_teacher.pth")
    extra = dict(sd, **{"stage2.0.conv.fn.9.weight": torch.zeros(1), "aux_head.weight": torch.zeros(1)})
    with pytest.raises(OriginalCheckpointError, match=r"2 key\(s\).*stage2\.0\.conv\.fn\.9\.weight.*aux_head"):
        checkpoint_filter_fn(extra)
    bad = dict(sd)
    bad["stage3.1.conv.fn.3.weight"] = torch.zeros(768, 1, 5, 5)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(OriginalCheckpointError, match=r"shape mismatch: stages\.2\.1\.conv_dw\.weight"):
        load_original_checkpoint(tmp_path / "bad.pth", "hdkd_teacher")
    missing = {k: v for k, v in sd.items() if not k.startswith("fn1.")}
    torch.save({"state_dict": missing}, tmp_path / "missing.pth")
    with pytest.raises(OriginalCheckpointError, match=r"missing from the file: fc_hidden\.weight, fc_hidden\.bias"):
        load_original_checkpoint(tmp_path / "missing.pth", "hdkd_teacher")
