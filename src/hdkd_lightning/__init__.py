"""hdkd-lightning: HDKD knowledge distillation for medical image classification.

Importing the package registers the networks with timm (``hdkd_teacher``, ``hdkd_student``,
``hdkd_student_distilled``). Heavy modules (Lightning, data, CLI) are imported lazily by the
code that needs them, so ``import hdkd_lightning`` costs little beyond torch and timm.
"""

__version__ = "0.1.0"

from hdkd_lightning import models  # noqa: E402,F401  (registers the timm factories)
