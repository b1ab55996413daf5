"""Progress output: a rich bar on a terminal, one plain line per epoch in a batch job's log."""

import re
import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from hdkd_lightning.lit.progress import EpochLines, progress_bar

LINE = re.compile(r"^epoch (\d+)/3 \| train/loss \d+\.\d{4} \| .*\| \d+\.\d s( \| ETA \d+\.\d min)?$")


def test_progress_bar_follows_whether_stdout_is_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert isinstance(progress_bar(), EpochLines)


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def training_step(self, batch, _):
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        self.log("val/loss", self._loss(batch))
        self.log("val/balanced_accuracy", torch.tensor(0.5))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_one_plain_line_per_epoch_with_losses_metrics_time_and_eta(tmp_path, capsys, one_thread):
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = L.Trainer(max_epochs=3, callbacks=[EpochLines()], logger=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(_Tiny(), loader, loader)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [int(LINE.match(line).group(1)) for line in lines] == [1, 2, 3], lines
    assert all("val/loss" in line and "val/balanced_accuracy 0.5000" in line for line in lines)
    assert all("ETA" in line for line in lines[:-1]) and "ETA" not in lines[-1]
    assert not any("\x1b" in line or "\r" in line for line in lines)  # no control characters in a log
