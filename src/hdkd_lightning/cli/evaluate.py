"""hdkd-eval ckpt_path=<ckpt> data=<name> data.root=<dir>: metrics and artefacts of a checkpoint."""

from hdkd_lightning.cli._common import hydra_command

DESCRIPTION = """Every evaluation artefact of a checkpoint on the test (or val) split of a dataset: metrics.json
with 95% intervals and calibration, per_class.csv, predictions.csv, figures and report.html."""
# (key=<value>, one line): what people set most, shown first by --help
KEYS = [
    ("ckpt_path=<file>", "the checkpoint to score (required): logs/<task>/runs/<time>/checkpoints/best.ckpt"),
    ("data=<name>", "the dataset (options below): the checkpoint's own is scored on its recorded split, "
                    "others as external"),
    ("data.root=<folder>", "the dataset's folder"),
    ("split=test|val", "the split to score (default test)"),
    ("calibrate=true", "fit a temperature on the validation split, store it in the checkpoint, score with it"),
]
EXAMPLES = [
    ('hdkd-eval ckpt_path=logs/distill_brain/runs/2026-12-02_21-19-11_229663/checkpoints/best.ckpt data=brain_tumor '
     'data.root=/data/brain_tumor_mri'),
    'hdkd-eval ckpt_path=best.ckpt data=brain_tumor data.root=/data/brain_tumor_mri split=val',
    'hdkd-eval ckpt_path=best.ckpt data=ham10000 data.root=/data/ham10000 calibrate=true   # temperature scaling',
]


@hydra_command("eval", description=DESCRIPTION, examples=EXAMPLES, groups=['data', 'trainer', 'logger', 'report'],
               keys=KEYS)
def main(cfg):
    from hdkd_lightning.pipeline import run_eval

    run_eval(cfg)


if __name__ == "__main__":
    main()
