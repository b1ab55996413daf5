"""hdkd-export ckpt_path=<ckpt> format=onnx|pt2|timm output=<file> [data=<name> data.root=<dir>] [int8=true]."""

from hdkd_lightning.cli._common import hydra_command

DESCRIPTION = """Export a checkpoint's deployable network (BatchNorm folded) as ONNX, a torch.export program
(pt2) or timm weights, each with a model card; optionally an ONNX Runtime int8 model."""
EXAMPLES = [
    'hdkd-export ckpt_path=best.ckpt format=onnx output=student.onnx data=brain_tumor data.root=/data/brain_tumor_mri',
    'hdkd-export ckpt_path=best.ckpt format=onnx output=student.onnx data=brain_tumor data.root=... int8=true',
    'hdkd-export ckpt_path=best.ckpt format=pt2 output=student.pt2',
    'hdkd-export ckpt_path=best.ckpt format=timm output=student.pth',
]


@hydra_command("export", description=DESCRIPTION, examples=EXAMPLES, groups=['data'])
def main(cfg):
    from hdkd_lightning.pipeline import run_export

    run_export(cfg)


if __name__ == "__main__":
    main()
