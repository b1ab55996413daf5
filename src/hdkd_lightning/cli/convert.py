"""hdkd-convert input=<original .pth> arch=<arch> output=<ckpt>: original-code weights -> checkpoint."""

from hdkd_lightning.cli._common import hydra_command


@hydra_command("convert")
def main(cfg):
    from hdkd_lightning.pipeline import run_convert

    run_convert(cfg)


if __name__ == "__main__":
    main()
