"""The model summary at the start of training prints counted FLOPs or none, never "Total FLOPs: 0"."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from lightning.pytorch import LightningModule
from rich import get_console
from torch import nn

from hdkd_lightning.lit.summary import ModelSummaryWithoutZeroFlops


class Tiny(LightningModule):
    def __init__(self, example: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
        self.net(torch.zeros(1, 3, 8, 8))  # materialise the lazy layer
        if example:
            self.example_input_array = torch.zeros(1, 3, 8, 8)

    def forward(self, x):
        return self.net(x)


def _summary_text(module: LightningModule) -> str:
    trainer = SimpleNamespace(strategy=None, is_global_zero=True)
    console = get_console()
    with console.capture() as captured:
        ModelSummaryWithoutZeroFlops().on_fit_start(trainer, module)
    return captured.get()


def test_no_flops_column_or_line_when_none_were_counted():
    text = _summary_text(Tiny(example=False))
    assert "FLOPs" not in text
    assert "Total params" in text and "net" in text and "Sequential" in text


def test_counted_flops_are_printed():
    text = _summary_text(Tiny(example=True))
    assert "Total FLOPs" in text and "Total FLOPs: 0" not in text
