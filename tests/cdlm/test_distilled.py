"""The distilled few-step sampler (`cdlm.DistilledDiffusionLM`): its target, rounds, CLI and errors."""

import pytest
import torch

import solvers
from cdlm.models.config import make_sde
from cdlm.models.distilled import DistillationConfig, DistilledDiffusionLM, ddim_grid, ddim_step, distillation_target
from tests.cdlm.conftest import fails

SDE = make_sde("sqrt", -6.0, 2.0)


def test_target_makes_one_step_land_on_the_teachers_two():
    g = torch.Generator().manual_seed(0)
    grid = ddim_grid(SDE, 8)
    i = torch.tensor([0, 1, 2, 3])  # a student of 4 steps: each from grid[2i] over grid[2i+1] to grid[2i+2]
    t, t_mid, t_next = grid[2 * i], grid[2 * i + 1], grid[2 * i + 2]
    x_t, x0_a, x0_b = (torch.randn(4, 5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    x_next = ddim_step(SDE, ddim_step(SDE, x_t, x0_a, t, t_mid), x0_b, t_mid, t_next)
    target = distillation_target(SDE, x_t, x_next, t, t_next)
    torch.testing.assert_close(ddim_step(SDE, x_t, target, t, t_next), x_next, rtol=1e-12, atol=1e-12)
    # the two steps are a convex mixture of the teacher's estimates, so the target is one too
    w = ((target - x0_b) / (x0_a - x0_b)).flatten(1)
    torch.testing.assert_close(w, w[:, :1].expand_as(w), rtol=1e-9, atol=1e-9)
    assert bool(((w > 0) & (w < 1)).all())
    # and solvers' own DDIM step, on the same times, agrees
    for k in range(4):
        one = solvers.sample(lambda x, s: target[k : k + 1], SDE, x_t[k : k + 1], method="ddim",
                             grid=torch.stack([t[k], t_next[k]]))
        torch.testing.assert_close(one.x, x_next[k : k + 1], rtol=1e-10, atol=1e-10)


def test_grid_is_the_one_ddim_samples_and_halves_exactly():
    seen = []
    solvers.sample(lambda x, t: seen.append(float(t[0])) or torch.zeros_like(x), SDE, torch.zeros(1, 2, 2),
                   method="ddim", steps=8, t_end=SDE.t_min_default)
    torch.testing.assert_close(torch.tensor(seen, dtype=torch.float64), ddim_grid(SDE, 8)[:-1])
    torch.testing.assert_close(ddim_grid(SDE, 8)[::2], ddim_grid(SDE, 4))


def test_round_schedule():
    d = DistillationConfig(start_steps=8, final_steps=2, round_steps=10)
    assert d.rounds == 3
    assert [d.steps_at(s) for s in (0, 9, 10, 19, 20, 29, 30, 10_000)] == [8, 8, 4, 4, 2, 2, 2, 2]
    assert DistillationConfig(start_steps=4, final_steps=4).rounds == 1


def test_student_starts_as_the_teacher(tiny_ckpt):
    from cdlm.checkpoints import load_checkpoint

    teacher = load_checkpoint(str(tiny_ckpt))[0]
    student = DistilledDiffusionLM.from_teacher(str(tiny_ckpt))
    for name, value in teacher.ema.state_dict().items():
        torch.testing.assert_close(student.net.state_dict()[name], value)
        torch.testing.assert_close(student.ema.state_dict()[name], value)
    assert student.net.self_condition  # fed its previous step's estimate, as in sampling
    assert not student.net.embedding.weight.requires_grad  # targets live in the teacher's embedding space
    mse, ce = student.distillation_loss(torch.randint(0, 20, (6, 40)), 4, known_lengths=True)
    assert mse.shape == ce.shape == (6,) and bool(torch.isfinite(mse).all() & torch.isfinite(ce).all())


def test_the_command_line_builds_the_student_that_from_teacher_builds(tiny_ckpt):
    """`cdlm fit --model.teacher_ckpt` reads the teacher before the student is built (its class's
    `arguments_from_checkpoints`), then starts it from the teacher: as `from_teacher` does."""
    from cdlm.checkpoints import load_checkpoint

    teacher = load_checkpoint(str(tiny_ckpt))[0]
    added, start = DistilledDiffusionLM.arguments_from_checkpoints({"teacher_ckpt": str(tiny_ckpt)})
    student = DistilledDiffusionLM(tokenizer_json=teacher.hparams.tokenizer_json, seq_len=teacher.hparams.seq_len,
                                   teacher_ckpt=str(tiny_ckpt), **added)
    start(student)
    reference = DistilledDiffusionLM.from_teacher(str(tiny_ckpt))
    assert dict(student.hparams) == dict(reference.hparams)
    for (name, value), other in zip(student.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(value, other, msg=name)
    torch.testing.assert_close(student.teacher_net.state_dict(), teacher.ema.state_dict())
    assert DistilledDiffusionLM.arguments_from_checkpoints({"teacher_ckpt": str(tiny_ckpt), "teacher": {}}) == ({}, None)


def _fit_student(tmp_path, teacher, *extra):
    from cdlm.cli import main

    main([
        "fit", "--model=cdlm.DistilledDiffusionLM", f"--model.teacher_ckpt={teacher}",
        "--data.num_examples=400", "--data.seq_len=40", "--data.batch_size=16", "--model.val_samples=4",
        "--model.optim.warmup_steps=2", "--model.distill.start_steps=4", "--model.distill.round_steps=3",
        "--trainer.limit_val_batches=2", "--trainer.val_check_interval=3", "--trainer.check_val_every_n_epoch=null",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={tmp_path}/ckpt",
        "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.every_n_train_steps=3", "--trainer.callbacks.filename={step}", *extra,
    ])
    return tmp_path / "ckpt"


def test_fit_from_a_teacher_then_sample_alone(tmp_path, tiny_ckpt):
    from cdlm.checkpoints import load_checkpoint

    folder = _fit_student(tmp_path, tiny_ckpt, "--trainer.max_steps=9")
    student, _ = load_checkpoint(str(folder / "last.ckpt"))
    assert isinstance(student, DistilledDiffusionLM) and student.hparams.teacher["network"]["embed_dim"] == 8
    assert student.sampler.steps == 1 and student.sampler.restarts == 0
    assert student.sample_ids(4, seed=0).nfe == 1  # rounding "last": NFE = steps
    assert student.sample_ids(4, seed=0, steps=4, length="data").nfe == 4
    # each round's checkpoint samples by default at its own steps
    assert [load_checkpoint(str(folder / f"step={k}.ckpt"))[0].sampler.steps for k in (3, 6)] == [4, 2]
    # the teacher of each round travels with the checkpoint, so a resumed run goes on distilling
    mid = torch.load(folder / "step=6.ckpt", weights_only=True)["cdlm_distill_teacher"]
    assert mid["round"] == 1
    _fit_student(tmp_path, tiny_ckpt, "--trainer.max_steps=12", f"--ckpt_path={folder / 'step=6.ckpt'}", "--overwrite=true")
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 12


def test_bad_input_is_one_line(tmp_path, tiny_ckpt, capsys):
    with pytest.raises(ValueError, match="needs --model.teacher_ckpt"):
        DistilledDiffusionLM()
    other = tmp_path / "ar.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "cdlm_model": "AutoregressiveLM"}, other)
    with pytest.raises(ValueError, match=r"not a DiffusionLM checkpoint \(its model: AutoregressiveLM\)"):
        DistilledDiffusionLM.from_teacher(str(other))
    with pytest.raises(ValueError, match="seq_len=24 but"):
        DistilledDiffusionLM.from_teacher(str(tiny_ckpt), seq_len=24)
    with pytest.raises(ValueError, match="final_steps must be a power of two, got 3"):
        DistillationConfig(final_steps=3)
    with pytest.raises(ValueError, match="final_steps=8 must divide start_steps=4"):
        DistillationConfig(start_steps=4, final_steps=8)
    with pytest.raises(ValueError, match="unknown distillation setting 'steps'"):
        DistillationConfig.of({"steps": 4})
    assert "teacher_ckpt" in fails(capsys, "fit", "--model=cdlm.DistilledDiffusionLM", "--data.num_examples=400",
                                   "--trainer.max_steps=1")


def test_a_new_round_resets_the_loss_guard(tiny_ckpt):
    """Halving the steps raises the loss's scale; the divergence guard must not read that as divergence."""
    from types import SimpleNamespace

    from cdlm.run_guards import LossGuard

    guard = LossGuard()
    guard.average, guard.minimum, guard.seen = 1.0, 0.01, 50
    student = DistilledDiffusionLM.from_teacher(str(tiny_ckpt))
    student._trainer = SimpleNamespace(callbacks=[guard])
    student._advance(1)
    assert (guard.average, guard.seen, student.student_steps) == (None, 0, DistillationConfig().start_steps // 2)
    assert guard.minimum == float("inf")
