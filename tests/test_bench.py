"""hdkd-bench: the original pattern gives our loss, the mismatch check fires, the JSON has its structure."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from hdkd_lightning.bench import count_flops, original_pattern_forward
from hdkd_lightning.bench.step import DistillStep, LossMismatchError, build_models, check_losses, make_batch
from hdkd_lightning.cli import bench
from hdkd_lightning.distillation import distill_forward
from hdkd_lightning.losses import HdkdLoss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_original_pattern_same_loss_as_single_pass():
    teacher, student = build_models(32)
    images, labels = make_batch(32, 2)
    loss_fn = HdkdLoss()
    with torch.no_grad():
        ours, parts = distill_forward(student, teacher, loss_fn, images, labels)[:2]
        orig, orig_parts = original_pattern_forward(student, teacher, loss_fn, images, labels)
    torch.testing.assert_close(orig, ours, rtol=1e-6, atol=1e-6)
    for k in ("loss_ce", "loss_kd", "loss_feat_s1", "loss_feat_s2", "loss_feat_s3"):
        torch.testing.assert_close(orig_parts[k], parts[k], rtol=1e-6, atol=1e-6)


def test_loss_check_detects_a_different_computation():
    teacher, student = build_models(32)
    images, labels = make_batch(32, 2)
    steps = {"original": DistillStep(student, teacher, images, labels, "original"),
             "ours": DistillStep(student, teacher, images, labels, "ours", channels_last=True, fold_teacher=True)}
    values = check_losses(steps)
    assert values["ours"] == pytest.approx(values["original"], rel=1e-4)
    with torch.no_grad():
        steps["ours"].student.head.weight.mul_(-3.0)
    with pytest.raises(LossMismatchError):
        check_losses(steps)


def test_step_changes_weights_without_host_sync():
    teacher, student = build_models(32)
    images, labels = make_batch(32, 2)
    step = DistillStep(student, teacher, images, labels)
    before = step.student.head.weight.clone()
    loss = step()
    assert isinstance(loss, torch.Tensor) and loss.requires_grad is False
    assert not torch.equal(before, step.student.head.weight)


def test_flop_counter_counts_matmuls():
    lin = nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16)
    assert count_flops(lambda: lin(x)) == 2 * 4 * 16 * 8


def test_tiny_bench_json(tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--quiet", "--threads", "1", "--only", "distill", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["sections"] == ["distill"]
    entry = res["distill_step"][0]
    for key in ("image_size", "batch_size", "precision", "ours_img_s", "original_pattern_img_s"):
        assert key in entry
    assert entry["image_size"] == 32 and entry["precision"] == "32-true"
    assert entry["ours_img_s"] > 0 and entry["original_pattern_img_s"] > 0
    assert entry["loss_rel_diff"] < 1e-4
    assert entry["gflop_per_img_original"] > entry["gflop_per_img_ours"] > 0
    eff = res["efficiency"][0]
    assert 0 < eff["step_fraction_of_matmul"] < 2
    assert res["precision"][0]["loss_rel_diff"] < 0.1


def test_memory_section_measures_each_pattern_in_its_own_process(tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--quiet", "--threads", "1", "--only", "memory", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["memory"]
    assert [r["pattern"] for r in rows] == ["ours", "original"]
    for r in rows:
        assert "error" not in r, r
        assert r["peak_rss_mb"] >= r["rss_before_step_mb"] > 50  # a python process with torch loaded


def test_section_filters():
    args = bench._parse(["--quick", "--skip-inference", "--skip", "pipeline"])
    assert bench._sections(args) == ["distill", "default-alloc", "memory"]  # quick: no compile, no profile
    assert bench._sections(bench._parse(["--only", "inference"])) == ["inference"]
    assert bench._config(bench._parse(["--infer-size", "64"]), print).infer_size == 64
    assert bench._config(bench._parse(["--infer-size", "48"]), print).infer_size == 48
    with pytest.raises(SystemExit, match="multiples of 16"):  # the student's rule (models/hdkd.py)
        bench._config(bench._parse(["--infer-size", "50"]), print)
    with pytest.raises(SystemExit):
        bench._sections(bench._parse(["--only", "nope"]))


def test_flop_counter_grouped_conv_backward_corrected():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    fwd = count_flops(lambda: conv(x))
    assert fwd == 2 * 2 * 8 * 36 * 9
    assert count_flops(lambda: conv(x).sum().backward()) == 3 * fwd  # forward + input grad + weight grad


def test_original_code_folder_is_checked_before_any_timing(tmp_path, capsys):
    assert bench.main(["--tiny", "--only", "distill", "--original-code", str(tmp_path), "--quiet",
                       "--json", str(tmp_path / "b.json")]) == 2
    assert "not a clone of the original HDKD code (missing models/__init__.py, losses.py, blocks.py)" in \
        capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.skipif(not os.environ.get("HDKD_ORIGINAL_CODE"),
                    reason="set HDKD_ORIGINAL_CODE=<clone of the authors' HDKD code> (with einops installed)")
def test_the_authors_code_gives_our_loss_on_the_same_weights():
    from hdkd_lightning.bench.original_code import OriginalCodeStep, load_original_code

    teacher, student = build_models(64, 0)
    images, labels = make_batch(64, 4, 0)
    steps = {"original": OriginalCodeStep(load_original_code(os.environ["HDKD_ORIGINAL_CODE"]), teacher, student,
                                          images, labels),
             "ours": DistillStep(student, teacher, images, labels, "ours", fold_teacher=True)}
    values = check_losses(steps)
    assert values["ours"] == pytest.approx(values["original"], rel=1e-4)


def test_inference_section_has_pytorch_and_onnxruntime_rows(tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--quiet", "--threads", "1", "--only", "inference", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = {r["model"]: r for r in res["inference"]}
    assert "onnxruntime (failed)" not in rows, rows.get("onnxruntime (failed)")
    for name in ("hdkd (deployed)", "hdkd_teacher (deployed)", "resnet18", "hdkd (onnxruntime fp32)",
                 "hdkd (onnxruntime int8)"):
        row = rows[name]
        assert row["image_size"] == 32
        assert 0 < row["latency_b1_ms"] <= row["latency_b1_p95_ms"] and row["throughput_b2_img_s"] > 0
    assert rows["hdkd (onnxruntime int8)"]["runtime"].startswith("onnxruntime int8, 1 threads")
    assert res["deploy_tolerance"]["max_abs_diff_fp32"] < 1e-4
    parity = {r["model"]: r for r in res["export_parity"]}
    assert set(parity) == {"hdkd_teacher", "hdkd_student", "hdkd_student_distilled"}
    assert all(r["onnx_max_abs_logit_diff"] < 1e-4 and r["pt2_max_abs_logit_diff"] < 1e-4 for r in parity.values())
