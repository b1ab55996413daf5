"""DistillModule runs the teacher's targets through a folded inference copy, never through a changed teacher."""

import pytest
import timm
import torch

import hdkd_lightning  # noqa: F401
from hdkd_lightning.deploy import count_batchnorms
from hdkd_lightning.distillation import teacher_targets
from hdkd_lightning.lit.distill import DistillModule

SIZE, CLASSES = 32, ["a", "b", "c"]


def _teacher_state(seed):
    torch.manual_seed(seed)
    net = timm.create_model("hdkd_teacher", num_classes=len(CLASSES), img_size=SIZE)
    with torch.no_grad():  # trained-looking BatchNorm statistics, so that folding changes the weights
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.state_dict()


def _module(**kwargs):
    spec = {"kwargs": {"num_classes": len(CLASSES), "img_size": SIZE}}
    module = DistillModule(student={"arch": "hdkd_student_distilled", **spec}, teacher={"arch": "hdkd_teacher", **spec},
                           class_names=CLASSES, optimizer={"_target_": "torch.optim.AdamW", "_partial_": True},
                           **kwargs)
    module.load_teacher_state(_teacher_state(0))
    return module


def _targets(net, x):
    logits, feats = teacher_targets(net, x.contiguous(memory_format=torch.channels_last))
    return [logits.float()] + [f.float() for f in feats]


def test_step_teacher_is_a_folded_copy_outside_the_module_tree():
    module = _module()
    step_teacher = module.step_teacher()
    assert step_teacher is not module.teacher and count_batchnorms(step_teacher) == 0
    assert count_batchnorms(module.teacher) > 0  # the registered teacher keeps the original form
    assert all(m is not step_teacher for m in module.modules())
    assert not any(k.startswith("_step_teacher") for k in module.state_dict())
    assert module.step_teacher() is step_teacher  # cached
    x = torch.randn(4, 3, SIZE, SIZE)
    for got, ref in zip(_targets(step_teacher, x), _targets(module.teacher, x)):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_step_teacher_follows_new_teacher_weights():
    module = _module()
    first = module.step_teacher()
    x = torch.randn(2, 3, SIZE, SIZE)
    module.load_teacher_state(_teacher_state(1))
    second = module.step_teacher()
    assert second is not first
    torch.testing.assert_close(_targets(second, x)[0], _targets(module.teacher, x)[0], rtol=1e-4, atol=1e-5)
    # restoring a checkpoint (resume) goes through load_state_dict: the copy is rebuilt as well
    state = {k: v.clone() for k, v in _module().state_dict().items()}
    module.load_state_dict(state)
    third = module.step_teacher()
    assert third is not second
    torch.testing.assert_close(_targets(third, x)[0], _targets(module.teacher, x)[0], rtol=1e-4, atol=1e-5)


def test_fold_off_runs_the_original_teacher():
    module = _module(teacher_fold_bn=False)
    assert module.step_teacher() is module.teacher


def test_bf16_teacher_copy_leaves_checkpointed_teacher_fp32():
    module = _module(teacher_dtype="bfloat16")
    step_teacher = module.step_teacher()
    assert all(p.dtype == torch.bfloat16 for p in step_teacher.parameters())
    assert all(v.dtype == torch.float32 for k, v in module.state_dict().items()
               if k.startswith("teacher.") and v.is_floating_point())


def test_training_step_loss_does_not_depend_on_folding():
    torch.manual_seed(3)
    batch = {"image": torch.randn(4, 3, SIZE, SIZE), "label": torch.tensor([0, 1, 2, 1])}
    student_state = _module().student.state_dict()
    losses = {}
    for f in (True, False):
        module = _module(teacher_fold_bn=f)
        module.student.load_state_dict(student_state)
        module.log = module.log_dict = lambda *a, **k: None  # no trainer attached
        losses[f] = float(module.training_step(batch, 0))
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_channels_last_auto_means_cuda_only_and_bad_values_are_refused():
    module = _module()
    assert module.hparams.channels_last == "auto"
    assert not module.channels_last.on(torch.device("cpu"))
    assert module.channels_last.on(torch.device("cuda", 0))
    assert _module(channels_last=True).channels_last.on(torch.device("cpu"))
    with pytest.raises(ValueError, match="model.channels_last must be true, false or auto"):
        _module(channels_last="yes")


@pytest.mark.parametrize("channels_last", [True, "auto"])
def test_setup_puts_the_student_in_the_chosen_layout(channels_last):
    from types import SimpleNamespace

    module = _module(channels_last=channels_last)
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    module.setup("fit")
    conv = module.student.stages[0][0].conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == (channels_last is True)
    assert (count_batchnorms(module.step_teacher()) == 0
            and module.step_teacher().stages[0][0].conv.weight.is_contiguous() != (channels_last is True))
