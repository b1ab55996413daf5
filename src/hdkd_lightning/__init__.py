"""hdkd-lightning: HDKD knowledge distillation for medical image classification.

Importing the package registers the networks with timm (``hdkd_teacher``, ``hdkd_student``,
``hdkd_student_distilled``): ``import hdkd_lightning, timm; timm.create_model("hdkd_student", ...)``.

The registration waits for timm: when timm is already imported it happens here and now; otherwise
it happens the moment timm finishes importing (a finder on ``sys.meta_path`` that removes itself
once it has fired). So ``import hdkd_lightning`` imports neither torch nor timm, and a command's
``--help`` starts in well under a second instead of paying for torch, timm and torchvision (several
seconds on a small CPU); every command imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

__version__ = "0.1.0"


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Finds ``timm`` through the other finders and, once timm's own code has run, imports
    ``hdkd_lightning.models`` (whose ``@register_model`` factories register the networks)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None  # no timm installed: the import fails as it would without this finder
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        try:
            own = vars(loader).get("exec_module")  # None: the loader's class method (the usual case)
        except TypeError:  # a loader object without attributes of its own: nothing to wrap
            return spec

        def exec_module(module):
            # the loader as it was, first: one loader object may serve other modules (a zip importer)
            if own is None:
                del loader.exec_module
            else:
                loader.exec_module = own
            loader.exec_module(module)
            _stop_waiting()
            importlib.import_module("hdkd_lightning.models")

        # wrapped on the loader object itself, so the module keeps timm's real loader (its resources, its type)
        loader.exec_module = exec_module
        return spec


def _stop_waiting() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterWithTimm)]


if "timm" in sys.modules:
    importlib.import_module("hdkd_lightning.models")
elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())
