"""The model summary printed when training starts, without Lightning's ``Total FLOPs: 0``.

Lightning counts FLOPs only while it runs the module's ``example_input_array`` through it; the
modules of this project set none, so its summary showed a FLOPs column of zeros and
``Total FLOPs: 0``, which reads as a measurement. Two ways out were weighed:

* give every module an ``example_input_array``: Lightning would then run one extra forward pass
  under ``torch.utils.flop_counter.FlopCounterMode`` at the start of every fit, at the configured
  image size, through the compile wrapper and the channels-last layout, on the rank that trains.
  Measured on the project's 2-core CPU (one image, torch 2.14, lightning 2.6): the summary of the
  HDKD teacher took 3.5 s at 224 px (0.4 s at 32 px), about three plain forward passes, on every
  start and resume. And it counts the Lightning module's ``forward`` only (the deployable
  network: for a distillation run the student, without the frozen teacher it runs every step),
  so the number would still not be the cost of a training step.
* leave the FLOPs out when none were counted: chosen. FLOPs of the networks are measured on
  purpose where they are reported (``hdkd-bench``'s FLOPs section, ``hdkd-report``'s table,
  both through :mod:`hdkd_lightning.bench.flops`), at the input size the user asks for.

:class:`ModelSummaryWithoutZeroFlops` is Lightning's rich summary when FLOPs were counted (a
module that does set ``example_input_array``) and the same table without the FLOPs column and
line otherwise. ``pipeline/build.py`` adds it in place of Lightning's default summary, so
``trainer.enable_model_summary=false`` still turns the summary off.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

__all__ = ["ModelSummaryWithoutZeroFlops"]

_FLOPS = "FLOPs"


class ModelSummaryWithoutZeroFlops(RichModelSummary):
    """Lightning's rich model summary that prints FLOPs only when they were counted (module docstring)."""

    @staticmethod
    def summarize(summary_data: List[Tuple[str, List[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: Dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        if total_flops:
            RichModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                       total_training_modes, total_flops, **summarize_kwargs)
            return
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != _FLOPS]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            # Lightning's layout: the index dimmed, names left, numbers right
            table.add_column(name, style="dim" if name == " " else None,
                             justify="left" if name in (" ", "Name", "Type", "Mode") else "right",
                             no_wrap=name == "Name")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        grid = Table.grid(expand=True)
        grid.add_column()
        for label, value in (("Trainable params", get_human_readable_count(int(trainable_parameters))),
                             ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
                             ("Total params", get_human_readable_count(int(total_parameters))),
                             ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
                             ("Modules in train mode", total_training_modes["train"]),
                             ("Modules in eval mode", total_training_modes["eval"])):
            grid.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(grid)
