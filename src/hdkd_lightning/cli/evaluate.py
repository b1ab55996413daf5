"""hdkd-eval ckpt_path=<ckpt> data=<name> data.root=<dir>: metrics and artefacts of a checkpoint."""

from hdkd_lightning.cli._common import hydra_command


@hydra_command("eval")
def main(cfg):
    from hdkd_lightning.pipeline import run_eval

    run_eval(cfg)


if __name__ == "__main__":
    main()
