"""Brain Tumor MRI (Kaggle, M. Nickparvar): ``Training/`` and ``Testing/`` class folders.

Classes (sorted folder names): glioma, meningioma, notumor, pituitary. ``Testing/`` is the
test split; validation is carved from ``Training/`` (stratified, ``data.val_fraction`` of it,
default 15%). The dataset has hundreds of byte-identical copies across and within the
folders: ``conf/data/brain_tumor.yaml`` sets ``data.dedup=true``, which removes them (a Testing
copy wins over a Training copy); ``data.dedup=false`` keeps them, as the original code did. Images
are not grouped (no patient ids are distributed).
"""

from __future__ import annotations

from hdkd_lightning.data.sources._common import ClassFolderSource


class BrainTumorSource(ClassFolderSource):
    name = "brain_tumor"
    expected_layout = (
        "  <root>/Training/<class>/*.jpg   (glioma, meningioma, notumor, pituitary)\n"
        "  <root>/Testing/<class>/*.jpg"
    )
    split_dirs = {"train": ("Training",), "test": ("Testing",)}
    required = ("train", "test")
