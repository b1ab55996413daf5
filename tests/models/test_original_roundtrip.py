"""The original-code loader on freshly made files (other seeds, class counts), no ../shared needed."""

import pickle

import pytest
import timm
import torch

from hdkd_lightning.models import OriginalCheckpointError, load_original_checkpoint
from hdkd_lightning.models.original import _rename


def _original_names(arch):
    # key names exactly as in the shared *_keys.tsv of the original code, regenerated for any depth
    m = timm.create_model(arch, num_classes=3, img_size=64)
    names = []
    for s, stage in enumerate(m.stages):
        for i, _ in enumerate(stage):
            if s == 0:
                names += [f"stage1.{i}.0.weight"] + [f"stage1.{i}.1.{n}" for n in
                                                      ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
            else:
                p = f"stage{s + 1}.{i}."
                if i == 0:
                    names.append(p + "proj.weight")
                for bn in ("conv.norm", "conv.fn.1", "conv.fn.4", "conv.fn.8"):
                    names += [f"{p}{bn}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
                names += [p + "conv.fn.0.weight", p + "conv.fn.3.weight", p + "conv.fn.7.weight",
                          p + "conv.fn.6.spatial_attention.conv1.weight",
                          p + "conv.fn.6.channel_attention.fc.0.weight", p + "conv.fn.6.channel_attention.fc.2.weight"]
    return m, names


@pytest.mark.parametrize("arch", ["hdkd_teacher", "hdkd_student_distilled"])
def test_every_original_conv_key_maps_onto_a_distinct_parameter(arch):
    m, names = _original_names(arch)
    mapped = [_rename(n) for n in names]
    assert None not in mapped and len(set(mapped)) == len(mapped)
    own = set(m.state_dict())
    assert set(mapped) <= own


@pytest.mark.parametrize("seed, classes", [(1, 2), (7, 9)])
def test_roundtrip_through_original_names_reproduces_logits(tmp_path, seed, classes):
    torch.manual_seed(seed)
    src = timm.create_model("hdkd_student_distilled", num_classes=classes, img_size=64).eval()
    for mod in src.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
    sd = src.state_dict()
    _, conv_names = _original_names("hdkd_student_distilled")
    reverse = {_rename(n): n for n in conv_names}
    top = {"dflt.pos_embed": "DFLT_module.pos_embedding", "dflt.cls_token": "DFLT_module.cls_token",
           "dflt.dist_token": "DFLT_module.distill_token", "dflt.norm.weight": "DFLT_module.transformer.norm.weight",
           "dflt.norm.bias": "DFLT_module.transformer.norm.bias", "head.weight": "head_cls.weight",
           "head.bias": "head_cls.bias", "head_dist.weight": "head_distill.weight", "head_dist.bias": "head_distill.bias"}
    for a, b in (("norm_in", "1"), ("proj", "2"), ("norm_out", "3")):
        for n in ("weight", "bias"):
            top[f"dflt.patch_embed.{a}.{n}"] = f"DFLT_module.to_patch_embedding.{b}.{n}"
    for layer in range(3):
        for a, b in (("attn.norm", "0.norm"), ("attn.qkv", "0.to_qkv"), ("attn.proj", "0.to_out.0"),
                     ("mlp.fc1", "1.net.0"), ("mlp.fc2", "1.net.3")):
            for n in ("weight", "bias"):
                top[f"dflt.blocks.{layer}.{a}.{n}"] = f"DFLT_module.transformer.layers.{layer}.{b}.{n}"
    reverse.update(top)
    original = {reverse[k]: v for k, v in sd.items()}
    torch.save(original, tmp_path / "orig.pth")
    loaded = load_original_checkpoint(tmp_path / "orig.pth", "hdkd_student_distilled")
    assert loaded.num_classes == classes and loaded.img_size == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), src(x), atol=1e-6)


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pth", "wb") as f:
        pickle.dump({"stage1.0.0.weight": _Boom()}, f)
    with pytest.raises(OriginalCheckpointError, match="refused to load"):
        load_original_checkpoint(tmp_path / "evil.pth", "hdkd_teacher")
    assert not (tmp_path / "PWNED").exists()
