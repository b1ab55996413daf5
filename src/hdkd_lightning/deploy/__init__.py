"""Deployment: the inference form of a trained network, its exported files and the backends that run them.

* :mod:`~hdkd_lightning.deploy.folding`: BatchNorm folded into convolutions, channels-last,
  optional low precision (``deploy_student``, ``prepare_teacher``). Re-exported here.
* :mod:`~hdkd_lightning.deploy.export`: ONNX, ``torch.export`` (pt2) and timm weight files, each
  with a model card and a parity check (``hdkd-export``).
* :mod:`~hdkd_lightning.deploy.card`: the model card (``<name>.json``) that travels with an export.
* :mod:`~hdkd_lightning.deploy.backends`: one predictor interface over a checkpoint, a pt2 program
  and an ONNX Runtime session (``hdkd-predict``).
* :mod:`~hdkd_lightning.deploy.safe_load`: ``.pt2`` and ``.onnx`` files from elsewhere, checked to
  hold no code (and to name no other file) before they are loaded.
* :mod:`~hdkd_lightning.deploy.quantize`: ONNX Runtime int8 (static, calibrated on training images).

Only the folding helpers are imported with the package; the rest (onnx, onnxruntime) load on use.
"""

from hdkd_lightning.deploy.folding import count_batchnorms, deploy_student, fold_batchnorm, prepare_teacher

__all__ = ["fold_batchnorm", "prepare_teacher", "deploy_student", "count_batchnorms"]
