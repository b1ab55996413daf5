"""Every user mistake: one clear first line naming the key and the fix, exit status 2, nothing left behind."""

from __future__ import annotations

import pytest
from tests.app.conftest import TINY

MISSING = "/nonexistent/best.ckpt"

# (command, arguments, text the first line must contain, extra lines expected)
MISTAKES = [
    ("train", ["experiment=no_such"], "experiment=no_such is not an option of experiment; choose one of: demo, distill",
     False),
    ("train", ["model=no_model"], "model=no_model is not an option of model; choose one of: distill, student, teacher",
     False),
    ("train", ["data.batchsize=8"], "data.batchsize is not a key of data; did you mean data.batch_size?", False),
    ("train", ["model=distill", "model.loss.lamda_feat=3"], "did you mean model.loss.lambda_feat?", False),
    ("train", ["--experiment", "teacher_isic"], "unknown option --experiment: this command takes Hydra overrides "
                                                "key=value, e.g. experiment=teacher_isic", False),
    ("train", TINY + ["data.batch_size=-1"], "data.batch_size=-1 must be >= 1", False),
    ("train", ["data=isic2018"], "data.root is not set for data=isic2018; pass data.root=<dataset folder>.", True),
    ("train", TINY + ["trainer=cpu", "trainer.devices=64"], "trainer.devices=64 CPU processes but this machine has",
     False),
    ("evaluate", [], "ckpt_path is required: pass ckpt_path=<checkpoint file>", False),
    ("evaluate", [f"ckpt_path={MISSING}", "split=train"], "split=train: choose test or val", False),
    ("predict", [f"ckpt_path={MISSING}"], "input is required: pass input=<image file or folder>", False),
    ("predict", [f"ckpt_path={MISSING}", "input=/nonexistent/images"], "input=/nonexistent/images: no such file",
     False),
    ("export", [f"ckpt_path={MISSING}", "output=m.tflite", "format=tflite"], "format=tflite: choose one of onnx, pt2",
     False),
    ("convert", ["input=/nonexistent/w.pth", "output=o.ckpt", "arch=hdkd_foo"], "arch=hdkd_foo: choose one of "
                                                                               "hdkd_teacher", False),
    ("explain", [f"ckpt_path={MISSING}", "input=x", "output_dir=y"], "checkpoint not found: /nonexistent/best.ckpt",
     False),
]


@pytest.mark.parametrize("command, args, message, multiline", MISTAKES,
                         ids=[f"{c}:{' '.join(a[-2:])[:40]}" for c, a, _, _ in MISTAKES])
def test_mistake_is_one_clear_line_and_exit_2(runner, command, args, message, multiline):
    before = set(runner.log_dir.rglob("*")) if runner.log_dir.exists() else set()
    proc = runner.run(command, args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    prog = {"evaluate": "eval"}.get(command, command)
    first = next(ln for ln in lines if ln.startswith(f"hdkd-{prog}: error: "))
    assert message in first, first
    assert "\\n" not in proc.stderr and "Traceback" not in proc.stderr
    if multiline:  # e.g. the dataset's expected layout, on lines of its own
        assert lines[lines.index(first) + 1] == "Expected layout:"
    after = set(runner.log_dir.rglob("*")) if runner.log_dir.exists() else set()
    assert not [p for p in after - before if p.is_file()], "a failed start left files behind"


@pytest.mark.parametrize("command, own, foreign", [
    ("predict", ["ckpt_path", "topk", "device"], ["hparams_search", "trainer"]),
    ("train", ["experiment", "recipe", "hparams_search", "optimized_metric"], ["topk"]),
    ("export", ["format", "int8", "parity_tolerance"], ["hparams_search"]),
    ("explain", ["target", "output_dir"], ["trainer"]),
])
def test_help_shows_the_commands_own_options_and_examples(runner, command, own, foreign):
    proc = runner.run(command, ["--help"])
    out = proc.stdout
    assert out.startswith(f"usage: hdkd-{command}") and "Examples:" in out
    assert all(word in out for word in own)
    assert not any(word in out for word in foreign)


def test_demo_and_data_help(runner):
    proc = runner.run("demo", ["--help"])
    assert proc.returncode == 0 and "usage: hdkd-demo" in proc.stdout
    proc = runner.run("data", ["--help"])
    assert proc.returncode == 0 and "download" in proc.stdout
