import pytest
import timm
import torch

import hdkd_lightning  # noqa: F401  (registers the models)
from hdkd_lightning.models import HdkdStudent, HdkdTeacher

ARCHS = ["hdkd_teacher", "hdkd_student", "hdkd_student_distilled"]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("arch, classes, expected", [
    ("hdkd_teacher", 4, 3_948_290), ("hdkd_teacher", 7, 3_948_677),
    ("hdkd_student", 4, 3_724_206), ("hdkd_student", 7, 3_724_977),
    ("hdkd_student_distilled", 4, 3_725_746), ("hdkd_student_distilled", 7, 3_727_288),
])
def test_parameter_counts_equal_the_original(arch, classes, expected):
    assert n_params(timm.create_model(arch, num_classes=classes)) == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_stage_shapes_at_224(arch):
    m = timm.create_model(arch, num_classes=4).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = m.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        logits = m(x)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 112, 112), (1, 96, 56, 56), (1, 192, 28, 28)]
    assert logits.shape == (1, 4)


@pytest.mark.parametrize("arch", ARCHS)
def test_small_images_one_pass_gives_logits_and_stages(arch):
    m = timm.create_model(arch, num_classes=3, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, feats = m.forward_intermediates(x, return_logits=True)
        assert torch.allclose(logits, m(x), atol=1e-6)
        features, feats2 = m.forward_intermediates(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (96, 16, 16), (192, 8, 8)]
    assert torch.equal(features, m.forward_features(x))
    assert all(torch.equal(a, b) for a, b in zip(feats, feats2))
    # int indices take the last n stages
    last = m.forward_intermediates(x, indices=1, intermediates_only=True)
    assert len(last) == 1 and last[0].shape[1] == 192


def test_distilled_student_returns_two_heads_in_training_and_mean_in_eval():
    m = timm.create_model("hdkd_student_distilled", num_classes=5, img_size=64)
    x = torch.randn(2, 3, 64, 64)
    m.train()
    torch.manual_seed(0)
    out = m(x)
    assert isinstance(out, tuple) and len(out) == 2 and out[0].shape == out[1].shape == (2, 5)
    m.eval()
    with torch.no_grad():
        cls_logits, dist_logits = m.forward_heads(m.forward_features(x))
        assert torch.allclose(m(x), (cls_logits + dist_logits) / 2)


def test_configurable_architecture():
    m = HdkdStudent(num_classes=2, in_chans=1, img_size=128, depths=(1, 1, 2), widths=(16, 32, 48),
                    block_type="mbconv", stem_stride=4, embed_dim=64, dflt_depth=1, num_heads=2, head_dim=16,
                    mlp_ratio=2, distilled=True).eval()
    feats = m.forward_intermediates(torch.randn(1, 1, 128, 128), intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 32, 32), (32, 16, 16), (48, 8, 8)]
    assert m(torch.randn(1, 1, 128, 128)).shape == (1, 2)
    t = HdkdTeacher(num_classes=2, in_chans=1, img_size=128, depths=(1, 1, 2), widths=(16, 32, 48),
                    block_type="mbconv", stem_stride=4).eval()
    assert [f.shape for f in t.forward_intermediates(torch.randn(1, 1, 128, 128), intermediates_only=True)] == \
        [f.shape for f in feats]


@pytest.mark.parametrize("kwargs, match", [
    (dict(img_size=100), r"image size 100 .*multiples of 16: 16, 32, 48"),
    (dict(img_size=72), r"multiples of 16"),
    (dict(img_size=48, stem_stride=4), r"multiples of 32"),
    (dict(block_type="resnet"), r"block_type must be one of"),
    (dict(stem_stride=3), r"stem_stride must be 2"),
    (dict(depths=(2, 2)), r"3 entries"),
])
def test_invalid_student_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model("hdkd_student", **kwargs)


def test_teacher_accepts_multiples_of_its_stride_only():
    assert timm.create_model("hdkd_teacher", img_size=72) is not None
    with pytest.raises(ValueError, match="multiples of 8"):
        timm.create_model("hdkd_teacher", img_size=70)


def test_pretrained_request_points_to_the_loader():
    with pytest.raises(ValueError, match="load_original_checkpoint"):
        timm.create_model("hdkd_teacher", pretrained=True)



def test_cbam_max_pooling_gradient_equals_amax_gradient_without_ties():
    """CBAM's max pools take the index-based backward; without ties it is the same gradient as amax's."""
    import torch.nn.functional as F

    from hdkd_lightning.models.blocks import Cbam

    torch.manual_seed(0)
    cbam = Cbam(32)
    x = torch.randn(2, 32, 9, 9, requires_grad=True)
    grad_out = torch.randn(2, 32, 9, 9)
    (g_ours,) = torch.autograd.grad(cbam(x), x, grad_out)

    def reference(x):  # the same block written with amax everywhere
        ca = cbam.channel
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=0)
        h = F.linear(ca.act(F.linear(pooled, ca.fc1.weight.flatten(1))), ca.fc2.weight.flatten(1))
        y = torch.sigmoid(h[:2] + h[2:])[:, :, None, None] * x
        s = torch.cat([y.mean(dim=1, keepdim=True), y.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(cbam.spatial.conv(s)) * y + x
    (g_ref,) = torch.autograd.grad(reference(x), x, grad_out)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(cbam(x), reference(x), rtol=0, atol=0)
