"""Convolutional building blocks of HDKD: stem conv, CBAM, squeeze-excitation, MBCSA, MBConv.

Every block follows ``docs/METHOD.md`` exactly (no biases where the original has
none, exact-erf GELU, eps 1e-5 norms) so that weights of the original code load one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StemConv", "ChannelAttention", "SpatialAttention", "Cbam", "SqueezeExcite", "MbBlock"]


class StemConv(nn.Module):
    """3x3 conv (no bias) -> BatchNorm -> GELU; one block of the stem stage."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _max_over(x: torch.Tensor, dims: tuple) -> torch.Tensor:
    """Max over ``dims`` (``(2, 3)`` -> ``[B, C]``; ``(1,)`` -> ``[B, 1, H, W]``); same values either way.

    With autograd, max with indices (as the original's ``AdaptiveMaxPool2d`` / ``torch.max``):
    its backward scatters through the saved indices, while ``amax``'s backward builds a
    full-size mask, converts it to int64 and divides, several extra passes over the largest
    activations (measured 11% of the 224 px distillation step). Without autograd ``amax``
    is the cheaper forward.
    """
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.amax(dim=dims, keepdim=dims == (1,))
    if dims == (1,):
        return torch.max(x, dim=1, keepdim=True)[0]
    return F.adaptive_max_pool2d(x, 1).flatten(1)


class ChannelAttention(nn.Module):
    """CBAM channel gate: one shared 1x1-conv MLP on the avg- and max-pooled vectors."""

    def __init__(self, chs: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = chs // reduction
        self.fc1 = nn.Conv2d(chs, hidden, 1, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The 1x1 convs act on pooled vectors: run them once, as matrix products, on the stacked
        # [avg; max] batch (same weights and result; 1x1 convs on 1x1 maps are slow on CPU).
        b = x.shape[0]
        pooled = torch.cat([x.mean(dim=(2, 3)), _max_over(x, (2, 3))], dim=0)
        h = F.linear(self.act(F.linear(pooled, self.fc1.weight.flatten(1))), self.fc2.weight.flatten(1))
        return torch.sigmoid(h[:b] + h[b:])[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM spatial gate: [channel mean, channel max] -> 7x7 conv -> sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), _max_over(x, (1,))], dim=1)
        return torch.sigmoid(self.conv(pooled))


class Cbam(nn.Module):
    """Convolutional block attention with its own residual: ``y = ca(x)*x; y = sa(y)*y; y + x``."""

    def __init__(self, chs: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel = ChannelAttention(chs, reduction)
        self.spatial = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.channel(x) * x
        y = self.spatial(y) * y
        return y + x


class SqueezeExcite(nn.Module):
    """SE gate of MBConv: avg pool -> Linear (no bias) -> GELU -> Linear (no bias) -> sigmoid."""

    def __init__(self, chs: int, rd_chs: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(chs, rd_chs, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(rd_chs, chs, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3))))))
        return x * s[:, :, None, None]


class MbBlock(nn.Module):
    """Pre-norm inverted residual: MBCSA (``attn="cbam"``) or MBConv (``attn="se"``).

    Branch: BN -> 1x1 expand (stride 2 when downsampling) -> BN -> GELU -> 3x3 depthwise ->
    BN -> GELU -> CBAM or SE -> 1x1 project -> BN. Shortcut: identity, or (when downsampling)
    max-pool 3/2 -> 1x1 conv on the un-normalised input.
    """

    def __init__(self, in_chs: int, out_chs: int, downsample: bool = False, attn: str = "cbam",
                 expansion: int = 4) -> None:
        super().__init__()
        hidden = in_chs * expansion
        stride = 2 if downsample else 1
        if downsample:
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        elif in_chs != out_chs:
            raise ValueError(f"MbBlock: a non-downsampling block keeps its width, got {in_chs} -> {out_chs}")
        else:
            self.pool = None
            self.shortcut = None
        self.pre_norm = nn.BatchNorm2d(in_chs)
        self.conv_pw = nn.Conv2d(in_chs, hidden, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = nn.GELU()
        self.conv_dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.GELU()
        if attn == "cbam":
            self.attn = Cbam(hidden)
        elif attn == "se":
            self.attn = SqueezeExcite(hidden, int(in_chs * 0.25))
        else:
            raise ValueError(f"MbBlock: attn must be 'cbam' (MBCSA) or 'se' (MBConv), got {attn!r}")
        self.conv_pwl = nn.Conv2d(hidden, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(self.pool(x))
        y = self.act1(self.bn1(self.conv_pw(self.pre_norm(x))))
        y = self.act2(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(self.attn(y)))
        return shortcut + y
