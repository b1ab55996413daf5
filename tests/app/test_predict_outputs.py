"""What hdkd-predict gives its user: values typed with non-ASCII characters, the label column from class
folders, the files it skipped, one image's answer on the terminal. Run in this process (Hydra included) on an
untrained tiny checkpoint (classes a, b, c): no training, seconds in all."""

from __future__ import annotations

import csv
import json
import logging
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.app.conftest import tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("predict_ckpt") / "tiny.ckpt")


@pytest.fixture
def predict(monkeypatch, tmp_path, capsys):
    """``hdkd-predict *args`` as a user runs it, front door and Hydra included, in this process; returns
    what it printed (stdout and stderr together)."""
    from hdkd_lightning.cli.predict import main

    monkeypatch.setenv("HDKD_LOG_DIR", str(tmp_path / "logs"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*args: str) -> str:
        monkeypatch.setattr("sys.argv", ["hdkd-predict", *args])
        try:
            main()
        finally:  # Hydra's job logging writes to the run folder; later tests must not log there
            root.handlers[:] = handlers
            root.setLevel(level)
        out = capsys.readouterr()
        return out.out + out.err

    return run


def _image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def _rows(path: Path):
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def _expected_probs(ckpt: Path, image: Path) -> np.ndarray:
    """The network's probabilities for one image, computed here without the command."""
    from hdkd_lightning.deploy.backends import load_predictor

    predictor = load_predictor(ckpt, device="cpu")
    dm = predictor.recipe.image_files(image, predictor.class_names, batch_size=1)
    return predictor(next(iter(dm.predict_dataloader()))["image"])[0]


def test_a_non_ascii_path_is_read_as_typed_and_one_image_is_answered_on_the_terminal(tiny_ckpt, predict, tmp_path):
    image = _image(tmp_path / "bilder" / "läsion_ü's (1).jpg", seed=0)  # non-ASCII, a quote, parentheses
    reference = _image(tmp_path / "plain" / "scan.jpg", seed=0)  # the same pixels under an ASCII name
    out = tmp_path / "vorhersage_é.csv"
    printed = predict(f"ckpt_path={tiny_ckpt}", f"input={image}", f"output={out}", "device=cpu", "topk=2")
    header, rows = _rows(out)
    assert [r["path"] for r in rows] == [str(image)]
    probs = np.array([float(rows[0][f"prob_{c}"]) for c in "abc"])
    assert probs == pytest.approx(_expected_probs(tiny_ckpt, reference), abs=1e-5)
    order = np.argsort(-probs, kind="stable")
    assert rows[0]["predicted"] == "abc"[order[0]] and rows[0]["top2"] == "abc"[order[1]]
    # its answer on the terminal: the top class and its probability, then the next of the top 2
    line = next(ln for ln in printed.splitlines() if ln.startswith(f"{image}: "))
    assert line == (f"{image}: {'abc'[order[0]]} (probability {probs[order[0]]:.3f}); "
                    f"next: {'abc'[order[1]]} {probs[order[1]]:.3f}")


def test_quoting_keeps_every_value_as_typed_and_leaves_what_hydra_reads_alone():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hdkd_lightning.cli._overrides import quote_values
    from hdkd_lightning.errors import UserError

    parser = OverridesParser.create()
    tricky = ["/tmp/bilder/läsion_ü.jpg", "/d/it's ü.png", "C:\\Bilder\\Ärzte\\", "ü\\'x", "日本/画像.png",
              "/scans/scan (1).jpg", "/tmp/a=b.png", "ü\"q\"\\\\"]
    for value in tricky:
        argv = quote_values([f"input={value}"])
        assert parser.parse_overrides(argv)[0].value() == value, (value, argv)
    as_hydra_reads = ["seed=0,1,2", "data.root=/data/x", "model.lr=interval(1e-4,1e-2)", "tags=[a,b]",
                      "input='/tmp/ü.jpg'", "+extra=1"]
    assert quote_values(as_hydra_reads) == as_hydra_reads
    assert quote_values(["-cd", "/tmp/konfig_ü", "--config-name=x"]) == ["-cd", "/tmp/konfig_ü", "--config-name=x"]
    # one string, a list or a sweep? refused with the quoted form to type, which then works as printed
    with pytest.raises(UserError) as refused:
        quote_values(["input=/tmp/ä,b.jpg"])
    typed = shlex.split(str(refused.value).rsplit(": ", 1)[1])
    assert parser.parse_overrides(quote_values(typed))[0].value() == "/tmp/ä,b.jpg"


def test_labels_come_from_class_folders_and_skipped_files_are_listed(tiny_ckpt, predict, tmp_path):
    data = tmp_path / "neue_bilder"
    for name, seed in (("a/1.png", 1), ("b/2.png", 2), ("b/3.png", 3), ("misc/4.png", 4)):
        _image(data / name, seed)
    (data / "b" / "empty.jpg").write_bytes(b"")
    whole = _image(data / "misc" / "whole.jpg", 5).read_bytes()
    (data / "misc" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (data / "misc" / "whole.jpg").unlink()
    out, summary = tmp_path / "pred.csv", tmp_path / "pred.json"
    args = [f"ckpt_path={tiny_ckpt}", f"output={out}", "device=cpu", "on_bad_image=skip"]
    printed = predict(*args, f"input={data}", "topk=3", f"json={summary}")
    header, rows = _rows(out)
    # hdkd-eval's columns, then the probability of `predicted` and the other choices: no top1 repeating it
    assert header == ["path", "label", "predicted", "prob_a", "prob_b", "prob_c", "predicted_prob", "top2",
                      "top2_prob", "top3", "top3_prob"]
    labels = {Path(r["path"]).relative_to(data).as_posix(): r["label"] for r in rows}
    assert labels == {"a/1.png": "a", "b/2.png": "b", "b/3.png": "b", "misc/4.png": ""}
    for r in rows:
        assert float(r["predicted_prob"]) == float(r[f"prob_{r['predicted']}"])
        assert r["predicted"] == max("abc", key=lambda c: float(r[f"prob_{c}"]))
    assert "label column filled from class subfolders: 3 images" in printed
    # the files left out: listed beside the CSV and in the JSON, each with its reason
    _, listed = _rows(tmp_path / "pred.skipped.csv")
    reasons = {Path(r["path"]).name: r["reason"] for r in listed}
    assert set(reasons) == {"empty.jpg", "truncated.jpg"} and all(reasons.values())
    assert "empty" in reasons["empty.jpg"]
    info = json.loads(summary.read_text())
    assert {Path(s["path"]).name: s["reason"] for s in info["skipped"]} == reasons
    assert info["summary"]["skipped"] == 2 and info["summary"]["images"] == 4
    assert {Path(p["path"]).name: p["label"] for p in info["predictions"]}["4.png"] is None
    assert "2 unreadable file(s) skipped" in printed and "pred.skipped.csv" in printed
    # a later run with nothing to skip leaves no list of an earlier run's files behind
    predict(*args, f"input={data / 'a'}")
    assert not (tmp_path / "pred.skipped.csv").exists()
    assert _rows(out)[1][0]["label"] == "a"  # a folder named like a class, given itself as the input
