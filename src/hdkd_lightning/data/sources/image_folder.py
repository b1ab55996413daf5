"""The original HDKD code's layout: ``train/<class>/``, ``test/<class>/``, optional ``val/<class>/``.

Class names are the sorted folder names of ``train/`` (as torchvision's ImageFolder does).
``val/`` (also accepted: ``valid/``, ``validation/``) is used when present, otherwise carved
from ``train/`` (stratified, ``data.val_fraction``); ``test/`` is carved too when absent
(``data.test_fraction``). Folder names are matched case-insensitively.
"""

from __future__ import annotations

from hdkd_lightning.data.sources._common import ClassFolderSource


class ImageFolderSource(ClassFolderSource):
    name = "image_folder"
    expected_layout = (
        "  <root>/train/<class>/*.jpg\n"
        "  <root>/test/<class>/*.jpg    (carved from train/ when absent)\n"
        "  <root>/val/<class>/*.jpg     (optional; carved from train/ when absent)"
    )
    split_dirs = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
    required = ("train",)
