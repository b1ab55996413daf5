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


def _first_error_line(stderr: str, command: str) -> str:
    prog = {"evaluate": "eval"}.get(command, command)
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    return next(ln for ln in lines if ln.startswith(f"hdkd-{prog}: error: ")), lines


def _in_process(command, args, monkeypatch, capsys):
    """Run ``hdkd-<command> args`` in this process (command-line mistakes stop before Hydra runs)."""
    import importlib

    main = importlib.import_module(f"hdkd_lightning.cli.{command}").main
    monkeypatch.setattr("sys.argv", [f"hdkd-{command}", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr()


# mistakes in the command line itself, caught before Hydra starts a job: checked in this process
PRECHECKED = [m for m in MISTAKES if m[0] in ("train", "evaluate", "predict") and not any(
    a.startswith(("data.batch_size=-1", "data=isic2018", "trainer.devices", "split=", "input=/nonexistent"))
    for a in m[1])]
# mistakes found inside the job (data, values, files): run as a user runs them, in a subprocess
IN_JOB = [m for m in MISTAKES if m not in PRECHECKED]


@pytest.mark.parametrize("command, args, message, multiline", PRECHECKED,
                         ids=[f"{c}:{' '.join(a[-2:])[:40]}" for c, a, _, _ in PRECHECKED])
def test_command_line_mistake_is_one_clear_line_and_exit_2(command, args, message, multiline, monkeypatch, capsys):
    code, out = _in_process(command, args, monkeypatch, capsys)
    assert code == 2, out.err[-2000:]
    first, _ = _first_error_line(out.err, command)
    assert message in first, first
    assert "Traceback" not in out.err


@pytest.mark.parametrize("command, args, message, multiline", IN_JOB,
                         ids=[f"{c}:{' '.join(a[-2:])[:40]}" for c, a, _, _ in IN_JOB])
def test_mistake_found_in_the_job_is_one_clear_line_exit_2_and_leaves_nothing(runner, command, args, message,
                                                                               multiline):
    before = set(runner.log_dir.rglob("*")) if runner.log_dir.exists() else set()
    proc = runner.run(command, args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    first, lines = _first_error_line(proc.stderr, command)
    assert message in first, first
    assert "\\n" not in proc.stderr and "Traceback" not in proc.stderr
    if multiline:  # e.g. the dataset's expected layout, on lines of its own
        assert lines[lines.index(first) + 1] == "Expected layout:"
    after = set(runner.log_dir.rglob("*")) if runner.log_dir.exists() else set()
    assert not after - before, f"a failed start left files or folders behind: {sorted(after - before)}"


def test_the_table_covers_enough_mistakes():
    assert len(MISTAKES) >= 12 and len({m[0] for m in MISTAKES}) >= 5 and IN_JOB and PRECHECKED


@pytest.mark.parametrize("command, own, foreign", [
    ("predict", ["ckpt_path", "topk", "device"], ["hparams_search", "trainer"]),
    ("train", ["experiment", "recipe", "hparams_search", "optimized_metric"], ["topk"]),
    ("export", ["format", "int8", "parity_tolerance"], ["hparams_search"]),
    ("explain", ["target", "output_dir"], ["trainer"]),
    ("evaluate", ["ckpt_path", "split", "calibrate"], ["hparams_search", "topk"]),
    ("convert", ["input", "output", "arch"], ["hparams_search", "trainer"]),
    ("report", ["--out", "--no-cost", "mean ± std"], ["hparams_search"]),
    ("bench", ["--quick", "--only", "--original-code"], ["hparams_search", "ckpt_path"]),
])
def test_help_shows_the_commands_own_options_and_examples(command, own, foreign, monkeypatch, capsys):
    import importlib

    prog = {"evaluate": "eval"}.get(command, command)
    monkeypatch.setattr("sys.argv", [f"hdkd-{prog}", "--help"])
    main = importlib.import_module(f"hdkd_lightning.cli.{command}").main
    try:
        main()
    except SystemExit as stop:  # argparse-based commands exit 0 after --help
        assert stop.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hdkd-{prog}") and "Examples:" in out
    assert all(word in out for word in own)
    assert not any(word in out for word in foreign)


def test_demo_and_data_help(runner):
    proc = runner.run("demo", ["--help"])  # as a user runs it: this once in a subprocess
    assert proc.returncode == 0 and "usage: hdkd-demo" in proc.stdout
    from hdkd_lightning.cli.data import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
