"""Weights of the authors' original HDKD code mapped onto this project's networks.

The original modules are named ``stage1..3``, ``conv.fn.<index>``, ``DFLT_module`` and so on;
:func:`checkpoint_filter_fn` renames every tensor to this project's names (timm's pattern),
and :func:`load_original_checkpoint` builds a matching model and loads the file strictly:
any key it cannot place, any parameter the file lacks, or any shape mismatch is an error
that lists the offending keys.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict, List, Tuple, Union

import timm
import torch
from torch import nn

from hdkd_lightning.errors import CheckpointError
from hdkd_lightning.models.loading import describe_keys, load_strict

__all__ = ["checkpoint_filter_fn", "load_original_checkpoint", "read_state_dict", "infer_model_kwargs",
           "OriginalCheckpointError"]

ARCHS = ("hdkd_teacher", "hdkd_student", "hdkd_student_distilled")

_BLOCK_RENAMES: List[Tuple[str, str]] = [
    (r"conv\.norm\.", "pre_norm."),
    (r"conv\.fn\.0\.", "conv_pw."),
    (r"conv\.fn\.1\.", "bn1."),
    (r"conv\.fn\.3\.", "conv_dw."),
    (r"conv\.fn\.4\.", "bn2."),
    (r"conv\.fn\.6\.spatial_attention\.conv1\.", "attn.spatial.conv."),
    (r"conv\.fn\.6\.channel_attention\.fc\.0\.", "attn.channel.fc1."),
    (r"conv\.fn\.6\.channel_attention\.fc\.2\.", "attn.channel.fc2."),
    # MBConv ablation: squeeze-excitation in the attention slot
    (r"conv\.fn\.6\.fc\.0\.", "attn.fc1."),
    (r"conv\.fn\.6\.fc\.2\.", "attn.fc2."),
    (r"conv\.fn\.7\.", "conv_pwl."),
    (r"conv\.fn\.8\.", "bn3."),
    (r"proj\.", "shortcut."),
]

_TOP_RENAMES: List[Tuple[str, str]] = [
    (r"^fn1\.", "fc_hidden."),
    (r"^classifier\.", "head."),
    (r"^head_cls\.", "head."),
    (r"^head_distill\.", "head_dist."),
    (r"^DFLT_module\.pos_embedding$", "dflt.pos_embed"),
    (r"^DFLT_module\.cls_token$", "dflt.cls_token"),
    (r"^DFLT_module\.distill_token$", "dflt.dist_token"),
    (r"^DFLT_module\.to_patch_embedding\.1\.", "dflt.patch_embed.norm_in."),
    (r"^DFLT_module\.to_patch_embedding\.2\.", "dflt.patch_embed.proj."),
    (r"^DFLT_module\.to_patch_embedding\.3\.", "dflt.patch_embed.norm_out."),
    (r"^DFLT_module\.transformer\.norm\.", "dflt.norm."),
    (r"^DFLT_module\.transformer\.layers\.(\d+)\.0\.norm\.", r"dflt.blocks.\1.attn.norm."),
    (r"^DFLT_module\.transformer\.layers\.(\d+)\.0\.to_qkv\.", r"dflt.blocks.\1.attn.qkv."),
    (r"^DFLT_module\.transformer\.layers\.(\d+)\.0\.to_out\.0\.", r"dflt.blocks.\1.attn.proj."),
    (r"^DFLT_module\.transformer\.layers\.(\d+)\.1\.net\.0\.", r"dflt.blocks.\1.mlp.fc1."),
    (r"^DFLT_module\.transformer\.layers\.(\d+)\.1\.net\.3\.", r"dflt.blocks.\1.mlp.fc2."),
]


class OriginalCheckpointError(CheckpointError):
    """A file of the original code does not fit the requested network."""


def _rename(key: str) -> Union[str, None]:
    m = re.match(r"^stage1\.(\d+)\.([01])\.(.+)$", key)
    if m:  # stem: Sequential(conv, bn, gelu)
        return f"stages.0.{m[1]}.{'conv' if m[2] == '0' else 'bn'}.{m[3]}"
    m = re.match(r"^stage([23])\.(\d+)\.(.+)$", key)
    if m:
        for pattern, repl in _BLOCK_RENAMES:
            if re.match(pattern, m[3]):
                return f"stages.{int(m[1]) - 1}.{m[2]}.{re.sub('^' + pattern, repl, m[3])}"
        return None
    for pattern, repl in _TOP_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module = None) -> Dict[str, torch.Tensor]:
    """Rename an original-code state dict to this project's keys.

    Raises :class:`OriginalCheckpointError` listing every key that has no counterpart here.
    ``model`` is accepted for timm's ``pretrained_filter_fn`` signature and is not needed.
    """
    out, unknown = {}, []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise OriginalCheckpointError(
            f"{len(unknown)} key(s) of the file are not part of an HDKD network of the original code: "
            f"{describe_keys(unknown)}"
        )
    return out


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Tensors of a weights file, read without executing code (``weights_only=True``).

    Accepts a bare state dict or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}``.
    """
    path = Path(path)
    if not path.is_file():
        raise OriginalCheckpointError(f"weights file not found: {path}; check the path of the original code's weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for code-carrying pickles, others for junk
        raise OriginalCheckpointError(
            f"{path}: refused to load: it is not a plain tensor file that can be read safely "
            f"(weights_only=True). {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OriginalCheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


def infer_model_kwargs(sd: Dict[str, torch.Tensor], arch: str) -> dict:
    """Architecture settings read off the weights (classes, channels, depths, block type, size)."""
    head = sd.get("head.weight")
    if head is None:
        raise OriginalCheckpointError(f"the file has no classifier weights (expected "
                                      f"{'classifier' if arch == 'hdkd_teacher' else 'head_cls'}.weight)")
    kwargs = dict(num_classes=head.shape[0], in_chans=sd["stages.0.0.conv.weight"].shape[1])
    depths, widths = [], []
    for s in range(3):
        idx = {int(k.split(".")[2]) for k in sd if k.startswith(f"stages.{s}.")}
        depths.append(max(idx) + 1 if idx else 0)
        w = sd.get(f"stages.{s}.0.conv.weight" if s == 0 else f"stages.{s}.0.bn3.weight")
        widths.append(w.shape[0] if w is not None else 0)
    kwargs.update(depths=tuple(depths), widths=tuple(widths))
    if any(k.endswith("attn.fc1.weight") for k in sd):
        kwargs["block_type"] = "mbconv"
    if arch == "hdkd_teacher":
        if "fc_hidden.weight" in sd:
            kwargs["head_hidden_size"] = sd["fc_hidden.weight"].shape[0]
    elif "dflt.pos_embed" in sd:
        prefix = 2 if arch == "hdkd_student_distilled" else 1
        grid_patches = math.isqrt(max(sd["dflt.pos_embed"].shape[1] - prefix, 1))
        patch = math.isqrt(sd["dflt.patch_embed.proj.weight"].shape[1] // widths[-1])
        kwargs.update(img_size=grid_patches * patch * 8, patch_size=patch,
                      embed_dim=sd["dflt.pos_embed"].shape[2],
                      dflt_depth=len({k.split(".")[2] for k in sd if k.startswith("dflt.blocks.")}),
                      mlp_ratio=sd["dflt.blocks.0.mlp.fc1.weight"].shape[0] / sd["dflt.pos_embed"].shape[2])
        inner = sd["dflt.blocks.0.attn.qkv.weight"].shape[0] // 3
        kwargs.update(num_heads=inner // 32, head_dim=32)  # the original's head split is not in the weights
    return kwargs


def load_original_checkpoint(path: Union[str, Path], arch: str, return_kwargs: bool = False, **overrides):
    """Build ``arch`` (one of ``hdkd_teacher``, ``hdkd_student``, ``hdkd_student_distilled``) from a
    weights file of the original code, in eval mode, with every tensor of the file in place.

    The number of classes (and depths, widths, image size) come from the weights; ``overrides``
    are passed to the model factory (e.g. ``img_size`` for a teacher, ``num_heads`` if the original
    used another split). A student's image size is fixed by its position embedding: another
    ``img_size`` is refused. With ``return_kwargs`` the factory arguments come back too
    (``(model, kwargs)``), so the network can be rebuilt from them.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    sd = checkpoint_filter_fn(read_state_dict(path))
    inferred = infer_model_kwargs(sd, arch)
    wanted = overrides.get("img_size")
    if wanted is not None and inferred.get("img_size", wanted) != wanted:
        raise OriginalCheckpointError(f"image size {wanted}: {path} was built for {inferred['img_size']} px (its "
                                      f"position embedding); use image size {inferred['img_size']}")
    kwargs = {**inferred, **overrides}
    import hdkd_lightning.models  # noqa: F401  (registers the factories)
    model = timm.create_model(arch, **kwargs)
    load_strict(model, sd, source=str(path), error=OriginalCheckpointError)
    return (model.eval(), kwargs) if return_kwargs else model.eval()
