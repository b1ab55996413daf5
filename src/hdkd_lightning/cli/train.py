"""hdkd-train: fit on train, select on val, test once. ``hdkd-train experiment=teacher_isic``."""

from hdkd_lightning.cli._common import hydra_command

DESCRIPTION = """Fit on the train split, pick the best epoch on validation (optimized_metric), test once with it.
Runs go to logs/<task_name>/runs/<time>/ (checkpoints, metrics.json, report.html, run.json, ...)."""
# (key=<value>, one line): what people set most, shown first by --help
KEYS = [
    ("data.root=<folder>", "the dataset's folder (every data= except synthetic reads one)"),
    ("data.train_per_class=<n>", "limited data: keep about n training images per class (val and test unchanged)"),
    ("trainer.max_epochs=<n>", "epochs to train (default 200; experiment=demo: 12)"),
    ("trainer.devices=<n>", "GPUs to train on (CPU processes with trainer=cpu); more than 1 trains with DDP"),
    ("trainer.precision=<p>", "32-true (default), bf16-mixed (GPU or CPU) or 16-mixed (GPU only)"),
    ("model.teacher.ckpt_path=<file>", "a distillation's teacher (model=distill); default: its latest completed "
                                       "teacher run"),
]
EXAMPLES = [
    'hdkd-train experiment=demo trainer.max_epochs=2      # synthetic data: minutes on a CPU, no download',
    'hdkd-train experiment=teacher_brain data.root=/data/brain_tumor_mri',
    ('hdkd-train experiment=distill_brain data.root=/data/brain_tumor_mri '
     'model.teacher.ckpt_path=logs/teacher_brain/runs/2026-12-02_21-19-11_229663/checkpoints/best.ckpt'),
    'hdkd-train experiment=distill_brain data.root=/data/brain_tumor_mri trainer.devices=4 trainer.precision=bf16-mixed',
    'hdkd-train experiment=student_ham10000 data.root=/data/ham10000 data.train_per_class=100 recipe=cpu64',
    'hdkd-train experiment=teacher_isic data.root=/data/isic2018 ckpt_path=last      # resume',
    'hdkd-train -m hparams_search=optuna experiment=distill_brain data.root=...       # Optuna sweep',
    'hdkd-train -m hydra/launcher=slurm_gpu experiment=distill_isic trainer.devices=4 seed=0,1,2',
]


GROUPS = ["experiment", "data", "model", "recipe", "trainer", "logger", "callbacks", "hparams_search", "debug", "report"]


@hydra_command("train", description=DESCRIPTION, examples=EXAMPLES, groups=GROUPS, keys=KEYS)
def main(cfg):
    from hdkd_lightning.pipeline import run_train

    return run_train(cfg).get("optimized_metric")


if __name__ == "__main__":
    main()
