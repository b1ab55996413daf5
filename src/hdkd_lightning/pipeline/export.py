"""``hdkd-export``: a checkpoint's deployable network as ONNX, a pt2 program or timm weights, with its
model card; optionally an ONNX Runtime int8 model, checked for accuracy on the data."""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from omegaconf import DictConfig, open_dict

from hdkd_lightning.errors import ConfigError

log = logging.getLogger("hdkd_lightning")

__all__ = ["run_export"]


def _data_module(cfg: DictConfig, meta: Dict[str, Any]):
    """The data of ``data=...`` for the parity images and the int8 gate: the split the checkpoint recorded
    when these are the data it was trained on (pipeline.build.build_checkpoint_datamodule), checked
    against its classes. The decision is logged (and kept in the int8 report)."""
    from hdkd_lightning.pipeline.build import build_checkpoint_datamodule

    with open_dict(cfg):
        cfg.data.num_workers = 0
    dm, info = build_checkpoint_datamodule(cfg, meta, ("val", "test"))
    if list(dm.class_names) != list(meta["class_names"]):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} has classes {meta['class_names']} but the data has "
                          f"{list(dm.class_names)}; give the dataset the model was trained on")
    log.info("export data: %s", info["split_source"])
    return dm, info


def _batches(dm, split: str, limit: Optional[int] = None, batch_size: int = 64) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Preprocessed images and labels of a split (evaluation pipeline), at most ``limit`` images."""
    ds = dm.dataset(split, train_transform=False)
    n = len(ds) if limit is None else min(limit, len(ds))
    for start in range(0, n, batch_size):
        items = [ds[i] for i in range(start, min(n, start + batch_size))]
        yield torch.stack([it["image"] for it in items]), torch.tensor([int(it["label"]) for it in items])


def _parity_images(cfg: DictConfig, meta: Dict[str, Any], dm) -> Tuple[torch.Tensor, str]:
    n = int(cfg.parity_images)
    if dm is not None:
        images = torch.cat([x for x, _ in _batches(dm, "test", n)])
        return images, f"{len(images)} test images of data={dm.source_name}"
    if cfg.get("input"):
        from hdkd_lightning.deploy.recipe import inference_recipe

        source = Path(str(cfg.input)).expanduser()
        if not source.exists():
            raise ConfigError(f"input={cfg.input}: no such file or folder")
        # hdkd-export has no on_bad_image / max_image_pixels keys: the fix of a bad file must not name them
        pdm = inference_recipe(meta).image_files(source, meta["class_names"], batch_size=n, key_prefix=None)
        images = next(iter(pdm.predict_dataloader()))["image"][:n]
        return images, f"{len(images)} images from {source}"
    gen = torch.Generator().manual_seed(int(cfg.seed))
    size = int(meta["image_size"])
    return torch.randn(n, 3, size, size, generator=gen), f"{n} random N(0, 1) inputs (no data or input given)"


def _test_metrics(ckpt: Path) -> Optional[Dict[str, Any]]:
    """The test metrics of a run's best checkpoint (its run folder's metrics.json), if known."""
    metrics = ckpt.parent.parent / "metrics.json"
    if ckpt.name == "best.ckpt" and ckpt.parent.name == "checkpoints" and metrics.is_file():
        data = json.loads(metrics.read_text())
        return {k: data.get(k) for k in ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro", "num_samples")}
    return None


def _balanced_accuracy(run, dm, split: str, class_names) -> Optional[float]:
    from hdkd_lightning.evaluation.metrics import compute_metrics

    if not dm.split_records(split):
        return None
    probs, labels = [], []
    for x, y in _batches(dm, split):
        probs.append(torch.softmax(torch.as_tensor(run(x)), dim=1))
        labels.append(y)
    return compute_metrics(class_names, torch.cat(labels), torch.cat(probs))["balanced_accuracy"]


def _latency_ms(run, size: int, repeats: int = 50) -> Dict[str, float]:
    x = torch.randn(1, 3, size, size)
    run(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]}


def _int8(cfg: DictConfig, output: Path, card: Dict[str, Any], dm, data_info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The int8 model of an ONNX export, calibrated on training images and checked on validation.

    Data without validation images are refused (``ConfigError``, before quantising; the fp32 export
    is kept) rather than checked on another split: the training images are the calibration set, and
    accepting the model on test images would make the test figures reported beside it part of the choice.
    """
    from hdkd_lightning.deploy.card import write_card
    from hdkd_lightning.deploy.export import ExportError
    from hdkd_lightning.deploy.quantize import quantize_int8

    if dm is None:
        raise ConfigError("int8=true needs training images to calibrate on and a validation split to check "
                          "accuracy: add data=<name> data.root=<dir>")
    if not dm.split_records("val"):
        raise ConfigError(f"int8=true checks the int8 model on the validation split and data={dm.source_name} has no "
                          f"validation images here: give it some (data.val_fraction > 0, e.g. 0.15, or a data.split_file "
                          f"with val rows); the test split is not used to accept a model. The fp32 model {output} is kept")
    int8_path = output.with_name(output.stem + ".int8.onnx")
    calibration = (x.numpy() for x, _ in _batches(dm, "train", int(cfg.calibration_images), batch_size=32))
    quantize_int8(output, int8_path, calibration)
    import onnxruntime as ort

    sessions = {name: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for name, p in (("fp32", output), ("int8", int8_path))}

    def runner(name):
        return lambda x: sessions[name].run(["logits"], {"image": x.numpy()})[0]

    names = card["class_names"]
    acc = {split: {name: _balanced_accuracy(runner(name), dm, split, names) for name in sessions}
           for split in ("val", "test")}
    drop = acc["val"]["fp32"] - acc["val"]["int8"]
    speed = {name: _latency_ms(runner(name), card["image_size"]) for name in sessions}
    report = {"calibration": f"{cfg.calibration_images} training images of data={dm.source_name}, min/max",
              "data": data_info,
              "balanced_accuracy": acc, "val_drop": drop, "max_drop": float(cfg.int8_max_drop),
              "latency_b1_ms": speed}
    if drop > float(cfg.int8_max_drop):
        int8_path.unlink()
        raise ExportError(f"int8 model refused: validation balanced accuracy {acc['val']['int8']:.4f} vs fp32 "
                          f"{acc['val']['fp32']:.4f} (drop {drop:.4f} > int8_max_drop={cfg.int8_max_drop}); "
                          f"the fp32 model {output} is kept")
    int8_card = dict(card, file=int8_path.name, format="onnx-int8", int8=report,
                     load_with=f"import onnxruntime; onnxruntime.InferenceSession({int8_path.name!r})")
    int8_card.pop("parity", None)
    write_card(int8_path, int8_card)
    return report


def run_export(cfg: DictConfig) -> Dict[str, Any]:
    from hdkd_lightning.checkpoints import network_from_checkpoint
    from hdkd_lightning.deploy.export import FORMATS, ExportError, export_network

    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format}: choose one of {', '.join(FORMATS)}")
    if cfg.int8 and cfg.format != "onnx":
        raise ConfigError(f"int8=true is for format=onnx (ONNX Runtime), not format={cfg.format}")
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    net, meta = network_from_checkpoint(ckpt)  # refuses files that would run code
    from hdkd_lightning.deploy.recipe import inference_recipe

    if not inference_recipe(meta).recorded:
        log.warning("%s records no preprocessing (written by an earlier version): the model card assumes %s resize "
                    "and ImageNet normalisation, as that version trained with", ckpt, inference_recipe(meta).interpolation)
    output = Path(str(cfg.output)).expanduser().resolve()
    dm, data_info = _data_module(cfg, meta) if cfg.get("data") is not None else (None, None)
    images, inputs_desc = _parity_images(cfg, meta, dm)
    try:
        card = export_network(net, meta, cfg.format, output, images, inputs_desc, ckpt,
                              tolerance=float(cfg.parity_tolerance), test_metrics=_test_metrics(ckpt))
        if cfg.int8:
            card["int8"] = _int8(cfg, output, card, dm, data_info)
    except ExportError as exc:
        raise ConfigError(str(exc)) from None
    # the command's last words: each file written, and how closely it reproduces the checkpoint
    from hdkd_lightning.deploy.card import card_path

    parity = card["parity"]
    log.info("wrote %s (%s of %s) and its model card %s; parity: max |logit diff| %.2e <= %g on %s", output,
             cfg.format, ckpt, card_path(output), parity["max_abs_logit_diff"], parity["tolerance"], inputs_desc)
    if "int8" in card:
        i8, int8_path = card["int8"], output.with_name(output.stem + ".int8.onnx")
        log.info("wrote %s and its model card %s; int8: val balanced accuracy %.4f (fp32 %.4f), test %s (fp32 %s); "
                 "batch-1 latency %.2f ms (fp32 %.2f ms)", int8_path, card_path(int8_path),
                 i8["balanced_accuracy"]["val"]["int8"], i8["balanced_accuracy"]["val"]["fp32"],
                 i8["balanced_accuracy"]["test"]["int8"], i8["balanced_accuracy"]["test"]["fp32"],
                 i8["latency_b1_ms"]["int8"]["median"], i8["latency_b1_ms"]["fp32"]["median"])
    return card
