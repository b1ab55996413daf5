"""What TeacherModule and DistillModule share: validation metrics, the test step, optimisation,
the non-finite-loss guard and checkpoint metadata.

Hyperparameters are plain data (dicts of numbers and strings) so that checkpoints load with
``torch.load(weights_only=True)``; optimizer and scheduler are Hydra ``_partial_`` specs
instantiated in :meth:`configure_optimizers`. The test step returns each image's path, label and
probabilities; scoring the whole split and writing the artefacts is the job of the
:class:`~hdkd_lightning.lit.test_artefacts.TestArtefacts` callback.

Each network is registered (and so saved) once. With ``compile=true`` the compiled wrapper that
runs the training step is kept outside the module tree (:meth:`training_net`), so checkpoints
have the same keys whether or not ``compile`` is on, and a resume may switch it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from hdkd_lightning.checkpoints.format import META_KEY, drop_duplicate_networks
from hdkd_lightning.distillation import auto_channels_last
from hdkd_lightning.lit.metrics import ClassificationMetrics

__all__ = ["ClassifierModuleBase"]


class ClassifierModuleBase(pl.LightningModule):
    """Validation metrics, the test artefacts and optimiser set-up for one trainable network.

    Subclasses set ``self.net`` (the network that is trained and deployed), implement
    :meth:`training_step`, and say in ``kind`` which module they are.
    """

    kind = "base"
    net_prefix = "net."

    def __init__(self, class_names: List[str]) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.val_metrics = ClassificationMetrics(len(self.class_names), self.class_names)

    # -- network -------------------------------------------------------------------------
    @property
    def deploy_net(self) -> torch.nn.Module:
        return self.net

    def training_net(self) -> torch.nn.Module:
        """The trained network as the training step runs it: ``torch.compile`` d when
        ``compile=true``. The compiled wrapper shares the network's parameters and lives outside
        the module tree (created on first use), so it is never saved."""
        if not self.hparams.get("compile", False):
            return self.net
        compiled = self.__dict__.get("_compiled_net")
        if compiled is None:
            compiled = torch.compile(self.net)
            self.__dict__["_compiled_net"] = compiled  # plain attribute: not a submodule
        return compiled

    @staticmethod
    def _check_channels_last(value: Any) -> Any:
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError(f"model.channels_last must be true, false or auto, got {value!r}")

    def channels_last_on(self, device: torch.device) -> bool:
        """Whether training runs channels-last on ``device`` (``auto``: :func:`auto_channels_last`)."""
        value = self.hparams.get("channels_last", "auto")
        return auto_channels_last(device.type) if value == "auto" else bool(value)

    def _layout_networks(self) -> List[torch.nn.Module]:
        """The networks whose memory format follows ``model.channels_last``."""
        return [self.net]

    def setup(self, stage: str) -> None:
        if self._trainer is not None and self.channels_last_on(self.trainer.strategy.root_device):
            for net in self._layout_networks():
                net.to(memory_format=torch.channels_last)  # in place: the optimizer keeps the same parameters

    def _input_layout(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last_on(images.device):
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of the deployable network (mean of both heads for HDKD)."""
        return self.net(images)

    #: temperature of the probabilities (``softmax(logits / T)``); set by calibration, None = 1
    temperature: Optional[float] = None

    def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net(images)
        if isinstance(out, tuple):  # distilled student in training mode
            out = (out[0] + out[1]) / 2
        out = out.float()
        if self.temperature not in (None, 1.0):
            out = out / float(self.temperature)
        return F.softmax(out, dim=1)

    def _check_loss(self, loss: torch.Tensor, parts: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """Non-finite loss: stop with the components named, or skip the step (``nonfinite_loss``).

        On the CPU the check is free and runs every step. On an accelerator, reading the loss on
        the host would stall the device every step, so with ``nonfinite_loss=error`` the step only
        counts non-finite losses on the device; the count is read every
        ``trainer.log_every_n_steps`` steps, at the end of each epoch and before any checkpoint is
        written, so a diverged run still stops and never overwrites a good checkpoint.
        ``skip`` has to decide within the step and reads the loss every step.
        """
        mode = self.hparams.get("nonfinite_loss", "error")
        if mode == "error" and self._defer_nonfinite_check(loss):
            bad = (~torch.isfinite(loss.detach())).sum()
            self._nonfinite_count = bad if self._nonfinite_count is None else self._nonfinite_count + bad
            return loss
        if torch.isfinite(loss).all():
            return loss
        detail = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
        msg = (f"non-finite loss at epoch {self.current_epoch}, global step {self.global_step}: {detail}. "
               f"{self._NONFINITE_ADVICE}")
        if mode == "skip":
            self.print(f"WARNING: skipping step: {msg}")
            return None
        raise FloatingPointError(msg)

    _NONFINITE_ADVICE = ("Lower the learning rate, enable gradient clipping (trainer.gradient_clip_val=1.0) or "
                         "check the data; the last good checkpoint is kept.")
    _nonfinite_count: Optional[torch.Tensor] = None

    def _defer_nonfinite_check(self, loss: torch.Tensor) -> bool:
        return loss.device.type != "cpu"

    def _raise_if_nonfinite_seen(self) -> None:
        """Read the device-side count of non-finite losses (one host synchronisation)."""
        if self._nonfinite_count is not None and int(self._nonfinite_count) > 0:
            n = int(self._nonfinite_count)
            raise FloatingPointError(f"non-finite loss in {n} training step(s) up to epoch {self.current_epoch}, "
                                     f"global step {self.global_step}. {self._NONFINITE_ADVICE}")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self._raise_if_nonfinite_seen()

    def on_train_epoch_end(self) -> None:
        self._raise_if_nonfinite_seen()

    # -- validation ----------------------------------------------------------------------
    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        probs = self.predict_probs(batch["image"])
        loss = F.cross_entropy(torch.log(probs.clamp_min(1e-12)), batch["label"])
        self.val_metrics.update(probs, batch["label"])
        self.log("val/loss", loss, on_epoch=True, prog_bar=False, batch_size=len(batch["label"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        scalars = self.val_metrics.scalars("val")
        self.log("val/balanced_accuracy", scalars.pop("val/balanced_accuracy"), prog_bar=True)
        self.log_dict(scalars)
        self.val_metrics.reset()

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
        self._nonfinite_count = None  # a new fit starts with a clean count
        # timm schedulers set the warm-up lr only when stepped; do it for epoch 0 too
        for config in self.trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "step_update") and hasattr(config.scheduler, "t_in_epochs"):
                config.scheduler.step(epoch=self.current_epoch)

    # -- checkpoint metadata -------------------------------------------------------------
    def checkpoint_meta(self) -> Dict[str, Any]:
        """The checkpoint's ``"hdkd"`` entry (:func:`hdkd_lightning.checkpoints.build_meta`)."""
        raise NotImplementedError

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # checkpoints of earlier versions held a second copy of the trained network
        checkpoint["state_dict"] = drop_duplicate_networks(checkpoint["state_dict"])

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self._raise_if_nonfinite_seen()  # never write weights a non-finite loss has already touched
        meta = self.checkpoint_meta()
        if self._trainer is not None:  # the validation scores of the weights being saved
            meta["val"] = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                           if k.startswith("val/") and v.numel() == 1}
        checkpoint[META_KEY] = meta
