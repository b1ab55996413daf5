"""hdkd-convert input=<original .pth> arch=<arch> output=<ckpt>: original-code weights -> checkpoint."""

from hdkd_lightning.cli._common import hydra_command

DESCRIPTION = """A weights file of the authors' original code -> a checkpoint of this project (usable by
hdkd-eval, hdkd-predict, hdkd-export and as a teacher)."""
EXAMPLES = [
    ('hdkd-convert input=official_teacher.pth arch=hdkd_teacher output=teacher.ckpt '
     'class_names=[glioma,meningioma,notumor,pituitary]'),
]


@hydra_command("convert", description=DESCRIPTION, examples=EXAMPLES, groups=['data'])
def main(cfg):
    from hdkd_lightning.pipeline import run_convert

    run_convert(cfg)


if __name__ == "__main__":
    main()
