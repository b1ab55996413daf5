"""HDKD losses: logit distillation (DeiT-style), feature distillation, and their combination.

``L = L_logit + lambda_feat * L_feat`` with

* ``L_logit = (1 - alpha) * CE(cls_logits, y) + alpha * KD(distill_logits, teacher_logits)``
* ``L_feat = sum_i w_i * MSE(student_stage_i, teacher_stage_i)``, ``w_i = i ** exponent``
  (i = 1, 2, 3) as in the original code, or explicit ``weights``.

Defaults reproduce the original code exactly (soft KD, alpha 0.5, tau 1, DeiT's legacy ``numel``
normalisation, exponent 1, lambda 10). Teacher tensors are detached here, so no gradient can
reach the teacher through the loss.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LogitDistillationLoss", "FeatureDistillationLoss", "HdkdLoss"]


class LogitDistillationLoss(nn.Module):
    """Class-token cross-entropy plus distillation-token KD against the teacher's logits.

    Args:
        kind: ``"soft"`` (KL between temperature-softened distributions), ``"hard"`` (CE against
            the teacher's argmax), or ``"none"`` (cross-entropy of the class head only).
        alpha: weight of the distillation term; the label term gets ``1 - alpha``.
        tau: temperature of soft distillation (the KL is scaled by ``tau ** 2``).
        normalization: how soft KD's summed KL is averaged: ``"numel"`` divides by batch x
            classes (the original code, DeiT's legacy choice), ``"batchmean"`` by the batch size
            (the textbook KL; ``num_classes`` times larger).
        label_smoothing: label smoothing of the cross-entropy on labels.
        class_weights: optional per-class weights of the cross-entropy on labels.
    """

    KINDS = ("soft", "hard", "none")

    def __init__(self, kind: str = "soft", alpha: float = 0.5, tau: float = 1.0, normalization: str = "numel",
                 label_smoothing: float = 0.0, class_weights: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"model.loss.kind must be one of {self.KINDS}, got {kind!r}")
        if normalization not in ("numel", "batchmean"):
            raise ValueError(f"model.loss.normalization must be 'numel' or 'batchmean', got {normalization!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"model.loss.alpha must be within [0, 1], got {alpha}")
        if tau <= 0:
            raise ValueError(f"model.loss.tau must be positive, got {tau}")
        self.kind, self.alpha, self.tau, self.normalization = kind, alpha, tau, normalization
        self.label_smoothing = label_smoothing
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights)

    def distillation(self, distill_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        teacher_logits = teacher_logits.detach().float()
        distill_logits = distill_logits.float()
        if self.kind == "hard":
            return F.cross_entropy(distill_logits, teacher_logits.argmax(dim=1))
        t = self.tau
        kl = F.kl_div(F.log_softmax(distill_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                      reduction="sum", log_target=True) * (t * t)
        denom = distill_logits.numel() if self.normalization == "numel" else distill_logits.shape[0]
        return kl / denom

    def forward(self, cls_logits: torch.Tensor, distill_logits: Optional[torch.Tensor],
                teacher_logits: Optional[torch.Tensor], labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Returns ``{"loss_logit", "loss_ce", "loss_kd"}`` (``loss_kd`` is 0 for ``kind="none"``)."""
        ce = F.cross_entropy(cls_logits.float(), labels, weight=self.class_weights,
                             label_smoothing=self.label_smoothing)
        if self.kind == "none":
            return {"loss_logit": ce, "loss_ce": ce, "loss_kd": torch.zeros_like(ce)}
        if distill_logits is None or teacher_logits is None:
            raise ValueError(f"{self.kind} logit distillation needs distillation-token logits and teacher logits")
        kd = self.distillation(distill_logits, teacher_logits)
        return {"loss_logit": (1 - self.alpha) * ce + self.alpha * kd, "loss_ce": ce, "loss_kd": kd}


class FeatureDistillationLoss(nn.Module):
    """Weighted MSE between paired student and teacher stage outputs.

    Args:
        exponent: stage ``i`` (1-based) gets weight ``i ** exponent`` (the original code's
            feature-loss "alpha"; 1 gives 1, 2, 3).
        weights: explicit per-stage weights; overrides ``exponent`` when given.
    """

    def __init__(self, exponent: float = 1.0, weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.exponent = exponent
        self.weights = None if weights is None else [float(w) for w in weights]

    def stage_weights(self, num_stages: int) -> Sequence[float]:
        if self.weights is None:
            return [float(i) ** self.exponent for i in range(1, num_stages + 1)]
        if len(self.weights) != num_stages:
            raise ValueError(f"model.loss.feature_weights has {len(self.weights)} entries for {num_stages} distilled stages")
        return self.weights

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Returns the weighted sum and the unweighted MSE of each stage (``loss_feat_s1`` ...)."""
        if len(student_feats) != len(teacher_feats):
            raise ValueError(f"feature distillation pairs {len(student_feats)} student stages with "
                             f"{len(teacher_feats)} teacher stages")
        total, parts = None, {}
        for i, (w, s, t) in enumerate(zip(self.stage_weights(len(student_feats)), student_feats, teacher_feats), 1):
            if s.shape != t.shape:
                raise ValueError(f"feature distillation stage {i}: student output {tuple(s.shape)} does not match "
                                 f"teacher output {tuple(t.shape)}; both networks need the same widths, stem "
                                 f"stride and image size")
            mse = F.mse_loss(s.float(), t.detach().float())
            parts[f"loss_feat_s{i}"] = mse
            total = w * mse if total is None else total + w * mse
        return total, parts


class HdkdLoss(nn.Module):
    """``L_logit + lambda_feat * L_feat``; returns the total and every component for logging."""

    def __init__(self, logit: Optional[LogitDistillationLoss] = None,
                 feature: Optional[FeatureDistillationLoss] = None, lambda_feat: float = 10.0) -> None:
        super().__init__()
        self.logit = logit if logit is not None else LogitDistillationLoss()
        self.feature = feature if feature is not None else FeatureDistillationLoss()
        self.lambda_feat = lambda_feat

    def forward(self, cls_logits: torch.Tensor, distill_logits: Optional[torch.Tensor],
                student_feats: Sequence[torch.Tensor], teacher_logits: Optional[torch.Tensor],
                teacher_feats: Sequence[torch.Tensor], labels: torch.Tensor
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        parts = self.logit(cls_logits, distill_logits, teacher_logits, labels)
        if self.lambda_feat:
            feat, stage_parts = self.feature(student_feats, teacher_feats)
            parts.update(stage_parts)
        else:
            feat = torch.zeros_like(parts["loss_logit"])
        parts["loss_feat"] = feat
        total = parts["loss_logit"] + self.lambda_feat * feat
        parts["loss"] = total
        return total, parts
