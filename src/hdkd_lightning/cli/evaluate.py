"""hdkd-eval ckpt_path=<ckpt> data=<name> data.root=<dir>: metrics and artefacts of a checkpoint."""

from hdkd_lightning.cli._common import hydra_command

DESCRIPTION = """Every evaluation artefact of a checkpoint on the test (or val) split of a dataset: metrics.json
with 95% intervals and calibration, per_class.csv, predictions.csv, figures and report.html."""
EXAMPLES = [
    ('hdkd-eval ckpt_path=logs/distill_brain/runs/<time>/checkpoints/best.ckpt data=brain_tumor '
     'data.root=/data/brain_tumor_mri'),
    'hdkd-eval ckpt_path=<ckpt> data=ham10000 data.root=/data/ham10000 calibrate=true   # temperature scaling',
]


@hydra_command("eval", description=DESCRIPTION, examples=EXAMPLES, groups=['data', 'trainer', 'logger', 'report'])
def main(cfg):
    from hdkd_lightning.pipeline import run_eval

    run_eval(cfg)


if __name__ == "__main__":
    main()
