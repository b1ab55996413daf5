"""HAM10000: ``HAM10000_metadata.csv`` + images found by ``image_id`` anywhere below the root.

Layout as distributed: ``HAM10000_images_part_1/``, ``HAM10000_images_part_2/`` (any letter
case; Kaggle copies ship both cases, so an id found twice keeps the first path in sorted order)
or one flat folder. The CSV may be anywhere below the root (the shallowest copy is used).

Class order (shared with ISIC 2018, documented in ``conf/data/ham10000.yaml``): the lower-case
HAM ``dx`` codes in alphabetical order, **akiec, bcc, bkl, df, mel, nv, vasc** (as
torchvision's ImageFolder would sort class folders, i.e. what the original code saw).

Subgroup attributes (:mod:`hdkd_lightning.data.metadata`): sex, age band, body site and diagnosis
type from the same CSV.

Groups are ``lesion_id``: all images of one lesion stay in one split. There is no official
split: train/val/test are carved 70/15/15 by default (``data.val_fraction``,
``data.test_fraction``, ``data.seed``), stratified by class and grouped by lesion.
"""

from __future__ import annotations

from hdkd_lightning.data.base import FileSource, Index, Problem, Record
from hdkd_lightning.data.io import iter_files, looks_like_image
from hdkd_lightning.data.metadata import ham_attributes
from hdkd_lightning.data.sources._common import find_named, image_of_row, images_by_id, read_csv
from hdkd_lightning.errors import DataError

HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
METADATA = "HAM10000_metadata.csv"


class Ham10000Source(FileSource):
    name = "ham10000"
    expected_layout = (
        f"  <root>/{METADATA}   (columns lesion_id,image_id,dx,...)\n"
        "  <root>/HAM10000_images_part_1/ISIC_*.jpg and HAM10000_images_part_2/ISIC_*.jpg\n"
        "  (any letter case, or all images in one folder anywhere below the root)"
    )

    def class_names(self) -> list[str]:
        return list(HAM_CLASSES)

    def index(self) -> Index:
        root = self.check_root()
        files = list(iter_files(root))
        csv_file = find_named(files, METADATA)
        if csv_file is None:
            raise self.layout_error(f"no {METADATA} below the root")
        rows = read_csv(csv_file, ["lesion_id", "image_id", "dx"])
        notes: list[str] = [f"metadata: {csv_file}"]
        images = [f for f in files if f != csv_file and not f.suffix.lower() == ".csv"
                  and looks_like_image(f)]
        by_id = images_by_id(images, notes, str(root))
        if not by_id:
            raise self.layout_error("no image files below the root")
        label_of = {n: i for i, n in enumerate(HAM_CLASSES)}
        records: list[Record] = []
        metadata: dict[str, dict[str, str]] = {}
        problems: list[Problem] = []
        listed: set[str] = set()
        repeated = []
        for n, row in enumerate(rows, start=2):
            image_id = row["image_id"]
            key = image_id.lower()
            if key in listed:
                repeated.append(f"{image_id} (line {n})")
                continue
            listed.add(key)
            path = image_of_row(by_id, image_id, csv_file, n, "image_id", root, problems)
            if path is None:
                continue
            dx = row["dx"].lower()
            if dx not in label_of:
                problems.append(Problem("unknown_label", str(path),
                                        f"dx {row['dx']!r} (line {n}) is not one of {HAM_CLASSES}"))
                continue
            records.append(Record(str(path), label_of[dx], row["lesion_id"] or None, None))
            metadata[str(path)] = ham_attributes(row)
        if repeated:
            raise DataError(f"{csv_file} lists {len(repeated)} image_id(s) more than once: "
                            f"{', '.join(repeated[:5])}; remove the repeated rows.")
        problems.extend(Problem("unlisted_image", str(p), f"no row in {csv_file.name}")
                        for k, p in sorted(by_id.items()) if k not in listed)
        empty = [c for i, c in enumerate(HAM_CLASSES) if not any(r.label == i for r in records)]
        if empty:
            raise DataError(f"{csv_file}: no usable image for class(es) {empty} (empty class); "
                            f"every one of {HAM_CLASSES} needs images.")
        return Index(records, list(HAM_CLASSES), problems, notes, metadata, str(csv_file))
