"""hdkd-predict ckpt_path=<ckpt> input=<image or folder> output=<csv> [tta_flip=true]."""

from hdkd_lightning.cli._common import hydra_command

DESCRIPTION = """Class probabilities for an image file or a folder of images, with a checkpoint or an exported
.onnx / .pt2 model (its model card beside it), written as CSV (and JSON)."""
EXAMPLES = [
    'hdkd-predict ckpt_path=best.ckpt input=/data/new_images output=predictions.csv',
    'hdkd-predict ckpt_path=student.onnx input=scan.jpg device=cpu topk=2 json=pred.json',
    'hdkd-predict ckpt_path=student.pt2 input=/data/new_images device=cuda batch_size=64',
]


@hydra_command("predict", description=DESCRIPTION, examples=EXAMPLES, groups=[])
def main(cfg):
    from hdkd_lightning.pipeline import run_predict

    run_predict(cfg)


if __name__ == "__main__":
    main()
