"""hdkd-explain ckpt_path=<ckpt> input=<image or folder> output_dir=<dir> [target=pred|<class>]."""

from hdkd_lightning.cli._common import hydra_command


@hydra_command("explain")
def main(cfg):
    from hdkd_lightning.pipeline import run_explain

    run_explain(cfg)


if __name__ == "__main__":
    main()
