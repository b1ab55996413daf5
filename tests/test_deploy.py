"""Deployed forms: BatchNorm folding is exact (within fp32 rounding) and leaves the original alone.
Exported and checkpoint files from elsewhere are read as data: one that carries code is refused and
the code never runs."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

import hdkd_lightning  # noqa: F401
from hdkd_lightning.deploy import count_batchnorms, deploy_student, fold_batchnorm, prepare_teacher
from hdkd_lightning.deploy.folding import fold_bn_conv
from hdkd_lightning.errors import CheckpointError

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


# ------------------------------------------------------------------ files from elsewhere: data, never code

CLASSES = ["a", "b", "c"]


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the stand-in for whatever code a pickle can carry."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_tiny_pt2(folder: Path) -> tuple:
    """A .pt2 of a small teacher written by hdkd-export's own writer (with its model card); returns
    (the file, the network)."""
    from hdkd_lightning.checkpoints.format import build_meta
    from hdkd_lightning.deploy.export import export_network

    torch.manual_seed(0)
    kwargs = {"num_classes": len(CLASSES), "img_size": 32, "depths": [1, 1, 1]}
    net = timm.create_model("hdkd_teacher", **kwargs).eval()
    source = folder / "source.ckpt"
    source.write_bytes(b"only hashed into the model card")
    out = folder / "tiny.pt2"
    export_network(net, build_meta("teacher", "hdkd_teacher", kwargs, CLASSES, 32), "pt2", out, _x(4), "random", source)
    return out, net


def rewrite_pt2(src: Path, dst: Path, edit) -> Path:
    """A copy of a .pt2 archive with ``edit(member, bytes) -> bytes`` applied to every member (member names
    without the archive's folder), and a copy of its model card."""
    from hdkd_lightning.deploy.card import card_path

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename.split("/", 1)[1], zin.read(info.filename)))
    shutil.copy(card_path(src), card_path(dst))
    return dst


def pt2_with_code_in_sample_inputs(src: Path, dst: Path, marker: Path) -> Path:
    """``src`` with its sample inputs replaced by a pickle that creates ``marker`` when unpickled."""
    buf = io.BytesIO()
    torch.save(CreatesFile(marker), buf)
    return rewrite_pt2(src, dst, lambda name, data: buf.getvalue() if name == "data/sample_inputs/model.pt" else data)


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory):
    return write_tiny_pt2(tmp_path_factory.mktemp("exported"))


def test_a_pt2_written_by_this_project_loads_and_predicts(tiny_pt2):
    from hdkd_lightning.deploy.backends import load_predictor

    path, net = tiny_pt2
    predictor = load_predictor(path, device="cpu")
    with torch.no_grad():
        expected = torch.softmax(net(_x(5)), dim=1).numpy()
    assert predictor.class_names == CLASSES
    np.testing.assert_allclose(predictor(_x(5)), expected, atol=1e-5)


def test_a_pt2_whose_sample_inputs_carry_code_is_refused_and_the_code_never_runs(tiny_pt2, tmp_path):
    from hdkd_lightning.deploy.backends import load_predictor

    marker = tmp_path / "code_ran"
    evil = pt2_with_code_in_sample_inputs(tiny_pt2[0], tmp_path / "evil.pt2", marker)
    with pytest.raises(CheckpointError, match="sample inputs") as refused:
        load_predictor(evil, device="cpu")
    assert str(evil) in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()
    # the crafted file does carry code: torch.export.load on its own runs it
    with pytest.raises(Exception):
        torch.export.load(str(evil))
    assert marker.exists()


def _edit_program(change):
    def edit(name, data):
        if name != "models/model.json":
            return data
        program = json.loads(data)
        change(program)
        return json.dumps(program).encode()
    return edit


def _guard_code(marker):
    def change(program):
        program["guards_code"] = [f"open({str(marker)!r}, 'w') is None"]
    return _edit_program(change)


def _shape_expression(marker):
    def change(program):
        dim = next(d for value in program["graph_module"]["graph"]["tensor_values"].values()
                   for d in value["sizes"] if "as_expr" in d)  # the dynamic batch size of a tensor
        dim["as_expr"]["expr_str"] = f"open({str(marker)!r}, 'w') and " + dim["as_expr"]["expr_str"]
    return _edit_program(change)


def _pickled_weight(marker):
    buf = io.BytesIO()
    torch.save(CreatesFile(marker), buf)

    def edit(name, data):
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            next(iter(config["config"].values()))["use_pickle"] = True
            return json.dumps(config).encode()
        return buf.getvalue() if name == "data/weights/weight_0" else data
    return edit


def _graph_target(marker):
    def change(program):
        program["graph_module"]["graph"]["nodes"][-1]["target"] = "torch.os.system"
    return _edit_program(change)


def _spec_importing_a_module(marker):
    """An input spec with a defaultdict whose factory lives in a module beside ``marker`` (on sys.path in
    the test): pytree imports that module, whose import creates ``marker``."""
    module = f"payload_{abs(hash(str(marker)))}"
    (marker.parent / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\nfactory = list\n")

    def change(program):
        context = {"default_factory_module": module, "default_factory_name": "factory", "dict_context": []}
        program["graph_module"]["module_call_graph"][0]["signature"]["in_spec"] = json.dumps(
            [1, {"type": "collections.defaultdict", "context": context, "children_spec": []}])
    return _edit_program(change)


def _compiled_code(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(dst, "a") as archive:
        archive.writestr(f"{zipfile.ZipFile(src).namelist()[0].split('/')[0]}/data/aotinductor/model/model.so",
                         b"\x7fELF")


# (how the archive is changed, what the refusal names, whether torch.export.load alone runs the code)
CRAFTED = {
    "guard code": (_guard_code, "guard code", True),
    "shape expression": (_shape_expression, "shape expression", True),
    "pickled weight": (_pickled_weight, "not a raw tensor", True),
    "input spec": (_spec_importing_a_module, "input or output spec", True),
    "graph target": (_graph_target, "its graph calls 'torch.os.system'", False),
    "compiled code": (None, "data/aotinductor/model/model.so", False),
}


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_every_way_a_pt2_can_carry_code_is_refused(kind, tiny_pt2, tmp_path, monkeypatch):
    from hdkd_lightning.deploy.safe_load import load_pt2

    monkeypatch.syspath_prepend(str(tmp_path))  # where the "input spec" case puts the module it imports
    make, named, torch_runs_it = CRAFTED[kind]
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt2"
    if make is None:
        rewrite_pt2(tiny_pt2[0], evil, lambda name, data: data)
        _compiled_code(tiny_pt2[0], evil)
    else:
        rewrite_pt2(tiny_pt2[0], evil, make(marker))
    with pytest.raises(CheckpointError, match="refused to load") as refused:
        load_pt2(evil)
    assert named in str(refused.value) and str(evil) in str(refused.value)
    assert not marker.exists()
    if torch_runs_it:  # the crafted archive does run its code without the checks
        try:
            torch.export.load(str(evil)).module()(_x(2))
        except Exception:
            pass
        assert marker.exists()


@pytest.mark.parametrize("entry", [
    {"_target_": "pathlib.Path.touch", "self": {"_target_": "pathlib.Path", "_args_": ["MARKER"]}},
    {"_target_": "albumentations.Normalize", "mean": {"_target_": "pathlib.Path.touch",
                                                     "self": {"_target_": "pathlib.Path", "_args_": ["MARKER"]}}},
], ids=["step", "setting"])
def test_a_model_card_naming_code_is_refused(entry, tiny_pt2, tmp_path):
    from hdkd_lightning.deploy.backends import load_predictor
    from hdkd_lightning.deploy.card import card_path

    marker = tmp_path / "code_ran"
    model = tmp_path / "model.pt2"
    shutil.copy(tiny_pt2[0], model)
    card = json.loads(card_path(tiny_pt2[0]).read_text())
    card["preprocessing"]["eval"] = [json.loads(json.dumps(entry).replace("MARKER", str(marker)))]
    card_path(model).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="preprocessing.eval"):
        load_predictor(model, device="cpu").recipe.transform()
    assert not marker.exists()


def _tiny_onnx(path: Path, bias_file: str = "") -> Path:
    """image [N, 3, S, S] -> logits = per-channel mean + bias; the bias inside the file or in ``bias_file``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bias = numpy_helper.from_array(np.array([0.0, 1.0, 2.0], np.float32), "bias")
    if bias_file:
        bias.ClearField("raw_data")
        bias.data_location = TensorProto.EXTERNAL
        bias.external_data.add(key="location", value=bias_file)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]), helper.make_node("Add", ["flat", "bias"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    path.with_name(path.name + ".json").write_text(json.dumps({"class_names": CLASSES, "image_size": 32}))
    return path


def test_an_onnx_model_loads_only_with_every_tensor_inside_it(tmp_path):
    from hdkd_lightning.deploy.backends import load_predictor

    predictor = load_predictor(_tiny_onnx(tmp_path / "plain.onnx"), device="cpu")
    x = _x(2)
    expected = torch.softmax(x.mean(dim=(2, 3)) + torch.tensor([0.0, 1.0, 2.0]), dim=1).numpy()
    np.testing.assert_allclose(predictor(x), expected, atol=1e-5)
    np.array([5.0, 5.0, 5.0], np.float32).tofile(tmp_path / "outside.bin")  # a file beside the model's folder
    (tmp_path / "models").mkdir()
    for location in ("../outside.bin", str(tmp_path / "outside.bin")):
        with pytest.raises(CheckpointError, match="external data file"):
            load_predictor(_tiny_onnx(tmp_path / "models" / "external.onnx", location), device="cpu")


@pytest.mark.parametrize("arch, extra, named", [
    ("hf-hub:someone/model", {}, "hf-hub:someone/model"),
    ("hdkd_teacher", {"checkpoint_path": "WEIGHTS"}, "checkpoint_path"),
    ("hdkd_teacher", {"pretrained_cfg_overlay": {"file": "WEIGHTS"}}, "pretrained_cfg_overlay"),
], ids=["hub", "checkpoint_path", "overlay"])
def test_a_checkpoint_naming_another_network_or_file_is_refused(arch, extra, named, tiny_pt2, tmp_path):
    from hdkd_lightning.checkpoints.format import META_KEY, build_meta
    from hdkd_lightning.deploy.backends import load_predictor

    net = tiny_pt2[1]
    weights = tmp_path / "elsewhere.pth"  # a file the checkpoint points at, outside anything the user passed
    torch.save(net.state_dict(), weights)
    kwargs = json.loads(json.dumps({"num_classes": 3, "img_size": 32, "depths": [1, 1, 1], **extra})
                        .replace("WEIGHTS", str(weights)))
    ckpt = tmp_path / "foreign.ckpt"
    torch.save({META_KEY: build_meta("teacher", arch, kwargs, CLASSES, 32, prefix="net."),
                "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    with pytest.raises(CheckpointError, match="refused") as refused:
        load_predictor(ckpt, device="cpu")
    assert named in str(refused.value) and str(ckpt) in str(refused.value)
