"""One way to run a trained network, whatever it was saved as: a checkpoint, a pt2 program or ONNX.

:func:`load_predictor` returns a :class:`Predictor`: ``predictor(images)`` takes a float32
``[B, 3, S, S]`` batch (the evaluation preprocessing of the model card) and returns the
class probabilities as a float32 numpy array ``[B, C]`` (softmax of logits / temperature); its
``recipe`` (:mod:`hdkd_lightning.deploy.recipe`) says how images are preprocessed for it.

* ``.ckpt``: the checkpoint's deployable network in its deployed form (BatchNorm folded;
  channels-last on CUDA, NCHW on the CPU where it measured faster), on ``device``.
* ``.pt2``: ``torch.export.load(...).module()``, on ``device``, once the archive has been checked
  to hold no code (:func:`hdkd_lightning.deploy.safe_load.load_pt2`).
* ``.onnx``: an ONNX Runtime session with the CUDA provider when ``device`` is CUDA and the
  provider is installed, the CPU provider otherwise; ``threads`` sets its intra-op threads.

``device="auto"`` is CUDA when available, else the CPU. The metadata (class names, image size,
temperature) comes from the checkpoint, or from the model card beside an exported file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from hdkd_lightning.deploy.recipe import inference_recipe

__all__ = ["Predictor", "load_predictor", "resolve_device", "FORMAT_OF_SUFFIX"]

FORMAT_OF_SUFFIX = {".ckpt": "checkpoint", ".pt2": "pt2", ".onnx": "onnx"}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` without a GPU is a clear error."""
    device = str(device).lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but no CUDA GPU is visible; use device=cpu or device=auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device={device}: choose auto, cpu or cuda (cuda:N)")
    return torch.device(device)


class Predictor:
    """Probabilities from a batch of preprocessed images (see the module docstring)."""

    def __init__(self, run, meta: Dict[str, Any], fmt: str, device: torch.device, where: str) -> None:
        self._run = run
        self.meta = meta
        self.format = fmt
        self.device = device
        self.where = where  # where the network runs, for messages ("onnxruntime CPUExecutionProvider", ...)
        self.recipe = inference_recipe(meta)

    @property
    def class_names(self):
        return list(self.meta["class_names"])

    @property
    def image_size(self) -> int:
        return self.recipe.image_size

    def logits(self, images: torch.Tensor) -> np.ndarray:
        return np.asarray(self._run(images), dtype=np.float32)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.recipe.probabilities(torch.from_numpy(self.logits(images))).numpy()


def _torch_runner(module: torch.nn.Module, device: torch.device, channels_last: bool):
    def run(images: torch.Tensor):
        x = images.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module(x).float().cpu().numpy()
    return run


def load_predictor(path: Union[str, Path], device: str = "auto", card: Optional[Union[str, Path]] = None,
                   threads: Optional[int] = None) -> Predictor:
    """A :class:`Predictor` for a checkpoint, a ``.pt2`` program or an ``.onnx`` model."""
    path = Path(path)
    fmt = FORMAT_OF_SUFFIX.get(path.suffix.lower(), "checkpoint")
    dev = resolve_device(device)
    if fmt == "checkpoint":
        from hdkd_lightning.checkpoints import network_from_checkpoint
        from hdkd_lightning.deploy.folding import deploy_student

        net, meta = network_from_checkpoint(path)
        channels_last = dev.type == "cuda"
        deployed = deploy_student(net, channels_last=channels_last).to(dev)
        return Predictor(_torch_runner(deployed, dev, channels_last), meta, fmt, dev,
                         f"PyTorch on {dev} (BatchNorm folded{', channels-last' if channels_last else ''})")
    from hdkd_lightning.deploy.card import read_card
    from hdkd_lightning.deploy.safe_load import load_pt2, onnx_model_bytes

    meta = read_card(path, card)
    if fmt == "pt2":
        program = load_pt2(path)
        if dev.type != "cpu":  # constants and device arguments recorded in the graph move too, not only weights
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, dev)
        module = program.module()
        return Predictor(_torch_runner(module, dev, False), meta, fmt, dev, f"torch.export program on {dev}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    providers = ["CPUExecutionProvider"]
    if dev.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("device=cuda but this onnxruntime has no CUDAExecutionProvider; install "
                             "onnxruntime-gpu or use device=cpu")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    session = ort.InferenceSession(onnx_model_bytes(path), options, providers=providers)  # checked bytes, no external data

    def run(images: torch.Tensor):
        return session.run(["logits"], {"image": images.numpy().astype(np.float32, copy=False)})[0]
    return Predictor(run, meta, fmt, dev, f"onnxruntime {session.get_providers()[0]}")
