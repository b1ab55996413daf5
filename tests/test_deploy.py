"""Deployed forms: BatchNorm folding is exact (within fp32 rounding) and leaves the original alone."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import hdkd_lightning  # noqa: F401
from hdkd_lightning.deploy import count_batchnorms, deploy_student, fold_batchnorm, prepare_teacher
from hdkd_lightning.deploy.folding import fold_bn_conv

FP32_TOL = 1e-4  # rtol = atol for logits and stage outputs (measured: ~1e-6)
BF16_TOL = 0.05  # bf16 weights and activations: 3 significant digits, through 20+ layers


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return _randomise_bn(timm.create_model("hdkd_teacher", num_classes=4, img_size=32, depths=(2, 2, 2)))


@pytest.fixture(scope="module")
def hdkd():
    torch.manual_seed(0)
    return _randomise_bn(timm.create_model("hdkd_student_distilled", num_classes=4, img_size=32), 1)


def _x(n=3):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_fold_removes_every_batchnorm_and_matches(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    folded = fold_batchnorm(teacher)
    assert count_batchnorms(teacher) > 0 and count_batchnorms(folded) == 0
    for k, v in teacher.state_dict().items():  # the argument is untouched
        assert torch.equal(v, before[k])
    x = _x()
    with torch.no_grad():
        ref_logits, ref_feats = teacher.forward_intermediates(x, return_logits=True)
        logits, feats = folded.forward_intermediates(x, return_logits=True)
    torch.testing.assert_close(logits, ref_logits, rtol=FP32_TOL, atol=FP32_TOL)
    for a, b in zip(feats, ref_feats):
        torch.testing.assert_close(a, b, rtol=FP32_TOL, atol=FP32_TOL)


def test_prepare_teacher_frozen_channels_last(teacher):
    t = prepare_teacher(teacher)
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    w = t.stages[1][0].conv_pw.weight
    assert w.is_contiguous(memory_format=torch.channels_last)
    x = _x().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(t(x), teacher(_x()), rtol=FP32_TOL, atol=FP32_TOL)


def test_deploy_student_matches_trained_model(hdkd):
    d = deploy_student(hdkd)
    assert count_batchnorms(d) == 0
    with torch.no_grad():
        ref = hdkd(_x())  # eval: mean of the class and distillation heads
        torch.testing.assert_close(d(_x().contiguous(memory_format=torch.channels_last)), ref,
                                   rtol=FP32_TOL, atol=FP32_TOL)
        low = deploy_student(hdkd, dtype=torch.bfloat16)
        out = low(_x().to(torch.bfloat16)).float()
    assert low.head.weight.dtype == torch.bfloat16
    assert (out - ref).abs().max() <= BF16_TOL * (1 + ref.abs().max())


def test_prenorm_only_folds_into_unpadded_conv():
    bn = _randomise_bn(nn.BatchNorm2d(4))
    with pytest.raises(ValueError):
        fold_bn_conv(bn, nn.Conv2d(4, 8, 3, padding=1))
    conv = nn.Conv2d(4, 8, 1, stride=2, bias=False)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fold_bn_conv(bn, conv)(x), conv(bn(x)), rtol=1e-5, atol=1e-5)


def test_generic_sequential_conv_bn():
    seq = _randomise_bn(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()))
    folded = fold_batchnorm(seq)
    assert isinstance(folded[1], nn.Identity)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), seq(x), rtol=1e-5, atol=1e-5)
