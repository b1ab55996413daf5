import pytest
import timm
import torch
import torch.nn.functional as F

import hdkd_lightning  # noqa: F401
from hdkd_lightning.losses import FeatureDistillationLoss, HdkdLoss, LogitDistillationLoss


def test_soft_kd_normalisations_differ_by_the_class_count():
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    numel = LogitDistillationLoss("soft", normalization="numel").distillation(s, t)
    batchmean = LogitDistillationLoss("soft", normalization="batchmean").distillation(s, t)
    assert batchmean == pytest.approx(float(numel) * 5, rel=1e-6)
    ref = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")
    assert batchmean == pytest.approx(float(ref), rel=1e-5)
    none = LogitDistillationLoss("none")(s, None, None, y)
    assert none["loss_logit"] == pytest.approx(float(F.cross_entropy(s, y)))


def test_alpha_weights_label_and_distillation_terms():
    torch.manual_seed(1)
    c, d, t, y = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 2])
    out = LogitDistillationLoss("hard", alpha=0.25)(c, d, t, y)
    assert out["loss_logit"] == pytest.approx(float(0.75 * out["loss_ce"] + 0.25 * out["loss_kd"]))
    assert out["loss_kd"] == pytest.approx(float(F.cross_entropy(d, t.argmax(1))))


def test_feature_weights_from_exponent_or_explicit():
    a = [torch.ones(1, 2, 2, 2) * v for v in (1.0, 2.0, 3.0)]
    b = [torch.zeros(1, 2, 2, 2)] * 3
    total, parts = FeatureDistillationLoss(exponent=1)(a, b)
    assert float(total) == pytest.approx(1 * 1 + 2 * 4 + 3 * 9)
    assert float(parts["loss_feat_s3"]) == pytest.approx(9)
    total2, _ = FeatureDistillationLoss(weights=[0, 0, 1])(a, b)
    assert float(total2) == pytest.approx(9)
    with pytest.raises(ValueError, match="2 entries for 3 distilled stages"):
        FeatureDistillationLoss(weights=[1, 1])(a, b)


def test_stage_shape_mismatch_names_the_stage_and_both_shapes():
    s = [torch.zeros(1, 4, 8, 8), torch.zeros(1, 8, 4, 4)]
    t = [torch.zeros(1, 4, 8, 8), torch.zeros(1, 8, 2, 2)]
    with pytest.raises(ValueError, match=r"stage 2: student output \(1, 8, 4, 4\).*teacher output \(1, 8, 2, 2\)"):
        FeatureDistillationLoss()(s, t)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="medium"), "kind must be one of"), (dict(alpha=1.5), "alpha"),
    (dict(tau=0), "tau"), (dict(normalization="mean"), "normalization"),
])
def test_invalid_loss_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LogitDistillationLoss(**kwargs)


def test_gradients_reach_the_student_and_never_the_teacher():
    torch.manual_seed(0)
    teacher = timm.create_model("hdkd_teacher", num_classes=3, img_size=32).eval().requires_grad_(False)
    student = timm.create_model("hdkd_student_distilled", num_classes=3, img_size=32).train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    with torch.no_grad():
        t_logits, t_feats = teacher.forward_intermediates(x, return_logits=True)
    tokens, s_feats = student.forward_intermediates(x)
    c, d = student.forward_heads(tokens)
    total, parts = HdkdLoss()(c, d, s_feats, t_logits, t_feats, y)
    assert {"loss", "loss_logit", "loss_ce", "loss_kd", "loss_feat", "loss_feat_s1"} <= set(parts)
    total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    # even a teacher with grads enabled gets none: teacher tensors are detached in the loss
    teacher.requires_grad_(True)
    t_logits, t_feats = teacher.forward_intermediates(x, return_logits=True)
    tokens, s_feats = student.forward_intermediates(x)
    c, d = student.forward_heads(tokens)
    HdkdLoss()(c, d, s_feats, t_logits, t_feats, y)[0].backward()
    assert all(p.grad is None for p in teacher.parameters())
