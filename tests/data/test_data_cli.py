"""``hdkd-data inspect|cache``: counts in the JSON match the files on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hdkd_data_fixtures import make_brain, make_isic, write_image

from hdkd_lightning.cli.data import EXIT_BAD_FILES, main


def test_inspect_json_matches_disk_with_broken_files(tmp_path, cache_env):
    root = make_brain(tmp_path / "brain")
    (root / "Testing" / "glioma" / "Te-gl_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    (root / "Training" / ".DS_Store").write_bytes(b"\0")
    bmp = write_image(root / "Training" / "notumor" / "Tr-no_bmp.bmp", size=(64, 64))
    bmp.write_bytes(bmp.read_bytes()[:-2000])  # only a full decode notices
    out = tmp_path / "r.json"
    rc = main(["inspect", "data=brain_tumor", f"data.root={root}", "--json", str(out),
               "--splits", str(tmp_path / "s.csv"), "-q"])
    assert rc == EXIT_BAD_FILES  # bad files found (the report and the split are written all the same)
    r = json.loads(out.read_text())
    assert r["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
    for cls in r["classes"]:
        on_disk_train = len(list((root / "Training" / cls).glob("*.jpg")))
        on_disk_test = len([p for p in (root / "Testing" / cls).glob("*.jpg") if "broken" not in p.name])
        assert r["splits"]["train"][cls] + r["splits"]["val"][cls] == on_disk_train
        assert r["splits"]["test"][cls] == on_disk_test
    assert r["bad_files"] == sorted([str((root / "Testing" / "glioma" / "Te-gl_broken.jpg").resolve()),
                                     str(bmp.resolve())])
    assert r["groups_across_splits"] == 0 and r["duplicates_across_splits"] == 0
    assert r["duplicates_removed"] == 0 and r["image_modes"] == {"RGB": 22, "L": 12}
    assert (tmp_path / "s.csv").read_text().startswith("path,label,split,group")
    assert any(cache_env.glob("checks/*.json"))  # HDKD_CACHE_DIR honoured



def test_inspect_quiet_lists_only_the_bad_files_and_its_status_says_whether_there_were_any(tmp_path, cache_env,
                                                                                          capsys):
    root = make_brain(tmp_path / "brain")
    out = tmp_path / "r.json"
    args = ["inspect", "data=brain_tumor", f"data.root={root}", "--quick", "-q", "--json", str(out)]
    assert main(args) == 0
    assert capsys.readouterr().out == ""  # nothing wrong, nothing printed
    broken = root / "Testing" / "glioma" / "Te-gl_broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut")
    empty = root / "Training" / "notumor" / "Tr-no_empty.jpg"
    empty.write_bytes(b"")
    assert main(args) == EXIT_BAD_FILES == 3  # documented in the help and the README: 3 = bad files found
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == sorted([str(broken.resolve()), str(empty.resolve())])
    reasons = dict(ln.split("\t") for ln in lines)
    assert reasons[str(empty.resolve())] == "empty file (0 bytes)" and reasons[str(broken.resolve())]
    assert json.loads(out.read_text())["bad_files"] == sorted(reasons)  # the same files as the report


def test_inspect_quiet_lists_csv_rows_without_an_image_as_file_and_line(tmp_path, cache_env, capsys):
    root = make_isic(tmp_path / "isic")
    image = next((root / "ISIC2018_Task3_Training_Input").glob("*.jpg"))
    image.unlink()
    assert main(["inspect", "data=isic2018", f"data.root={root}", "--quick", "-q"]) == EXIT_BAD_FILES
    (line,) = capsys.readouterr().out.splitlines()
    where, reason = line.split("\t")
    assert where.startswith(str(root)) and ".csv:" in where and image.stem in reason

def test_brain_tumor_drops_the_training_copy_of_a_testing_image_by_default(tmp_path, cache_env):
    root = make_brain(tmp_path / "brain")
    copy = root / "Training" / "glioma" / "Tr-gl_9000.jpg"
    shutil.copy(root / "Testing" / "glioma" / "Te-gl_0000.jpg", copy)
    out, splits = tmp_path / "r.json", tmp_path / "s.csv"
    assert main(["inspect", "data=brain_tumor", f"data.root={root}", "--json", str(out), "--splits", str(splits),
                 "-q"]) == 0
    r = json.loads(out.read_text())
    assert r["dedup"] is True and r["duplicates_removed"] == 1 and r["duplicates_across_splits"] == 1
    assert r["splits"]["train"]["glioma"] + r["splits"]["val"]["glioma"] == 6  # the fixture's own 6
    assert "Tr-gl_9000" not in splits.read_text() and "Te-gl_0000" in splits.read_text()
    # data.dedup=false keeps the copy, as the original code did
    assert main(["inspect", "data=brain_tumor", f"data.root={root}", "data.dedup=false", "--json", str(out),
                 "-q"]) == 0
    r = json.loads(out.read_text())
    assert r["dedup"] is False and r["splits"]["train"]["glioma"] + r["splits"]["val"]["glioma"] == 7


def test_inspect_isic_and_cache_command(tmp_path, cache_env):
    root = make_isic(tmp_path / "isic")
    out = tmp_path / "r.json"
    assert main(["inspect", "data=isic2018", f"data.root={root}", "--json", str(out), "-q"]) == 0
    r = json.loads(out.read_text())
    assert {s: sum(v.values()) for s, v in r["splits"].items()} == {"train": 28, "val": 7, "test": 14}
    assert r["splits"]["val"] == {c: 1 for c in r["classes"]}
    assert main(["cache", "data=isic2018", f"data.root={root}", "data.image_size=16", "-q"]) == 0
    assert len(list(cache_env.glob("images/isic2018-*-16px-area-*/images.u8"))) == 1


def test_bad_data_and_bad_config_exit_2(tmp_path, cache_env, capsys):
    assert main(["inspect", "data=ham10000", f"data.root={tmp_path / 'missing'}", "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["inspect", "data=nope", "-q"]) == 2


def test_runs_from_any_directory(tmp_path):
    env = dict(os.environ, HDKD_CACHE_DIR=str(tmp_path / "c"))
    out = tmp_path / "syn.json"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from hdkd_lightning.cli.data import main; sys.exit(main())",
         "inspect", "data=synthetic", "data.num_classes=3", "data.train_samples=12",
         "data.val_samples=3", "data.test_samples=3", "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["classes"] == ["class_0", "class_1", "class_2"]
    assert sum(r["splits"]["train"].values()) == 12 and "class_0" in proc.stdout
    assert not any(p.name == "outputs" for p in Path(tmp_path).iterdir())
