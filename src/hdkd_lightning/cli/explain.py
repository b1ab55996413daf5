"""hdkd-explain ckpt_path=<ckpt> input=<image or folder> output_dir=<dir> [target=pred|<class>]."""

from hdkd_lightning.cli._common import hydra_command

DESCRIPTION = """Grad-CAM maps (pytorch-grad-cam) of a checkpoint's network for an image or a folder: one PNG
per image (image, heatmap, overlay, prediction), index.csv and index.html."""
EXAMPLES = [
    'hdkd-explain ckpt_path=best.ckpt input=/data/brain_tumor_mri/Testing/glioma output_dir=cams',
    'hdkd-explain ckpt_path=best.ckpt input=scan.jpg output_dir=cams target=meningioma',
]


@hydra_command("explain", description=DESCRIPTION, examples=EXAMPLES, groups=[])
def main(cfg):
    from hdkd_lightning.pipeline import run_explain

    run_explain(cfg)


if __name__ == "__main__":
    main()
