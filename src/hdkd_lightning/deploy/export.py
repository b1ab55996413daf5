"""Exports of a trained network, each checked against PyTorch before it is kept.

* ``onnx``: the deployed network (BatchNorm folded), traced with ``torch.export`` and converted
  by ``torch.onnx`` (opset 20), dynamic batch axis, input ``image``, output ``logits``; the file
  passes ``onnx.checker``; parity is measured with ONNX Runtime.
* ``pt2``: the same ``torch.export`` program saved with ``torch.export.save``: loadable with
  ``torch.export.load`` without this package (only aten operators inside), dynamic batch.
* ``timm``: the plain (unfolded) state dict, so that after ``import hdkd_lightning``
  ``timm.create_model(arch, **net_kwargs, checkpoint_path=file)`` rebuilds the network
  (``.safetensors`` when the output has that suffix, else a ``torch.save`` file).

Every export writes its model card (:mod:`hdkd_lightning.deploy.card`). Parity: the largest
absolute logit difference against the checkpoint's network in eval mode, on the given images
(real ones when the command has data, random otherwise); above ``tolerance`` (1e-4 in fp32) the
export fails and nothing is left at the output path (files are written to a temporary name and
moved into place only after the check).
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from hdkd_lightning.deploy.card import card_path, write_card
from hdkd_lightning.deploy.folding import deploy_student
from hdkd_lightning.deploy.recipe import inference_recipe
from hdkd_lightning.files import publish, sha256_file

__all__ = ["FORMATS", "ExportError", "export_network", "exported_program", "write_onnx", "run_onnx",
           "max_logit_diff"]

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "timm": ".pth"}
ONNX_OPSET = 20  # 20: native Gelu (ONNX Runtime fuses nothing from erf otherwise)


class ExportError(ValueError):
    """An export that cannot be made or that does not reproduce the network."""


def max_logit_diff(a: Any, b: Any) -> float:
    a = torch.as_tensor(a, dtype=torch.float32)
    b = torch.as_tensor(b, dtype=torch.float32)
    return float((a - b).abs().max())


def exported_program(module: nn.Module, example: torch.Tensor, fold: bool = True):
    """``torch.export`` program of ``module`` (BatchNorm folded first when ``fold``) with a dynamic batch."""
    module = deploy_student(module, channels_last=False) if fold else module.eval()  # NCHW: portable
    name = next(iter(inspect.signature(module.forward).parameters))
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.export.export(module, (example,), dynamic_shapes={name: {0: batch}})


def write_onnx(program, path: Union[str, Path]) -> None:
    """An exported program as ONNX (opset 20; input ``image``, output ``logits``), checked by onnx."""
    import onnx

    onnx_program = torch.onnx.export(program, input_names=["image"], output_names=["logits"],
                                     opset_version=ONNX_OPSET, dynamo=True, verbose=False)
    onnx_program.save(str(path))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def run_onnx(path: Union[str, Path], images: torch.Tensor):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": images.numpy().astype("float32")})[0]


def export_network(net: nn.Module, meta: Dict[str, Any], fmt: str, output: Union[str, Path],
                   images: torch.Tensor, inputs_desc: str, source: Union[str, Path],
                   tolerance: float = 1e-4, test_metrics: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Export ``net`` (eval mode, as rebuilt from its checkpoint) and return its model card."""
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt}: choose one of {', '.join(FORMATS)}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    with torch.no_grad():
        reference = net(images)
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.", suffix=output.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if fmt == "timm":
            _write_timm(net, tmp, output.suffix)
            got = _run_timm(meta, tmp, images)
        else:
            program = exported_program(net, images[:2])
            if fmt == "onnx":
                write_onnx(program, tmp)
                got = run_onnx(tmp, images)
            else:
                from hdkd_lightning.deploy.safe_load import load_pt2

                torch.export.save(program, str(tmp))
                with torch.no_grad():  # read back as hdkd-predict reads it: every export passes its checks
                    got = load_pt2(tmp).module()(images)
        diff = max_logit_diff(got, reference)
        if not diff <= tolerance:
            raise ExportError(f"{fmt} export of {source} does not reproduce the network: max |logit difference| "
                              f"{diff:.3g} > {tolerance:g} on {inputs_desc}; nothing was written to {output}")
        publish(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    card = _card(net, meta, fmt, output, source, diff, tolerance, len(images), inputs_desc, test_metrics)
    write_card(output, card)
    return card


def _write_timm(net: nn.Module, path: Path, suffix: str) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


def _run_timm(meta: Dict[str, Any], path: Path, images: torch.Tensor):
    """What a timm user gets: ``timm.create_model(arch, **net_kwargs, checkpoint_path=...)``."""
    import timm

    import hdkd_lightning.models  # noqa: F401  (registers the architectures)

    # timm logs "Loaded  from checkpoint '<path>'" at INFO: here the path is this check's temporary file, gone a
    # moment later, and the export's own last line names the file it wrote
    helpers = logging.getLogger("timm.models._helpers")
    level = helpers.level
    helpers.setLevel(max(logging.WARNING, level))
    try:
        model = timm.create_model(meta["arch"], checkpoint_path=str(path), **meta["net_kwargs"]).eval()
    finally:
        helpers.setLevel(level)
    with torch.no_grad():
        return model(images)


def _card(net, meta, fmt, output, source, diff, tolerance, n_images, inputs_desc, test_metrics) -> Dict[str, Any]:
    import hdkd_lightning

    versions = {"hdkd_lightning": hdkd_lightning.__version__, "torch": torch.__version__}
    if fmt == "onnx":
        import onnx

        versions.update(onnx=onnx.__version__, opset=ONNX_OPSET)
    card: Dict[str, Any] = {
        "format": fmt, "file": output.name, "arch": meta["arch"], "net_kwargs": dict(meta["net_kwargs"]),
        "class_names": list(meta["class_names"]), "image_size": int(meta["image_size"]),
        "params": sum(p.numel() for p in net.parameters()),
        "preprocessing": inference_recipe(meta).card_entry(),
        "input": "image", "output": "logits", "outputs_are": "logits (softmax not applied)",
        "temperature": meta.get("temperature"),
        "source_checkpoint": {"path": str(Path(source).resolve()), "sha256": sha256_file(source)},
        "test_metrics": test_metrics,
        "parity": {"max_abs_logit_diff": diff, "tolerance": tolerance, "images": n_images, "inputs": inputs_desc},
        "exported_with": versions,
    }
    if fmt == "timm":
        kwargs = ", ".join(f"{k}={v!r}" for k, v in meta["net_kwargs"].items())
        card["load_with"] = (f"import hdkd_lightning, timm; timm.create_model({meta['arch']!r}, {kwargs}, "
                             f"checkpoint_path={output.name!r})")
    elif fmt == "pt2":
        card["load_with"] = f"import torch; torch.export.load({output.name!r}).module()"
    else:
        card["load_with"] = f"import onnxruntime; onnxruntime.InferenceSession({output.name!r})"
    card["card"] = card_path(output).name
    return card
