"""hdkd-train: fit on train, select on val, test once. ``hdkd-train experiment=teacher_isic``."""

from hdkd_lightning.cli._common import hydra_command

DESCRIPTION = """Fit on the train split, pick the best epoch on validation (optimized_metric), test once with it.
Runs go to logs/<task_name>/runs/<time>/ (checkpoints, metrics.json, report.html, run.json, ...)."""
EXAMPLES = [
    'hdkd-train experiment=teacher_brain data.root=/data/brain_tumor_mri',
    'hdkd-train experiment=distill_brain data.root=/data/brain_tumor_mri trainer.devices=4',
    'hdkd-train experiment=student_ham10000 data.root=/data/ham10000 data.train_per_class=100 recipe=cpu64',
    'hdkd-train experiment=teacher_isic data.root=/data/isic2018 ckpt_path=last      # resume',
    'hdkd-train -m hparams_search=optuna experiment=distill_brain data.root=...       # Optuna sweep',
    'hdkd-train -m hydra/launcher=slurm_gpu experiment=distill_isic trainer.devices=4 seed=0,1,2',
]


GROUPS = ["experiment", "data", "model", "recipe", "trainer", "logger", "callbacks", "hparams_search", "debug", "report"]


@hydra_command("train", description=DESCRIPTION, examples=EXAMPLES, groups=GROUPS)
def main(cfg):
    from hdkd_lightning.pipeline import run_train

    return run_train(cfg).get("optimized_metric")


if __name__ == "__main__":
    main()
