"""Where the network looks: Grad-CAM maps with the pytorch-grad-cam package.

**Target layer** (:func:`target_layer`): the output of the last block of the third convolutional
stage (``stages[2][-1]``, 192 channels at image size / 8) for all three networks:

* teacher: its last feature map before global pooling and the head, the standard Grad-CAM layer
  of a CNN;
* plain student and HDKD student: the same stage, the last *spatial* map. DFLT downstream turns it
  into 2x2-patch tokens that the class (and distillation) token attend to; a map of DFLT's patch
  tokens would be twice as coarse (image size / 16) and its class token has no spatial layout.
  Gradients of the class score flow back through DFLT to this stage, so the map shows what the
  transformer used, at the resolution the teacher's map has, which keeps the maps of teacher and
  students comparable (the stage-3 maps are also what feature distillation matches).

The score explained is the network's eval-mode output for the target class: for HDKD the mean
of the class-head and distillation-head logits, as at inference.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["target_layer", "gradcam_maps", "denormalize", "explanation_figure", "explain_examples"]


def target_layer(net: nn.Module) -> nn.Module:
    """The layer Grad-CAM reads (see the module docstring)."""
    stages = getattr(net, "stages", None)
    if stages is None or len(stages) < 3:
        raise ValueError(f"{type(net).__name__} has no three convolutional stages: Grad-CAM needs an HDKD network")
    return stages[2][-1]


def gradcam_maps(net: nn.Module, images: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
    """``[N, H, W]`` Grad-CAM maps in [0, 1], one per image, for class ``targets[i]``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = net.eval()
    with torch.inference_mode(False), torch.enable_grad():
        x = images.detach().clone()  # a normal tensor, usable by autograd even if made in inference mode
        with GradCAM(model=net, target_layers=[target_layer(net)]) as cam:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A preprocessed ``[3, H, W]`` tensor back to an ``[H, W, 3]`` float image in [0, 1]."""
    x = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    return np.clip(x * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


def explanation_figure(rgb: np.ndarray, cam: np.ndarray, title: str):
    """Original, heatmap and overlay side by side (a matplotlib Figure)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from hdkd_lightning.evaluation.figures import new_figure

    overlay = show_cam_on_image(rgb.astype(np.float32), cam, use_rgb=True)
    fig = new_figure(9.0, 3.4)
    axes = fig.subplots(1, 3)
    for ax, img, name in zip(axes, (rgb, cam, overlay), ("image (as the network sees it)", "Grad-CAM", "overlay")):
        ax.imshow(img, cmap="jet" if img is cam else None, vmin=0, vmax=1 if img is cam else None)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def explain_examples(net: nn.Module, images: torch.Tensor, labels: Sequence[int], probs: np.ndarray,
                     paths: Sequence[str], class_names: Sequence[str], mean: Sequence[float],
                     std: Sequence[float]) -> List[Dict[str, Any]]:
    """Grad-CAM of the predicted class for each given image, as report entries with PNG bytes."""
    from hdkd_lightning.evaluation.figures import png_bytes

    if len(images) == 0:
        return []
    predicted = np.asarray(probs).argmax(axis=1)
    maps = gradcam_maps(net, images, predicted.tolist())
    out = []
    for img, cam, label, pred, p, path in zip(images, maps, labels, predicted, probs, paths):
        title = (f"true {class_names[label]} | predicted {class_names[pred]} ({p[pred]:.2f})"
                 if label >= 0 else f"predicted {class_names[pred]} ({p[pred]:.2f})")
        fig = explanation_figure(denormalize(img, mean, std), cam, title)
        out.append({"path": str(path), "label": class_names[label] if label >= 0 else None,
                    "predicted": class_names[pred], "probability": float(p[pred]),
                    "correct": bool(label == pred), "png": png_bytes(fig)})
    return out


class ExampleReservoir:
    """Keeps the first ``per_class`` correct and wrong test images of every true class as batches stream
    past (for the Grad-CAM examples of report.html), without holding the whole split."""

    def __init__(self, num_classes: int, per_class: int) -> None:
        self.per_class = int(per_class)
        self.kept: Dict[tuple, List[tuple]] = {}
        self.num_classes = num_classes

    def offer(self, images: torch.Tensor, labels: Sequence[int], probs: np.ndarray, paths: Sequence[str]) -> None:
        if self.per_class <= 0:
            return
        predicted = np.asarray(probs).argmax(axis=1)
        for img, label, pred, p, path in zip(images, labels, predicted, probs, paths):
            if label < 0:
                continue
            bucket = self.kept.setdefault((int(label), bool(label == pred)), [])
            if len(bucket) < self.per_class:
                bucket.append((img.detach().cpu().clone(), int(label), np.asarray(p), str(path)))

    def items(self) -> Optional[tuple]:
        rows = [r for key in sorted(self.kept) for r in self.kept[key]]
        if not rows:
            return None
        return (torch.stack([r[0] for r in rows]), [r[1] for r in rows], np.stack([r[2] for r in rows]),
                [r[3] for r in rows])
