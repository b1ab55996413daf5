"""hdkd-predict ckpt_path=<ckpt> input=<image or folder> output=<csv> [tta_flip=true]."""

from hdkd_lightning.cli._common import hydra_command


@hydra_command("predict")
def main(cfg):
    from hdkd_lightning.pipeline import run_predict

    run_predict(cfg)


if __name__ == "__main__":
    main()
