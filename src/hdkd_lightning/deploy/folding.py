"""Deployed forms of the HDKD networks: BatchNorm folded away, channels-last, optional low precision.

A frozen network in eval mode computes every BatchNorm as a per-channel affine map
``y = a * x + b`` with ``a = gamma / sqrt(running_var + eps)`` and ``b = beta - a * running_mean``.
Where that map sits next to a convolution it can be merged into the convolution's weight and
bias, which removes one full read and write of the activation per BatchNorm:

* **conv -> BN** (stem convs; ``conv_pw -> bn1``, ``conv_dw -> bn2`` and ``conv_pwl -> bn3`` of
  every MBCSA/MBConv block): ``W' = W * a`` (per output channel), ``bias' = a * bias + b``.
  Exact in real arithmetic for any kernel size, stride, padding and groups.
* **BN -> conv**, the pre-norm of an MbBlock: ``conv(a * x + b) = (W * a) x + W b`` (per *input*
  channel). This is exact only when the convolution sees no zero padding (zero padding of the
  normalised input differs from zero padding of the raw input, which is ``b`` after the map), and
  only when nothing else reads the normalised tensor. ``conv_pw`` is a 1x1 convolution without
  padding (a stride of 2 only subsamples), and the shortcut of a downsampling block reads the
  *un-normalised* input, so the pre-norm is folded into ``conv_pw`` (and then ``bn1`` on top).

With every fold applied, an HDKD block runs four convolutions and no BatchNorm. Folding changes
the rounding of fp32 results slightly (relative differences around 1e-6 per layer); the tests
check logits and stage outputs against the unfolded model within ``rtol = atol = 1e-4``
(fp32), and within a few percent of the logit scale for bf16 (see ``docs/PERFORMANCE.md``).

:func:`fold_batchnorm` works on any module tree (it folds every ``Conv2d`` directly followed by a
``BatchNorm2d`` inside an ``nn.Sequential``, plus the pairs of HDKD's ``StemConv`` and ``MbBlock``), never
modifies its argument, and leaves unfoldable BatchNorms in place.
"""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from torch import nn

from hdkd_lightning.models.blocks import MbBlock, StemConv

__all__ = ["fold_batchnorm", "prepare_teacher", "deploy_student", "count_batchnorms"]


def _bn_affine(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel scale and shift of an eval-mode BatchNorm, in float64 for an exact fold."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_batchnorm: a BatchNorm without running statistics cannot be folded")
    mean = bn.running_mean.double()
    var = bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = bn.bias.detach().double() - mean * scale
    else:
        shift = -mean * scale
    return scale, shift


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                    padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight.to(conv.weight.dtype))
        out.bias.copy_(bias.to(conv.weight.dtype))
    return out


def _conv_params64(conv: nn.Conv2d) -> Tuple[torch.Tensor, torch.Tensor]:
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64,
                                                                             device=w.device)
    return w, b


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` (eval statistics)."""
    scale, shift = _bn_affine(bn)
    w, b = _conv_params64(conv)
    return _new_conv(conv, w * scale[:, None, None, None], b * scale + shift)


def fold_bn_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A new conv computing ``conv(bn(x))``; only exact for an unpadded, ungrouped convolution."""
    if conv.groups != 1 or any(p != 0 for p in _pair(conv.padding)) or conv.padding_mode != "zeros":
        raise ValueError("fold_bn_conv: the BatchNorm before a padded or grouped conv cannot be folded exactly")
    scale, shift = _bn_affine(bn)
    w, b = _conv_params64(conv)
    new_w = w * scale[None, :, None, None]
    new_b = b + (w.sum(dim=(2, 3)) * shift[None, :]).sum(dim=1)
    return _new_conv(conv, new_w, new_b)


def _pair(v):
    if isinstance(v, str):  # "valid" / "same"
        return (0, 0) if v == "valid" else (1, 1)
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _foldable_bn(bn: nn.Module) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_mean is not None


# (conv, bn) attribute pairs whose forward is bn(conv(x)), per HDKD block type
_BLOCK_PAIRS = {StemConv: (("conv", "bn"),),
                MbBlock: (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))}


def _fold_inplace(module: nn.Module) -> None:
    if isinstance(module, MbBlock) and _foldable_bn(module.pre_norm) and isinstance(module.conv_pw, nn.Conv2d):
        # pre_norm feeds only conv_pw (the shortcut reads the raw input), a 1x1 unpadded conv
        try:
            module.conv_pw = fold_bn_conv(module.pre_norm, module.conv_pw)
            module.pre_norm = nn.Identity()
        except ValueError:
            pass
    for conv_name, bn_name in _BLOCK_PAIRS.get(type(module), ()):
        conv, bn = getattr(module, conv_name), getattr(module, bn_name)
        if isinstance(conv, nn.Conv2d) and _foldable_bn(bn) and conv.out_channels == bn.num_features:
            setattr(module, conv_name, fold_conv_bn(conv, bn))
            setattr(module, bn_name, nn.Identity())
    # generic Sequential: Conv2d immediately followed by BatchNorm2d
    if isinstance(module, nn.Sequential):
        keys = list(module._modules.keys())
        for a, b in zip(keys, keys[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and _foldable_bn(bn) and conv.out_channels == bn.num_features:
                module._modules[a] = fold_conv_bn(conv, bn)
                module._modules[b] = nn.Identity()
    for child in module.children():
        _fold_inplace(child)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every exactly-foldable BatchNorm merged into a conv.

    Folded BatchNorms become ``nn.Identity``; the argument is left untouched.
    """
    model = copy.deepcopy(model).eval()
    _fold_inplace(model)
    return model


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _finish(model: nn.Module, channels_last: bool, dtype: Optional[torch.dtype], fold: bool = True) -> nn.Module:
    model = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if dtype is not None:
        model = model.to(dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def prepare_teacher(teacher: nn.Module, channels_last: bool = True, dtype: Optional[torch.dtype] = None,
                    fold: bool = True) -> nn.Module:
    """The frozen teacher in its cheapest inference form for distillation.

    BatchNorm folded (unless ``fold=False``), no gradients, eval mode, channels-last (optional)
    and ``dtype`` (e.g. ``torch.bfloat16``; feed it images of that dtype, e.g. through
    ``distill_forward``'s ``teacher_images``; the loss upcasts the teacher's outputs to fp32).
    Returns a new module on the teacher's device; the argument is left untouched.
    """
    return _finish(teacher, channels_last, dtype, fold)


def deploy_student(model: nn.Module, channels_last: bool = True, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """The trained student (or HDKD) for inference: folded BatchNorm, eval mode, channels-last, dtype.

    In eval mode HDKD returns the mean of the class and distillation heads, as the trained model does.
    """
    return _finish(model, channels_last, dtype)
