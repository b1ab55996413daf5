"""A folder with one of each hostile file: a run refuses it by name, or skips the bad ones and finishes.
A model file that carries code is refused by the command and the code never runs."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.app.conftest import FOLDER, make_image_folder, tiny_checkpoint


def add_hostile_files(folder: Path) -> dict:
    """One of each kind into train/benign; returns which names must be dropped by skip."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    good = Image.fromarray(rgb)
    good.save(folder / "full.jpg", quality=90)
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zero_bytes.jpg").write_bytes(b"")
    Image.fromarray((rng.integers(0, 65535, (40, 40))).astype(np.uint16)).save(folder / "sixteen_bit.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 40), 128, np.uint8)])).save(folder / "rgba.png")
    good.convert("P").save(folder / "palette.png")
    good.convert("CMYK").save(folder / "cmyk.jpg")
    good.save(folder / "actually_png.jpg", format="PNG")  # wrong extension, valid image
    good.save(folder / "név with spaces ü.png")
    # huge declared dimensions: a PNG header claiming 100000 x 100000 pixels
    Image.new("L", (1, 1)).save(folder / "bomb.png")
    raw = bytearray((folder / "bomb.png").read_bytes())
    raw[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")
    (folder / "bomb.png").write_bytes(bytes(raw))
    loop = folder / "loop"
    loop.mkdir()
    os.symlink("..", loop / "again")
    (folder / ".DS_Store").write_bytes(b"\x00\x01junk")
    return {"bad": {"truncated.jpg", "zero_bytes.jpg", "bomb.png"},
            "fine": {"sixteen_bit.png", "rgba.png", "palette.png", "cmyk.jpg", "actually_png.jpg",
                     "név with spaces ü.png", "full.jpg"}}


@pytest.fixture(scope="module")
def hostile_root(runner):
    root = make_image_folder(runner.root / "hostile")
    kinds = add_hostile_files(root / "train" / "benign")
    return root, kinds


def test_bad_files_are_named_before_training(runner, hostile_root):
    root, kinds = hostile_root
    proc = runner.run("train", FOLDER + [f"data.root={root}", "model=teacher", "task_name=hostile_error",
                                         "data.max_image_pixels=100000000"], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    for name in kinds["bad"]:
        assert name in out, name
    assert "on_bad_image=skip" in out
    assert not list((runner.log_dir / "hostile_error").rglob("*.ckpt"))


def test_skip_drops_only_the_bad_files_and_the_run_finishes(runner, hostile_root):
    root, kinds = hostile_root
    runner.run("train", FOLDER + [f"data.root={root}", "model=teacher", "task_name=hostile_skip",
                                  "data.on_bad_image=skip", "data.max_image_pixels=100000000"])
    run = runner.latest_run("hostile_skip")
    used = (run / "splits.csv").read_text()
    for name in kinds["bad"]:
        assert name not in used, name
    for name in kinds["fine"]:
        assert name in used, name
    assert (run / "metrics.json").is_file()


def test_predict_refuses_a_pt2_that_carries_code_and_none_of_it_runs(runner, tmp_path):
    """A .pt2 whose sample inputs are a code-carrying pickle: exit 2, one line naming the file, no code run."""
    from tests.test_deploy import pt2_with_code_in_sample_inputs, write_tiny_pt2

    legit, _ = write_tiny_pt2(tmp_path)
    marker = tmp_path / "code_ran"
    evil = pt2_with_code_in_sample_inputs(legit, tmp_path / "evil.pt2", marker)
    image = tmp_path / "scan.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(image)
    proc = runner.run("predict", [f"ckpt_path={evil}", f"input={image}", f"output={tmp_path / 'pred.csv'}",
                                  "device=cpu"], check=False)
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith(f"hdkd-predict: error: {evil}: refused to load"), errors
    assert "sample inputs" in errors[0] and "Traceback" not in proc.stdout + proc.stderr
    assert not marker.exists() and not (tmp_path / "pred.csv").exists()


def test_each_bad_file_hint_of_predict_works_when_followed_as_printed(runner, tmp_path):
    """hdkd-predict's keys are top-level (on_bad_image=, max_image_pixels=): its fix must name those, not the
    data.* keys of training, and each hint, appended to the command exactly as printed, must make it pass."""
    import csv
    import re

    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "fine.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(rng.integers(0, 255, (100, 80, 3), dtype=np.uint8)).save(folder / "large.png")  # 8,000 pixels
    output = tmp_path / "pred.csv"
    args = [f"ckpt_path={tiny_checkpoint(tmp_path / 'tiny.ckpt')}", f"input={folder}", f"output={output}",
            "device=cpu", "max_image_pixels=5000"]

    refused = runner.run("predict", args, check=False)
    assert refused.returncode == 2, refused.stderr[-3000:]
    fix = next(ln for ln in refused.stderr.splitlines() if ln.strip().startswith("Fix:"))
    skip, limit = re.search(r"\S*on_bad_image=\w+", fix), re.search(r"\S*max_image_pixels=\d+", fix)
    assert skip and limit, f"the fix names no on_bad_image / max_image_pixels value to pass: {fix}"
    skip, limit = skip.group(), limit.group()

    def predicted() -> set:
        with open(output, newline="") as fh:
            return {Path(row["path"]).name for row in csv.DictReader(fh)}

    runner.run("predict", args + [skip])  # both bad files left out
    assert predicted() == {"fine.png", "whole.jpg"}
    runner.run("predict", args + [limit, skip])  # the large image admitted; the truncated one still left out
    assert predicted() == {"fine.png", "whole.jpg", "large.png"}
