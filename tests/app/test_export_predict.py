"""Shipping a trained network: hdkd-export (ONNX, pt2, timm, int8) and hdkd-predict on every backend."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _export(runner, ckpt, fmt, out, *extra, check=True):
    return runner.run("export", [f"ckpt_path={ckpt}", f"format={fmt}", f"output={out}", *extra], check=check)


def _probs(path):
    with open(path) as fh:
        return {r["path"]: [float(v) for k, v in r.items() if k.startswith("prob_")] for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def hdkd_exports(runner, folder_runs, image_folder, tmp_path_factory):
    """The HDKD checkpoint exported once in every format, parity checked on real test images."""
    out = tmp_path_factory.mktemp("exports")
    files = {"onnx": out / "hdkd.onnx", "pt2": out / "hdkd.pt2", "timm": out / "hdkd.pth"}
    for fmt, path in files.items():
        _export(runner, folder_runs["hdkd"], fmt, path, "data=image_folder", f"data.root={image_folder}")
    return files


def _reference(ckpt, x):
    from hdkd_lightning.checkpoints import network_from_checkpoint

    net, meta = network_from_checkpoint(ckpt)
    with torch.no_grad():
        return net(x), meta


def test_every_format_reproduces_the_network_and_carries_a_card(folder_runs, hdkd_exports):
    x = torch.randn(3, 3, 32, 32)
    ref, meta = _reference(folder_runs["hdkd"], x)
    for fmt, path in hdkd_exports.items():
        card = json.loads(path.with_name(path.name + ".json").read_text())
        assert card["format"] == fmt and card["arch"] == meta["arch"] and card["image_size"] == 32
        assert card["class_names"] == ["benign", "malignant", "other"]
        assert card["parity"]["max_abs_logit_diff"] < 1e-4 and "test images of data=image_folder" in \
            card["parity"]["inputs"]
        assert card["source_checkpoint"]["sha256"] == hashlib.sha256(folder_runs["hdkd"].read_bytes()).hexdigest()
        assert card["test_metrics"]["balanced_accuracy"] is not None
        assert card["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
        assert card["preprocessing"]["resize"].startswith("to 32x32") and card["preprocessing"]["interpolation"]
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(hdkd_exports["onnx"]))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    assert not [n.op_type for n in model.graph.node if n.op_type == "BatchNormalization"]  # the folded network
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    got = ort.InferenceSession(str(hdkd_exports["onnx"])).run(None, {"image": x.numpy()})[0]  # batch 3: dynamic
    assert abs(torch.as_tensor(got) - ref).max() < 1e-4
    with torch.no_grad():
        assert abs(torch.export.load(str(hdkd_exports["pt2"])).module()(x) - ref).max() < 1e-4
    # timm users: import hdkd_lightning, then timm.create_model(..., checkpoint_path=...)
    import timm

    loaded = timm.create_model(meta["arch"], checkpoint_path=str(hdkd_exports["timm"]), **meta["net_kwargs"]).eval()
    with torch.no_grad():
        assert abs(loaded(x) - ref).max() < 1e-5


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_teacher_and_student_export_to_onnx_and_pt2_within_parity(runner, folder_runs, tmp_path, kind):
    import onnxruntime as ort

    out = tmp_path / f"{kind}.onnx"
    _export(runner, folder_runs[kind], "onnx", out)
    x = torch.randn(4, 3, 32, 32)
    ref, _ = _reference(folder_runs[kind], x)
    got = ort.InferenceSession(str(out)).run(None, {"image": x.numpy()})[0]
    assert abs(torch.as_tensor(got) - ref).max() < 1e-4
    assert json.loads((tmp_path / f"{kind}.onnx.json").read_text())["parity"]["inputs"].startswith("16 random")
    pt2 = tmp_path / f"{kind}.pt2"
    _export(runner, folder_runs[kind], "pt2", pt2)
    with torch.no_grad():
        assert abs(torch.export.load(str(pt2)).module()(x) - ref).max() < 1e-4


def test_pt2_loads_where_this_package_cannot_be_imported(hdkd_exports):
    out = hdkd_exports["pt2"]
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'hdkd_lightning':
            raise ImportError('hdkd_lightning is blocked in this process')
sys.meta_path.insert(0, Block())
import torch
m = torch.export.load({str(out)!r}).module()
y = m(torch.zeros(5, 3, 32, 32))
assert 'hdkd_lightning' not in sys.modules
print('shape', tuple(y.shape))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "shape (5, 3)" in proc.stdout


def test_predict_with_each_backend_equals_eval(runner, folder_runs, hdkd_exports, image_folder, tmp_path):
    ckpt = folder_runs["hdkd"]
    eval_dir = tmp_path / "eval"
    runner.run("evaluate", [f"ckpt_path={ckpt}", "data=image_folder", f"data.root={image_folder}",
                            "data.num_workers=0", "trainer=cpu", f"hydra.run.dir={eval_dir}"])
    reference = _probs(eval_dir / "predictions.csv")
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    for model, device in ((ckpt, "cpu"), (hdkd_exports["onnx"], "cpu"), (hdkd_exports["pt2"], "auto")):
        out = tmp_path / f"pred_{model.suffix[1:]}.csv"
        summary = tmp_path / f"pred_{model.suffix[1:]}.json"
        runner.run("predict", [f"ckpt_path={model}", f"input={image_folder / 'test'}", f"output={out}",
                               f"device={device}", "topk=2", f"json={summary}", "batch_size=5"])
        got = _probs(out)
        assert set(got) == set(reference) and len(got) == 18
        for path, probs in reference.items():
            assert got[path] == pytest.approx(probs, abs=1e-4), (model, path)
        with open(out) as fh:
            row = next(csv.DictReader(fh))
        # the first choice is `predicted` (no top1 column repeating it), its probability predicted_prob
        assert "top1" not in row and float(row["predicted_prob"]) == float(row[f"prob_{row['predicted']}"])
        assert float(row["predicted_prob"]) >= float(row["top2_prob"])
        assert row["label"] == Path(row["path"]).parent.name  # test/<class>/*.png: labelled from the folder
        info = json.loads(summary.read_text())
        assert info["summary"]["images"] == 18 and 0 <= info["summary"]["outside_network_share"] <= 1
        assert info["summary"]["device"].startswith(auto if device == "auto" else device)
        assert len(info["predictions"][0]["top"]) == 2


def test_predict_refuses_cuda_without_a_gpu_and_a_model_without_its_card(runner, folder_runs, image_folder, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = runner.run("predict", [f"ckpt_path={folder_runs['student']}", f"input={image_folder / 'test'}",
                                  "device=cuda", f"output={tmp_path / 'x.csv'}"], check=False)
    assert proc.returncode == 2 and "device=cuda but no CUDA GPU is visible" in proc.stderr + proc.stdout
    _export(runner, folder_runs["student"], "onnx", tmp_path / "s.onnx")
    (tmp_path / "s.onnx.json").unlink()
    proc = runner.run("predict", [f"ckpt_path={tmp_path / 's.onnx'}", f"input={image_folder / 'test'}",
                                  f"output={tmp_path / 'y.csv'}"], check=False)
    assert proc.returncode == 2 and "its model card" in proc.stderr + proc.stdout


def test_int8_is_checked_on_validation_and_refused_past_the_threshold(runner, folder_runs, image_folder, tmp_path):
    data = ["data=image_folder", f"data.root={image_folder}", "int8=true", "calibration_images=16"]
    out = tmp_path / "s.onnx"
    _export(runner, folder_runs["student"], "onnx", out, *data, "int8_max_drop=1.0")
    card = json.loads((tmp_path / "s.int8.onnx.json").read_text())
    report = card["int8"]
    assert set(report["balanced_accuracy"]["val"]) == {"fp32", "int8"}
    assert report["latency_b1_ms"]["int8"]["median"] > 0
    assert (tmp_path / "s.int8.onnx").stat().st_size < 0.5 * out.stat().st_size  # int8 weights
    # a drop above the threshold (here any: -1) removes the int8 model and fails, the fp32 one stays
    refused = tmp_path / "r.onnx"
    proc = _export(runner, folder_runs["student"], "onnx", refused, *data, "int8_max_drop=-1", check=False)
    assert proc.returncode == 2 and "int8 model refused" in proc.stderr + proc.stdout
    assert refused.is_file() and not (tmp_path / "r.int8.onnx").exists()


def test_int8_without_validation_images_is_refused_by_key(runner, folder_runs, image_folder, tmp_path):
    run_splits = folder_runs["student"].parent.parent / "splits.csv"
    no_val = tmp_path / "no_val.csv"  # the run's own split with its validation images moved to training
    no_val.write_text(run_splits.read_text().replace(",val,", ",train,"))
    out = tmp_path / "nv.onnx"
    proc = _export(runner, folder_runs["student"], "onnx", out, "data=image_folder", f"data.root={image_folder}",
                   f"data.split_file={no_val}", "int8=true", "calibration_images=16", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "int8=true checks the int8 model on the validation split and data=image_folder has no validation " \
        "images here: give it some (data.val_fraction" in proc.stderr
    assert out.is_file() and not (tmp_path / "nv.int8.onnx").exists()


def test_failed_parity_leaves_nothing_and_unsafe_checkpoints_are_refused(runner, folder_runs, tmp_path):
    out = tmp_path / "bad.onnx"
    proc = _export(runner, folder_runs["student"], "onnx", out, "parity_tolerance=-1", check=False)
    assert proc.returncode == 2 and "does not reproduce the network" in proc.stderr + proc.stdout
    assert not out.exists() and not list(tmp_path.glob(".bad*"))

    import pickle

    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": {}, "hdkd": {"x": RunsCode()}}))
    proc = _export(runner, evil, "onnx", tmp_path / "e.onnx", check=False)  # every format reads it the same way
    assert proc.returncode == 2 and "refused to load" in proc.stderr + proc.stdout
    proc = runner.run("predict", [f"ckpt_path={evil}", f"input={tmp_path}", f"output={tmp_path / 'p.csv'}"],
                      check=False)
    assert proc.returncode == 2 and "refused to load" in proc.stderr + proc.stdout
    assert not marker.exists()


def test_export_refuses_bad_requests_by_key(runner, folder_runs, tmp_path):
    proc = _export(runner, folder_runs["student"], "tflite", tmp_path / "m.tflite", check=False)
    assert proc.returncode == 2 and "format=tflite: choose one of onnx, pt2, timm" in proc.stderr + proc.stdout
    proc = _export(runner, folder_runs["student"], "pt2", tmp_path / "m.pt2", "int8=true", check=False)
    assert proc.returncode == 2 and "int8=true is for format=onnx" in proc.stderr + proc.stdout
    proc = _export(runner, folder_runs["student"], "onnx", tmp_path / "m.onnx", "int8=true", check=False)
    assert proc.returncode == 2 and "int8=true needs training images" in proc.stderr + proc.stdout


def test_original_code_weights_converted_then_exported(runner, parity_dir, tmp_path):
    """The authors' HDKD student, converted by hdkd-convert, ships through hdkd-export like our own."""
    import onnxruntime as ort

    ckpt = tmp_path / "official_hdkd.ckpt"
    runner.run("convert", [f"input={parity_dir / 'official_hdkd.pth'}", "arch=hdkd_student_distilled",
                           f"output={ckpt}", "class_names=[glioma,meningioma,notumor,pituitary]", "image_size=224"])
    out = tmp_path / "official_hdkd.onnx"
    _export(runner, ckpt, "onnx", out)
    expected = torch.load(parity_dir / "expected.pt", weights_only=True)
    got = ort.InferenceSession(str(out)).run(None, {"image": expected["x"].numpy()})[0]
    assert abs(torch.as_tensor(got) - expected["hdkd_eval_logits"]).max() < 1e-4  # the original's eval output
    card = json.loads(out.with_name(out.name + ".json").read_text())
    assert card["class_names"] == ["glioma", "meningioma", "notumor", "pituitary"] and card["image_size"] == 224
