"""hdkd-train: fit on train, select on val, test once. ``hdkd-train experiment=teacher_isic``."""

from hdkd_lightning.cli._common import hydra_command


@hydra_command("train")
def main(cfg):
    from hdkd_lightning.pipeline import run_train

    return run_train(cfg).get("optimized_metric")


if __name__ == "__main__":
    main()
