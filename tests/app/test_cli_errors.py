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
    # a flag named after a nested key: the suggestion is the full key, which the command accepts
    ("train", ["--max_epochs", "2"], "unknown option --max_epochs: this command takes Hydra overrides key=value, "
                                     "e.g. trainer.max_epochs=2 ", False),
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
    # a value Hydra accepts but the DataModule cannot convert: not Hydra's "Error in call to target" wrapper
    ("train", ["data=synthetic", "data.image_size=abc"], "data.image_size='abc' is not a whole number; pass a whole "
                                                         "number, e.g. data.image_size=224", False),
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
    a.startswith(("data.batch_size=-1", "data=isic2018", "trainer.devices", "split=", "input=/nonexistent",
                  "data.image_size=abc"))
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



def test_a_flag_is_answered_with_full_keys_that_the_command_accepts():
    import re

    from hdkd_lightning.cli._common import check_flags, precheck
    from hdkd_lightning.config import register_resolvers
    from hdkd_lightning.errors import UserError

    register_resolvers()
    with pytest.raises(UserError) as refused:
        check_flags(["model=teacher", "--max-epochs", "2", "data.batch_size=8"], "train")
    suggestion = re.search(r"e\.g\. (\S+)", str(refused.value)).group(1)
    assert suggestion == "trainer.max_epochs=2"
    precheck("train", ["model=teacher", suggestion, "data.batch_size=8"])  # accepted as printed
    with pytest.raises(UserError, match=r"e\.g\. one of seed=1, data\.seed=1, "):  # several keys of that name
        check_flags(["--seed", "1"], "train")
    with pytest.raises(UserError, match=r"e\.g\. topk=3 "):  # hdkd-predict's own top-level key
        check_flags(["ckpt_path=x.ckpt", "--topk=3"], "predict")
    with pytest.raises(UserError, match=r"e\.g\. no_such_flag=1 "):  # no key of that name: the flag's own
        check_flags(["--no_such_flag", "1"], "train")

@pytest.mark.parametrize("command, own, foreign", [
    ("predict", ["ckpt_path", "topk", "device"], ["hparams_search", "trainer"]),
    ("train", ["experiment", "recipe", "hparams_search", "optimized_metric"], ["topk"]),
    ("export", ["format", "int8", "parity_tolerance"], ["hparams_search"]),
    ("explain", ["target", "output_dir"], ["trainer"]),
    ("evaluate", ["ckpt_path", "split", "calibrate"], ["hparams_search", "topk"]),
    ("convert", ["input", "output", "arch"], ["hparams_search", "trainer"]),
    ("report", ["--out", "--no-cost", "mean ± std", "--baseline", "--resamples", "learning_curve.png"], ["hparams_search"]),
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


# -- which exceptions are user errors (hdkd_lightning.errors.find_user_error) ---------------------

def _refuse_in_target():
    """A Hydra ``_target_`` that refuses its config, as the DataModule or a model does."""
    from hdkd_lightning.errors import ConfigError

    raise ConfigError("model.width=-1 must be >= 1; set model.width=64")


@pytest.fixture
def run_job(monkeypatch, tmp_path):
    """Run a Hydra command (predict's config, the lightest) whose job is ``fn``, in this process."""
    import logging

    from hdkd_lightning.cli._common import hydra_command

    monkeypatch.setenv("HDKD_LOG_DIR", str(tmp_path / "logs"))
    # Hydra then lets an exception that is not a user error leave main() unchanged: the traceback and exit
    # status 1 a user sees (without it Hydra prints the traceback itself and exits 1, or re-raises under coverage)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr("sys.argv", ["hdkd-predict", "ckpt_path=x.ckpt", "input=images"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(fn):
        try:
            hydra_command("predict")(fn)()
        finally:  # Hydra's job logging writes to the run folder; later tests must not log there
            root.handlers[:] = handlers
            root.setLevel(level)

    return run


def test_a_bug_raised_while_handling_a_user_error_keeps_its_traceback(run_job, capsys):
    from hdkd_lightning.errors import ConfigError

    def job(cfg):
        try:
            raise ConfigError("ckpt_path=x.ckpt is not usable")
        except ConfigError as exc:
            print(exc.args[1])  # the bug: an IndexError whose __context__ is the ConfigError

    with pytest.raises(IndexError) as raised:
        run_job(job)
    assert isinstance(raised.value.__context__, ConfigError)
    assert "error:" not in capsys.readouterr().err  # not shown as the ConfigError it interrupted


def test_a_libraries_file_not_found_error_is_a_bug_not_a_user_error(run_job, tmp_path, capsys):
    def job(cfg):
        with open(tmp_path / "cache" / "index.bin", "rb"):
            pass

    with pytest.raises(FileNotFoundError, match="index.bin"):
        run_job(job)
    assert "error:" not in capsys.readouterr().err


def test_a_user_error_raised_inside_a_hydra_target_is_one_line_and_exit_2(run_job, tmp_path, capsys):
    from hydra.utils import instantiate

    def job(cfg):
        instantiate({"_target_": f"{__name__}._refuse_in_target"})  # Hydra wraps it: InstantiationException

    with pytest.raises(SystemExit) as stop:
        run_job(job)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    first, lines = _first_error_line(err, "predict")
    assert first == "hdkd-predict: error: model.width=-1 must be >= 1; set model.width=64"
    assert "Traceback" not in err and "Error in call to target" not in err
    assert not list((tmp_path / "logs").rglob("*")), "the failed start left its run folder behind"


def test_a_user_error_is_one_console_line_not_a_log_line_too(run_job, capsys):
    from hdkd_lightning.errors import ConfigError

    def job(cfg):
        raise ConfigError("model.width=-1 must be >= 1; set model.width=64")

    with pytest.raises(SystemExit):
        run_job(job)
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "model.width=-1" in line]
    assert lines == ["hdkd-predict: error: model.width=-1 must be >= 1; set model.width=64"]


def test_hdkd_data_names_a_data_key_that_is_not_a_number(capsys):
    from hdkd_lightning.cli.data import main

    assert main(["inspect", "data=synthetic", "data.image_size=abc", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == ("hdkd-data: error: data.image_size='abc' is not a whole number; pass a whole number, "
                                   "e.g. data.image_size=224")
    assert "Error in call to target" not in err
