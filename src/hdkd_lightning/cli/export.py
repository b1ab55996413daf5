"""hdkd-export ckpt_path=<ckpt> format=onnx|pt2|timm output=<file> [data=<name> data.root=<dir>] [int8=true]."""

from hdkd_lightning.cli._common import hydra_command


@hydra_command("export")
def main(cfg):
    from hdkd_lightning.pipeline import run_export

    run_export(cfg)


if __name__ == "__main__":
    main()
