"""Every run records what made it, and later commands use that record (issue: results you can trust).

Real commands on the 3-class image folder (files, so images are known by their content hash).
"""

from __future__ import annotations

import csv
import json
import shutil

import yaml

from .conftest import FOLDER

#: an evaluation normalisation other than ImageNet's, to show that predictions follow the run's own
CUSTOM_EVAL = ("data.transforms.eval=[{_target_:albumentations.Normalize,mean:[0.5,0.5,0.5],std:[0.25,0.25,0.25],"
               "max_pixel_value:255.0},{_target_:albumentations.pytorch.ToTensorV2}]")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _probs(path):
    return {r["path"]: [float(v) for k, v in r.items() if k.startswith("prob_")] for r in _rows(path)}


def test_a_teacher_that_trained_on_the_students_evaluation_images_is_refused(runner, image_folder):
    data = FOLDER + [f"data.root={image_folder}"]
    # another val carving: some of this teacher's training images are the default split's validation images
    runner.run("train", data + ["model=teacher", "task_name=leaky_teacher", "data.split_seed=5"])
    teacher = runner.latest_run("leaky_teacher")
    proc = runner.run("train", data + ["model=distill", "task_name=leaky_hdkd",
                                       f"model.teacher.ckpt_path={teacher / 'checkpoints' / 'best.ckpt'}"], check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("hdkd-train: error:")]
    assert len(error) == 1 and "trained on" in error[0] and "validation/test images" in error[0]
    assert "data.split_seed" in error[0]  # the fix
    assert not (runner.log_dir / "leaky_hdkd").exists()  # nothing left behind

    # hdkd-eval scores the teacher on the split it recorded, not on a carving of today's data.split_seed
    runner.run("evaluate", FOLDER[:4] + [f"data.root={image_folder}", f"ckpt_path={teacher / 'checkpoints' / 'best.ckpt'}",
                                     "split=val", "report.bootstrap=200"])
    run = runner.latest_run("eval")
    recorded_val = sorted(str(image_folder / r["path"]) for r in _rows(teacher / "splits.csv") if r["split"] == "val")
    assert sorted(_probs(run / "predictions.csv")) == recorded_val
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split_source"] == "the split recorded in the checkpoint" and metrics["external_data"] is False
    assert metrics["images_seen_in_training"] == {"val": 0}
    assert metrics["data_record"]["split"]["seed"] == 5


def test_predictions_follow_the_preprocessing_the_model_was_trained_with(runner, image_folder, tmp_path):
    data = FOLDER + [f"data.root={image_folder}"]
    runner.run("train", data + ["model=teacher", "task_name=prep_teacher", "data.interpolation=linear", CUSTOM_EVAL])
    run = runner.latest_run("prep_teacher")
    record = json.loads((run / "run.json").read_text())["data_record"]
    assert record["preprocessing"]["interpolation"] == "linear"
    assert record["preprocessing"]["eval"][0]["mean"] == [0.5, 0.5, 0.5]
    out = tmp_path / "pred.csv"
    runner.run("predict", [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"input={image_folder / 'test'}",
                           f"output={out}"])
    got, want = _probs(out), _probs(run / "predictions.csv")
    assert sorted(got) == sorted(want)
    assert max(abs(a - b) for p in want for a, b in zip(got[p], want[p])) < 1e-4


def test_a_resumed_distillation_keeps_its_teacher_when_a_newer_one_finished(runner, folder_runs, image_folder):
    hdkd_run = folder_runs["hdkd"].parent.parent
    copy = runner.log_dir / "resume_hdkd" / "runs" / "copy"
    shutil.copytree(hdkd_run, copy)
    first_teacher = yaml.safe_load((copy / "config_resolved.yaml").read_text())["model"]["teacher"]["resolved"]["path"]
    # a newer completed run of the teacher experiment appears meanwhile
    newer = folder_runs["teacher"].parent.parent.parent / "zz_newer"
    shutil.copytree(folder_runs["teacher"].parent.parent, newer)
    state = json.loads((newer / "run.json").read_text())
    state["finished_at"] = "2999-01-01T00:00:00+00:00"
    (newer / "run.json").write_text(json.dumps(state))
    try:
        runner.run("train", FOLDER + [f"data.root={image_folder}",
                                      "model=distill", "task_name=resume_hdkd", "model.teacher.experiment=ship_teacher",
                                      f"ckpt_path={copy / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2"])
    finally:
        shutil.rmtree(newer)
    resolved = yaml.safe_load((copy / "config_resolved.yaml").read_text())["model"]["teacher"]["resolved"]
    assert resolved["path"] == first_teacher != str(newer / "checkpoints" / "best.ckpt")
    record = json.loads((copy / "run.json").read_text())["data_record"]
    assert record["teacher"]["path"] == first_teacher


def test_checkpoints_of_earlier_versions_still_evaluate_and_predict(runner, folder_runs, image_folder, tmp_path):
    import torch

    ckpt = torch.load(folder_runs["teacher"], map_location="cpu", weights_only=True)
    assert "provenance" in ckpt["hdkd"]
    del ckpt["hdkd"]["provenance"]  # what hdkd-train wrote before data records existed
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    proc = runner.run("evaluate", FOLDER[:4] + [f"data.root={image_folder}", f"ckpt_path={old}", "report.bootstrap=200"])
    assert proc.stderr.count("has no data record") + proc.stdout.count("has no data record") == 1
    metrics = json.loads((runner.latest_run("eval") / "metrics.json").read_text())
    assert metrics["data_record"] is None and metrics["external_data"] is None
    proc = runner.run("predict", [f"ckpt_path={old}", f"input={image_folder / 'test'}", f"output={tmp_path / 'p.csv'}"])
    assert "records no preprocessing" in proc.stderr + proc.stdout
    assert len(_rows(tmp_path / "p.csv")) == len(list((image_folder / "test").rglob("*.png")))
    proc = runner.run("export", [f"ckpt_path={old}", "format=pt2", f"output={tmp_path / 'old.pt2'}"])
    assert (proc.stderr + proc.stdout).count("records no preprocessing") == 1
    card = json.loads((tmp_path / "old.pt2.json").read_text())
    assert card["preprocessing"]["recorded_in_checkpoint"] is False
    assert card["preprocessing"]["interpolation"] == "area"


def test_eval_without_data_names_the_data_the_checkpoint_was_trained_on(runner, folder_runs, image_folder):
    base = [f"ckpt_path={folder_runs['teacher']}", "trainer=cpu", "report.bootstrap=200", "data.num_workers=0"]
    proc = runner.run("evaluate", base, check=False)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("hdkd-eval: error:")]
    assert len(error) == 1 and "no data= given" in error[0]
    hint = error[0].split("; add ", 1)[1].split(" (or ", 1)[0]  # the overrides to add, as printed
    assert hint == f"data=image_folder data.root={image_folder}"
    runner.run("evaluate", base + hint.split())  # following the hint works
    metrics = json.loads((runner.latest_run("eval") / "metrics.json").read_text())
    assert metrics["split_source"] == "the split recorded in the checkpoint"
    # a training run's own metrics.json names the checkpoint it tested
    trained = json.loads((folder_runs["teacher"].parent.parent / "metrics.json").read_text())
    assert trained["checkpoint"].endswith("best.ckpt")


def test_a_teacher_of_another_image_size_is_refused_before_the_image_cache_is_built(runner, folder_runs, image_folder):
    proc = runner.run("train", FOLDER + [f"data.root={image_folder}", "data.image_size=48", "model=distill",
                                         "task_name=size_hdkd", f"model.teacher.ckpt_path={folder_runs['teacher']}"],
                      check=False)
    assert proc.returncode == 2 and "image size 32" in proc.stderr
    assert not list((runner.root / "cache").glob("**/*48px*"))
