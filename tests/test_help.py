"""What ``--help`` tells a user: the keys set most, examples that each pass the command's own checks, the exit
status, plain text; and it answers without importing torch."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys

import pytest

# command -> its module in hdkd_lightning.cli
MODULES = {"train": "train", "eval": "evaluate", "predict": "predict", "export": "export", "convert": "convert",
           "explain": "explain", "data": "data", "report": "report", "bench": "bench", "demo": "demo"}
HYDRA = {"train": "train", "eval": "eval", "predict": "predict", "export": "export", "convert": "convert",
         "explain": "explain"}  # command -> its config
# rich / console markup ([bold], [/], [red]...), reST literals (``x``) and ANSI colour codes
MARKUP = re.compile(r"\[/?(bold|italic|underline|dim|red|green|yellow|blue|cyan|magenta|white|b|i|u|link)\b[^\]]*\]"
                    r"|\[/\]|``|\x1b\[")


def _help(command: str, monkeypatch, capsys) -> str:
    """``hdkd-<command> --help`` in this process, as its console script runs it."""
    main = importlib.import_module(f"hdkd_lightning.cli.{MODULES[command]}").main
    monkeypatch.setattr("sys.argv", [f"hdkd-{command}", "--help"])
    try:
        result = main()
    except SystemExit as stop:  # argparse exits 0 after --help
        result = stop.code
    assert result in (0, None)
    return capsys.readouterr().out


def _examples(text: str, command: str):
    """Each example command of a help text as its arguments (comments and shell redirections left out)."""
    out = []
    for line in text.splitlines():
        if line.strip().startswith(f"hdkd-{command} "):
            words = shlex.split(line, comments=True)[1:]
            out.append(words[:words.index(">")] if ">" in words else words)
    return out


@pytest.mark.parametrize("command, keys", [
    ("train", ["data.root=", "data.train_per_class=", "trainer.max_epochs=", "trainer.devices=", "trainer.precision=",
               "model.teacher.ckpt_path="]),
    ("eval", ["ckpt_path=", "data=", "data.root=", "split=", "calibrate="]),
    ("data", ["data=", "data.root=", "data.train_per_class=", "data.image_size="]),
])
def test_help_explains_the_keys_set_most_and_shows_each_in_an_example(command, keys, monkeypatch, capsys):
    text = _help(command, monkeypatch, capsys)
    section = text.split("Keys set most often", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    explained = {line.split()[0].split("=", 1)[0] + "=": line for line in section}
    for key in keys:
        assert key in explained, f"{key} is not explained: {section}"
        assert len(explained[key].split(None, 1)[1]) >= 15, explained[key]  # a key and an explanation
        assert any(any(word.startswith(key) for word in ex) for ex in _examples(text, command)), f"no example sets {key}"


@pytest.mark.parametrize("command, statuses", [
    ("train", ["0 done", "2 a mistake", "1 a bug"]), ("eval", ["0 done", "2 a mistake", "1 a bug"]),
    ("data", ["0 done", "3 inspect found bad files", "2 a mistake", "1 a bug"]),
    ("report", ["0 the report was written", "2 a mistake", "1 a bug"]), ("demo", ["0 done", "2 a mistake", "1 a bug"]),
])
def test_help_ends_with_the_exit_status(command, statuses, monkeypatch, capsys):
    text = _help(command, monkeypatch, capsys)
    tail = text[text.rindex("Exit status:"):].strip()
    assert "\n\n" not in tail, f"the exit status is not the last paragraph: {tail!r}"
    words = " ".join(tail.split())
    for status in statuses:
        assert status in words, f"{status!r} not in {words!r}"


def test_no_help_holds_markup_and_every_help_has_examples(monkeypatch, capsys):
    for command in MODULES:
        text = _help(command, monkeypatch, capsys)
        assert text.startswith(f"usage: hdkd-{command}"), text[:80]
        assert not MARKUP.search(text), f"hdkd-{command} --help: {MARKUP.search(text).group()!r}"
        assert _examples(text, command), f"hdkd-{command} --help shows no example"


def test_every_example_in_a_help_passes_its_commands_own_checks(monkeypatch, capsys):
    """Hydra commands: composed with the overrides and pre-checked, as the command does before its job; hdkd-data:
    composed (inspect, cache) or checked (download) as it does; argparse commands: parsed by their own parser."""
    from hdkd_lightning.cli import bench, data, demo, report
    from hdkd_lightning.cli._common import precheck
    from hdkd_lightning.config import register_resolvers

    register_resolvers()
    checked = 0
    for command in MODULES:
        for argv in _examples(_help(command, monkeypatch, capsys), command):
            if command in HYDRA:
                precheck(HYDRA[command], argv)
            elif command == "data":
                args, overrides = data.build_parser().parse_known_args(argv)
                if args.command == "download":
                    data.download_request(args.dataset, overrides)
                else:
                    data.compose(([args.dataset] if args.dataset else []) + overrides)
            elif command == "report":
                report.build_parser().parse_args(argv)
            elif command == "bench":
                bench._parse(argv)
            else:  # demo: its three hdkd-train command lines
                for name, model, overrides in demo.STAGES:
                    precheck("train", demo.stage_overrides(name, model, overrides, argv, demo.Path("logs/demo/x")))
            checked += 1
    assert checked >= 25


def test_help_of_every_command_imports_no_torch():
    """As a user runs them (the console scripts call main() of these modules): the modules a --help loaded."""
    code = """if True:
        import importlib, sys
        heavy = ("torch", "timm", "torchvision", "lightning", "torchmetrics", "onnx", "onnxruntime", "albumentations")
        for command, module in %r.items():
            sys.argv = ["hdkd-" + command, "--help"]
            try:
                importlib.import_module("hdkd_lightning.cli." + module).main()
            except SystemExit:
                pass
            print(command, *sorted(m for m in heavy if m in sys.modules), file=sys.stderr)
    """ % (MODULES,)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = dict(line.split(" ", 1) if " " in line else (line, "") for line in proc.stderr.splitlines())
    assert set(loaded) == set(MODULES), proc.stderr[-2000:]
    assert all(not modules for modules in loaded.values()), loaded
