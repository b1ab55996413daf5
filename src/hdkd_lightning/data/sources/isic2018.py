"""ISIC 2018 Task 3, official layout.

Expected below the root (folders/CSVs matched by name, case-insensitive, CSVs anywhere):

* ``ISIC2018_Task3_Training_Input/*.jpg`` + ``ISIC2018_Task3_Training_GroundTruth.csv``
  (columns ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``, one-hot) -- required;
* ``ISIC2018_Task3_Training_LesionGroupings.csv`` (``image,lesion_id,...``) -- optional,
  gives the groups (without it images are split individually and a note says so);
* ``ISIC2018_Task3_Validation_Input`` + ``..._Validation_GroundTruth.csv`` and
  ``ISIC2018_Task3_Test_Input`` + ``..._Test_GroundTruth.csv`` -- the official validation and
  test sets, used when both the folder and its ground truth are present; a missing one is
  carved from training (``data.val_fraction`` / ``data.test_fraction`` of the training set,
  stratified, grouped by lesion).

Subgroup attributes: ``dx_type`` (``diagnosis_confirm_type`` of the lesion groupings) for training
images; ``data.metadata_csv=<...>/HAM10000_metadata.csv`` adds sex, age band and body site
(:mod:`hdkd_lightning.data.metadata`).

Class order: the same as HAM10000 -- **akiec, bcc, bkl, df, mel, nv, vasc** (lower-case HAM
codes, alphabetical). A ground-truth row must have exactly one 1 among the seven columns.
"""

from __future__ import annotations

from pathlib import Path

from hdkd_lightning.data.base import FileSource, Index, Problem, Record
from hdkd_lightning.data.io import iter_files, looks_like_image
from hdkd_lightning.data.sources._common import find_dir, find_named, image_of_row, images_by_id, read_csv
from hdkd_lightning.data.sources.ham10000 import HAM_CLASSES
from hdkd_lightning.errors import DataError

_PREFIX = "ISIC2018_Task3_"
_SPLITS = {"train": "Training", "val": "Validation", "test": "Test"}


def _find_dir_below(root: Path, name: str) -> Path | None:
    direct = find_dir(root, [name])
    if direct is not None:
        return direct
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        hit = find_dir(child, [name])
        if hit is not None:
            return hit
    return None


class Isic2018Source(FileSource):
    name = "isic2018"
    expected_layout = (
        f"  <root>/{_PREFIX}Training_Input/*.jpg\n"
        f"  <root>/{_PREFIX}Training_GroundTruth/{_PREFIX}Training_GroundTruth.csv "
        "(image,MEL,NV,BCC,AKIEC,BKL,DF,VASC)\n"
        f"  <root>/{_PREFIX}Training_LesionGroupings.csv (optional: image,lesion_id)\n"
        f"  optional: {_PREFIX}Validation_Input/ + {_PREFIX}Validation_GroundTruth/...csv, "
        f"{_PREFIX}Test_Input/ + {_PREFIX}Test_GroundTruth/...csv"
    )

    def class_names(self) -> list[str]:
        return list(HAM_CLASSES)

    def index(self) -> Index:
        root = self.check_root()
        files = [f for f in iter_files(root)]
        csvs = [f for f in files if f.suffix.lower() == ".csv"]
        label_of = {n.upper(): i for i, n in enumerate(HAM_CLASSES)}
        records: list[Record] = []
        metadata: dict[str, dict[str, str]] = {}
        problems: list[Problem] = []
        notes: list[str] = []

        groups: dict[str, str] = {}
        confirmed: dict[str, str] = {}  # image -> how the diagnosis was confirmed (dx_type subgroups)
        grouping = find_named(csvs, f"{_PREFIX}Training_LesionGroupings.csv")
        if grouping is not None:
            grouping_rows = read_csv(grouping, ["image", "lesion_id"])
            groups = {r["image"].lower(): r["lesion_id"] for r in grouping_rows if r["lesion_id"]}
            confirmed = {r["image"].lower(): r["diagnosis_confirm_type"] for r in grouping_rows
                         if r.get("diagnosis_confirm_type")}
        else:
            notes.append(f"no {_PREFIX}Training_LesionGroupings.csv: images are split one by one "
                         f"(images of one lesion may land in different splits)")

        for split, word in _SPLITS.items():
            folder = _find_dir_below(root, f"{_PREFIX}{word}_Input")
            gt = find_named(csvs, f"{_PREFIX}{word}_GroundTruth.csv")
            if folder is None or gt is None:
                if split == "train":
                    what = f"{_PREFIX}Training_Input/" if folder is None else \
                        f"{_PREFIX}Training_GroundTruth.csv"
                    raise self.layout_error(f"no {what}")
                if folder is not None or gt is not None:
                    notes.append(f"official {word} set ignored: "
                                 f"{'ground truth' if gt is None else 'input folder'} missing")
                else:
                    notes.append(f"no official {word} set: carved from training")
                continue
            rows = read_csv(gt, ["image", *[c.upper() for c in HAM_CLASSES]])
            images = [f for f in files if folder in f.parents and looks_like_image(f)]
            by_id = images_by_id(images, notes, str(folder))
            listed = set()
            for n, row in enumerate(rows, start=2):
                key = row["image"].lower()
                if key in listed:
                    raise DataError(f"{gt} lists image {row['image']!r} twice (line {n}); remove "
                                    f"the repeated row.")
                listed.add(key)
                path = image_of_row(by_id, row["image"], gt, n, "image", folder, problems)
                if path is None:
                    continue
                hot = []
                for code, i in label_of.items():
                    try:
                        if float(row[code] or 0) >= 0.5:
                            hot.append(i)
                    except ValueError:
                        hot = []
                        break
                if len(hot) != 1:
                    problems.append(Problem("unknown_label", str(path),
                                            f"line {n} of {gt.name} is not one-hot over "
                                            f"{list(label_of)}"))
                    continue
                group = groups.get(key) if split == "train" else None
                records.append(Record(str(path), hot[0], group, None if split == "train" else split))
                if key in confirmed:
                    metadata[str(path)] = {"dx_type": confirmed[key]}
            problems.extend(Problem("unlisted_image", str(p), f"no row in {gt.name}")
                            for k, p in sorted(by_id.items()) if k not in listed)
        train_labels = {r.label for r in records if r.split is None}
        empty = [c for i, c in enumerate(HAM_CLASSES) if i not in train_labels]
        if empty:
            raise DataError(f"{_PREFIX}Training_GroundTruth.csv under {root}: no usable training "
                            f"image for class(es) {empty} (empty class).")
        return Index(records, list(HAM_CLASSES), problems, notes, metadata, str(grouping) if metadata else None)
