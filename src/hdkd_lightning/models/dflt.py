"""DFLT: the distilled feature-level transformer that forms stage 4 of the hybrid student.

Faithful to the original code, including its quirks (``docs/METHOD.md``): no LayerNorm before the
feed-forward, tokens and position embedding initialised from a standard normal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

__all__ = ["PatchEmbed", "Attention", "DfltBlock", "Dflt"]


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches flattened as (row-in-patch, col-in-patch, channel)."""

    def __init__(self, in_chs: int, dim: int, patch_size: int = 2) -> None:
        super().__init__()
        self.patch_size = patch_size
        patch_dim = in_chs * patch_size * patch_size
        self.norm_in = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        x = x.reshape(b, (h // p) * (w // p), p * p * c)
        return self.norm_out(self.proj(self.norm_in(x)))


class Attention(nn.Module):
    """Pre-norm multi-head self-attention (qkv without bias, output projection with bias)."""

    def __init__(self, dim: int, num_heads: int = 8, head_dim: int = 32, drop: float = 0.0) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # Fused kernel; same result as softmax(q k^T / sqrt(head_dim)) v.
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out))


class DfltBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_ratio: float, drop: float) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, head_dim, drop)
        # Linear -> GELU -> dropout -> Linear -> dropout; no norm in front of it (original quirk)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Dflt(nn.Module):
    """Patch embedding, [cls, (dist,) patches] tokens with position embedding, blocks, final norm.

    Returns all tokens (B, num_prefix_tokens + num_patches, dim); token 0 is the class token and,
    when ``distilled``, token 1 the distillation token.
    """

    def __init__(self, in_chs: int, grid_size: int, dim: int = 256, depth: int = 3, num_heads: int = 8,
                 head_dim: int = 32, mlp_ratio: float = 4.0, patch_size: int = 2, distilled: bool = False,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        num_patches = (grid_size // patch_size) ** 2
        self.num_prefix_tokens = 2 if distilled else 1
        self.patch_embed = PatchEmbed(in_chs, dim, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + self.num_prefix_tokens, dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.Sequential(*[DfltBlock(dim, num_heads, head_dim, mlp_ratio, drop_rate)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        b = x.shape[0]
        prefix = [self.cls_token.expand(b, -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(b, -1, -1))
        x = torch.cat(prefix + [x], dim=1) + self.pos_embed
        x = self.blocks(self.pos_drop(x))
        return self.norm(x)
