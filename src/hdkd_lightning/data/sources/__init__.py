"""Dataset sources: one module per layout, each turning a root folder into records.

Adding a dataset = a module here with a class implementing
:class:`hdkd_lightning.data.base.Source` + ``conf/data/<name>.yaml`` whose ``source`` key
names the class (a short name registered below or a dotted path ``package.module.Class``).
"""

from __future__ import annotations

import importlib

SOURCES = {
    "ham10000": "hdkd_lightning.data.sources.ham10000.Ham10000Source",
    "isic2018": "hdkd_lightning.data.sources.isic2018.Isic2018Source",
    "brain_tumor": "hdkd_lightning.data.sources.brain_tumor.BrainTumorSource",
    "image_folder": "hdkd_lightning.data.sources.image_folder.ImageFolderSource",
    "synthetic": "hdkd_lightning.data.sources.synthetic.SyntheticSource",
}


def resolve_source(name: str) -> type:
    """The source class for a short name (``ham10000``) or a dotted path."""
    from hdkd_lightning.errors import DataError

    target = SOURCES.get(name, name)
    module, _, cls = target.rpartition(".")
    if not module:
        raise DataError(f"data.source={name!r} is not a known source ({sorted(SOURCES)}) nor a "
                        f"dotted path package.module.Class.")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise DataError(f"data.source={name!r} cannot be imported ({e}); known sources: "
                        f"{sorted(SOURCES)}.") from e
