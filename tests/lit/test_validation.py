"""Validation metrics count each image once, as the test does, when a sampler repeats images."""

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from hdkd_lightning.evaluation.gather import gather_each_image_once
from hdkd_lightning.evaluation.metrics import SCALAR_KEYS, compute_metrics
from hdkd_lightning.lit.base import ClassifierModuleBase

# logits per image: image 0 is right, the others are wrong, so a counted repeat of image 0 shows
LOGITS = torch.tensor([[4.0, -4.0], [-3.0, 3.0], [2.0, -2.0], [3.5, -3.5], [1.0, -1.0]])
LABELS = [0, 0, 1, 1, 1]


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return len(LABELS)

    def __getitem__(self, i):
        return {"image": LOGITS[i], "label": LABELS[i], "path": f"img{i}"}


class _LogitsAsImages(ClassifierModuleBase):
    """The "network" passes its input through: each image is its own logits."""

    kind = "test"

    def __init__(self):
        super().__init__(["a", "b"])
        self.net = torch.nn.Identity()


def test_validation_ignores_the_padded_repeats_of_a_distributed_sampler():
    # a DistributedSampler over 2 processes pads 5 images to 6 by repeating the first: 0..4, 0
    loader = DataLoader(_Images(), batch_size=4, sampler=[0, 1, 2, 3, 4, 0])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.validate(_LogitsAsImages(), dataloaders=loader, verbose=False)
    probs = torch.softmax(LOGITS, dim=1)
    expected = compute_metrics(["a", "b"], LABELS, probs)
    got = trainer.callback_metrics
    assert expected["accuracy"] == pytest.approx(0.2)  # 0.333 if the repeat counted
    for key in SCALAR_KEYS:
        assert float(got[f"val/{key}"]) == pytest.approx(expected[key], abs=1e-6), key
    nll = -torch.log(probs[torch.arange(5), torch.tensor(LABELS)]).mean()
    assert float(got["val/loss"]) == pytest.approx(float(nll), abs=1e-6)


def test_each_image_is_kept_once_in_path_order():
    paths, labels, probs = gather_each_image_once(1, ["b", "a", "b"], torch.tensor([1, 0, 1]),
                                                  torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.2, 0.8]]))
    assert paths == ["a", "b"] and labels.tolist() == [0, 1]
    torch.testing.assert_close(probs, torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    empty = gather_each_image_once(1, [], torch.zeros(0, dtype=torch.long), torch.zeros(0, 2))
    assert empty[0] == [] and empty[2].shape == (0, 2)
