"""What TeacherModule and DistillModule share: the validation and test steps, optimisation and
checkpoint metadata.

Hyperparameters are plain data (dicts of numbers and strings) so that checkpoints load with
``torch.load(weights_only=True)``; optimizer and scheduler are Hydra ``_partial_`` specs
instantiated in :meth:`configure_optimizers`. The test step returns each image's path, label and
probabilities; scoring the whole split and writing the artefacts is the job of the
:class:`~hdkd_lightning.evaluation.callback.TestArtefacts` callback.

Three training concerns live in their own small classes, held as plain attributes (never saved):
``model.compile`` (:mod:`~hdkd_lightning.lit.compiled`), ``model.channels_last``
(:mod:`~hdkd_lightning.lit.layout`) and ``model.nonfinite_loss`` (:mod:`~hdkd_lightning.lit.nonfinite`).
Each network is registered (and so saved) once, whether or not ``compile`` is on.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from hdkd_lightning.checkpoints.format import META_KEY, drop_duplicate_networks
from hdkd_lightning.deploy.recipe import inference_recipe, probabilities
from hdkd_lightning.evaluation.gather import gather_each_image_once
from hdkd_lightning.evaluation.metrics import ClassificationMetrics
from hdkd_lightning.lit.compiled import CompileOnFirstUse
from hdkd_lightning.lit.layout import ChannelsLast
from hdkd_lightning.lit.nonfinite import NonFiniteLossGuard

__all__ = ["ClassifierModuleBase"]


class ClassifierModuleBase(pl.LightningModule):
    """Validation metrics, the test step and optimiser set-up for one trainable network.

    Subclasses set ``self.net`` (the network that is trained and deployed), implement
    :meth:`training_step`, and say in ``kind`` which module they are. Their training step runs
    ``self.compiled(self.net)`` on ``self.channels_last.images(batch["image"])`` and passes its
    loss through ``self.nonfinite.check``.
    """

    kind = "base"
    net_prefix = "net."

    def __init__(self, class_names: List[str], *, channels_last: Any = "auto", compile: bool = False,
                 nonfinite_loss: str = "error") -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.channels_last = ChannelsLast(channels_last)  # refuses a bad value before anything is built
        self.compiled = CompileOnFirstUse(compile)
        self.nonfinite = NonFiniteLossGuard(nonfinite_loss)
        # validation gathers every process's images itself (each once), so the metrics must not sync again
        self.val_metrics = ClassificationMetrics(len(self.class_names), self.class_names, sync_on_compute=False)
        self._val_batches: List[tuple] = []  # (paths, labels, probs) of this epoch's validation batches
        #: what the run trains and evaluates on (hdkd_lightning.data.provenance), saved with every
        #: checkpoint; set by the training pipeline, None for modules built by hand
        self.data_record: Optional[Dict[str, Any]] = None

    # -- network -------------------------------------------------------------------------
    @property
    def deploy_net(self) -> torch.nn.Module:
        return self.net

    def _layout_networks(self) -> List[torch.nn.Module]:
        """The networks whose memory format follows ``model.channels_last``."""
        return [self.net]

    def setup(self, stage: str) -> None:
        if self._trainer is not None:
            self.channels_last.apply(self._layout_networks(), self.trainer.strategy.root_device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of the deployable network (mean of both heads for HDKD)."""
        return self.net(images)

    #: temperature of the probabilities (``softmax(logits / T)``); set by calibration, None = 1
    temperature: Optional[float] = None

    def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities of the eval-mode network (the inference recipe's temperature rule)."""
        return probabilities(self.net(images), self.temperature)

    # -- the non-finite-loss guard's reads (lit/nonfinite.py) ------------------------------
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self.nonfinite.raise_if_seen(self)

    def on_train_epoch_end(self) -> None:
        self.nonfinite.raise_if_seen(self)

    # -- validation ----------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_batches = []

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        # kept on the device (no host synchronisation per step); scored once at the epoch's end
        self._val_batches.append((list(batch["path"]), batch["label"].detach(),
                                  self.predict_probs(batch["image"]).detach()))

    def on_validation_epoch_end(self) -> None:
        """Score the images of every process, each once: under DDP the sampler pads the split with
        repeats, which must not count (:mod:`hdkd_lightning.evaluation.gather`, as the test does)."""
        batches, self._val_batches = self._val_batches, []
        _, labels, probs = gather_each_image_once(
            self.trainer.world_size, [p for b in batches for p in b[0]],
            torch.cat([b[1] for b in batches]) if batches else torch.zeros(0, dtype=torch.long),
            torch.cat([b[2] for b in batches]) if batches else torch.zeros(0, len(self.class_names)))
        labels, probs = labels.to(self.device), probs.to(self.device)
        self.val_metrics.update(probs, labels)
        scalars = self.val_metrics.scalars("val")
        self.val_metrics.reset()
        scalars["val/loss"] = F.cross_entropy(torch.log(probs.clamp_min(1e-12)), labels)
        # every process holds the same values: syncing them with max keeps them exact and only
        # tells Lightning they are already global
        same = dict(sync_dist=True, reduce_fx="max")
        self.log("val/balanced_accuracy", scalars.pop("val/balanced_accuracy"), prog_bar=True, **same)
        self.log_dict(scalars, **same)

    # -- test: the rows the TestArtefacts callback scores --------------------------------
    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> Dict[str, Any]:
        return {"path": list(batch["path"]), "label": batch["label"].detach().cpu(),
                "probs": self.predict_probs(batch["image"]).detach().float().cpu()}

    # -- optimisation --------------------------------------------------------------------
    def trainable_parameters(self):
        return self.net.parameters()

    def configure_optimizers(self):
        from hydra.utils import instantiate

        optimizer = instantiate(self.hparams.optimizer, _partial_=True)(params=self.trainable_parameters())
        if not self.hparams.scheduler:
            return optimizer
        sched_cfg = dict(self.hparams.scheduler)
        interval = sched_cfg.pop("interval", "epoch")
        scheduler = instantiate(sched_cfg, _partial_=True)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped with the epoch number; torch ones as usual
        if hasattr(scheduler, "step_update") and hasattr(scheduler, "t_in_epochs"):
            scheduler.step(epoch=self.current_epoch + 1)
        else:
            scheduler.step() if metric is None else scheduler.step(metric)

    def on_fit_start(self) -> None:
        self.nonfinite.reset()  # a new fit starts with a clean count
        # timm schedulers set the warm-up lr only when stepped; do it for epoch 0 too
        for config in self.trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "step_update") and hasattr(config.scheduler, "t_in_epochs"):
                config.scheduler.step(epoch=self.current_epoch)

    # -- checkpoint metadata -------------------------------------------------------------
    def checkpoint_meta(self) -> Dict[str, Any]:
        """The checkpoint's ``"hdkd"`` entry (:func:`hdkd_lightning.checkpoints.build_meta`)."""
        raise NotImplementedError

    def inference_recipe(self):
        """How these weights are run (:mod:`hdkd_lightning.deploy.recipe`), as their checkpoint will say."""
        meta = dict(self.checkpoint_meta(), temperature=self.temperature)
        if self.data_record is not None:
            meta["provenance"] = self.data_record
        return inference_recipe(meta)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # checkpoints of earlier versions held a second copy of the trained network
        checkpoint["state_dict"] = drop_duplicate_networks(checkpoint["state_dict"])

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self.nonfinite.raise_if_seen(self)  # never write weights a non-finite loss has already touched
        meta = self.checkpoint_meta()
        if self._trainer is not None:  # the validation scores of the weights being saved
            meta["val"] = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                           if k.startswith("val/") and v.numel() == 1}
        if self.data_record is not None:
            meta["provenance"] = self.data_record
        checkpoint[META_KEY] = meta
