"""The HDKD networks: the CNN teacher and the hybrid student (with or without distillation token).

Both share the same three convolutional stages (stem convs, then MBCSA/MBConv stages), so
their stage outputs have identical shapes and can be distilled with a plain MSE. The student
adds DFLT as stage 4. Registered with timm::

    import hdkd_lightning, timm
    timm.create_model("hdkd_student_distilled", num_classes=7)

Defaults are the original code's (``docs/METHOD.md``). ``num_classes`` defaults to 7
(HAM10000 / ISIC 2018 Task 3), the paper's main task; pass it explicitly for other data.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from hdkd_lightning.models.blocks import MbBlock, StemConv
from hdkd_lightning.models.dflt import Dflt

__all__ = ["HdkdTeacher", "HdkdStudent", "valid_image_sizes"]

_BLOCK_ATTN = {"mbcsa": "cbam", "mbconv": "se"}


def _total_stride(stem_stride: int) -> int:
    # stem stage downsamples by stem_stride, stages 2 and 3 by 2 each
    return stem_stride * 4


def valid_image_sizes(stem_stride: int = 2, patch_size: int = 1, upto: int = 512) -> List[int]:
    """Input sizes a network accepts: multiples of total stride x DFLT patch size."""
    step = _total_stride(stem_stride) * patch_size
    return list(range(step, upto + 1, step))


def _check_image_size(name: str, img_size: int, stem_stride: int, patch_size: int) -> None:
    if stem_stride not in (2, 4):
        raise ValueError(f"stem_stride must be 2 (original) or 4 (the paper's ablation), got {stem_stride}")
    step = _total_stride(stem_stride) * patch_size
    if img_size <= 0 or img_size % step != 0:
        examples = ", ".join(str(s) for s in valid_image_sizes(stem_stride, patch_size, 256)[:8])
        why = (f"the stage-4 grid (image size / {_total_stride(stem_stride)}) must divide by the "
               f"patch size {patch_size}" if patch_size > 1 else
               f"the three conv stages downsample by {step} in total")
        raise ValueError(
            f"{name}: image size {img_size} is not supported: {why}. Valid sizes are multiples of "
            f"{step}: {examples}, ... (set data.image_size / model img_size to one of them)."
        )


def _build_stages(in_chans: int, depths: Sequence[int], widths: Sequence[int], block_type: str,
                  stem_stride: int) -> nn.Sequential:
    if len(depths) != 3 or len(widths) != 3:
        raise ValueError(f"depths and widths need 3 entries (stem, stage 2, stage 3); got {depths}, {widths}")
    if any(d < 1 for d in depths):
        raise ValueError(f"every stage needs at least one block; got depths={list(depths)}")
    if block_type not in _BLOCK_ATTN:
        raise ValueError(f"block_type must be one of {sorted(_BLOCK_ATTN)}, got {block_type!r}")
    attn = _BLOCK_ATTN[block_type]
    stem = [StemConv(in_chans if i == 0 else widths[0], widths[0], stride=stem_stride if i == 0 else 1)
            for i in range(depths[0])]
    stages = [nn.Sequential(*stem)]
    for s in (1, 2):
        stages.append(nn.Sequential(*[
            MbBlock(widths[s - 1] if i == 0 else widths[s], widths[s], downsample=(i == 0), attn=attn)
            for i in range(depths[s])
        ]))
    return nn.Sequential(*stages)


class _ConvStagesMixin:
    """``forward_intermediates`` over the three conv stages, shared by teacher and student."""

    stages: nn.Sequential

    def _stage_feature_info(self, widths: Sequence[int], stem_stride: int) -> List[dict]:
        reductions = (stem_stride, stem_stride * 2, stem_stride * 4)
        return [dict(num_chs=w, reduction=r, module=f"stages.{i}") for i, (w, r) in enumerate(zip(widths, reductions))]

    def _after_stages(self, x: torch.Tensor) -> torch.Tensor:
        """What forward_features does after the conv stages (identity for the teacher)."""
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_logits: bool = False,
    ):
        """Stage outputs in one pass (timm convention).

        ``indices`` select among the three conv stages (0 = stem stage, 1, 2), or the last n
        when an int; ``None`` takes all three. Returns the list when ``intermediates_only``;
        otherwise ``(final_features, intermediates)``, or ``(logits, intermediates)`` with
        ``return_logits=True`` so distillation runs each network exactly once. ``norm`` is
        accepted for timm compatibility; conv stages have no output norm.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: max_index + 1] if (stop_early or intermediates_only) else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        x = self._after_stages(x)
        if return_logits:
            return self.forward_head(x), intermediates
        return x, intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._after_stages(self.stages(x))

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))


class HdkdTeacher(_ConvStagesMixin, nn.Module):
    """CNN teacher: stem (6 x 64 ch), MBCSA (6 x 96), MBCSA (9 x 192), avg pool, 192->128->C."""

    def __init__(self, num_classes: int = 7, in_chans: int = 3, img_size: int = 224,
                 depths: Sequence[int] = (6, 6, 9), widths: Sequence[int] = (64, 96, 192),
                 block_type: str = "mbcsa", stem_stride: int = 2, head_hidden_size: int = 128,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        _check_image_size(type(self).__name__, img_size, stem_stride, patch_size=1)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = img_size
        self.num_features = widths[-1]
        self.head_hidden_size = head_hidden_size
        self.stages = _build_stages(in_chans, depths, widths, block_type, stem_stride)
        self.feature_info = self._stage_feature_info(widths, stem_stride)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        # original: Linear 192->128 then Linear 128->C, no activation between
        self.fc_hidden = nn.Linear(widths[-1], head_hidden_size)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.fc_hidden(self.global_pool(x).flatten(1)))
        return x if pre_logits else self.head(x)


class HdkdStudent(_ConvStagesMixin, nn.Module):
    """Hybrid student: the teacher's stage types at depths 2/2/3, then DFLT and linear head(s).

    With ``distilled=True`` (HDKD) DFLT carries a distillation token with its own head: the
    model returns ``(class_logits, distill_logits)`` in training mode and their mean in eval.
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 3, img_size: int = 224,
                 depths: Sequence[int] = (2, 2, 3), widths: Sequence[int] = (64, 96, 192),
                 block_type: str = "mbcsa", stem_stride: int = 2, distilled: bool = False,
                 embed_dim: int = 256, dflt_depth: int = 3, num_heads: int = 8, head_dim: int = 32,
                 mlp_ratio: float = 4.0, patch_size: int = 2, drop_rate: float = 0.0) -> None:
        super().__init__()
        _check_image_size(type(self).__name__, img_size, stem_stride, patch_size)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = img_size
        self.distilled = distilled
        self.num_features = self.embed_dim = embed_dim
        self.stages = _build_stages(in_chans, depths, widths, block_type, stem_stride)
        self.feature_info = self._stage_feature_info(widths, stem_stride)
        self.dflt = Dflt(widths[-1], img_size // _total_stride(stem_stride), embed_dim, dflt_depth, num_heads,
                         head_dim, mlp_ratio, patch_size, distilled, drop_rate)
        self.num_prefix_tokens = self.dflt.num_prefix_tokens
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()) if distilled else None

    def _after_stages(self, x: torch.Tensor) -> torch.Tensor:
        return self.dflt(x)

    def get_classifier(self):
        return (self.head, self.head_dist) if self.distilled else self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        make = (lambda: nn.Linear(self.embed_dim, num_classes)) if num_classes > 0 else nn.Identity
        self.head = make()
        if self.distilled:
            self.head_dist = make()

    def forward_heads(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Class-head and distillation-head logits (the latter None without a distillation token)."""
        cls_logits = self.head(tokens[:, 0])
        dist_logits = self.head_dist(tokens[:, 1]) if self.distilled else None
        return cls_logits, dist_logits

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        if pre_logits:
            return x[:, 0]
        cls_logits, dist_logits = self.forward_heads(x)
        if dist_logits is None:
            return cls_logits
        if self.training:
            return cls_logits, dist_logits
        return (cls_logits + dist_logits) / 2  # DeiT convention: mean of the two heads


def _cfg(**kwargs) -> dict:
    return dict(url="", num_classes=7, input_size=(3, 224, 224), pool_size=None, crop_pct=1.0,
                interpolation="bilinear", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                first_conv="stages.0.0.conv", license="mit", **kwargs)


default_cfgs = generate_default_cfgs({
    "hdkd_teacher": _cfg(classifier="head"),
    "hdkd_student": _cfg(classifier="head"),
    "hdkd_student_distilled": _cfg(classifier=("head", "head_dist")),
})


def _create(cls, variant: str, pretrained: bool, **kwargs):
    if pretrained:
        raise ValueError(
            f"{variant}: there are no hosted pretrained weights; load a file of the original code with "
            "hdkd_lightning.models.load_original_checkpoint(path, arch) or a checkpoint of this project."
        )
    return build_model_with_cfg(cls, variant, pretrained=False, feature_cfg=dict(flatten_sequential=True),
                                **kwargs)


@register_model
def hdkd_teacher(pretrained: bool = False, **kwargs) -> HdkdTeacher:
    """HDKD CNN teacher (3.95 M parameters at 4 classes)."""
    return _create(HdkdTeacher, "hdkd_teacher", pretrained, **kwargs)


@register_model
def hdkd_student(pretrained: bool = False, **kwargs) -> HdkdStudent:
    """Hybrid student without distillation token (the no-distillation baseline)."""
    return _create(HdkdStudent, "hdkd_student", pretrained, **kwargs)


@register_model
def hdkd_student_distilled(pretrained: bool = False, **kwargs) -> HdkdStudent:
    """HDKD: hybrid student with the distillation token and head."""
    return _create(HdkdStudent, "hdkd_student_distilled", pretrained, distilled=True, **kwargs)
