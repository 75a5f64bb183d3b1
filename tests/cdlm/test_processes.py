"""The noise processes under one name each: the continuous schedules are solvers' SDEs, the
absorbing ones have their own names, and the old names still load (configs, flags, checkpoints)."""

from pathlib import Path

import pytest
import torch

import solvers
from cdlm import DiffusionLM, MaskedDiffusionLM, TextDataModule
from cdlm.checkpoints import load_checkpoint
from cdlm.models import absorbing
from cdlm.models.config import SCHEDULES, DiffusionTraining, make_sde

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_diffusion.ckpt"


def test_continuous_schedules_are_solvers_sdes_under_their_names():
    for name in SCHEDULES:
        assert make_sde(name, -6.0, 2.0).name == name and name in solvers.SDES
    assert set(SCHEDULES).isdisjoint(absorbing.SCHEDULES)  # one name, one process


@pytest.mark.parametrize("old, new", [("log_linear", "loglinear"), ("linear", "vp")])
def test_old_continuous_schedule_names_are_aliases(old, new):
    assert DiffusionTraining(schedule=old) == DiffusionTraining(schedule=new)
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert torch.equal(make_sde(old, -5.0, 3.0).log_snr(t), make_sde(new, -5.0, 3.0).log_snr(t))
    with pytest.raises(ValueError, match="unknown schedule 'mask_linear'"):
        DiffusionTraining(schedule="mask_linear")


@pytest.mark.parametrize("old, new", [("log_linear", "mask_linear"), ("cosine", "mask_cosine")])
def test_old_absorbing_schedule_names_are_aliases(old, new):
    t = torch.linspace(0.01, 1, 9, dtype=torch.float64)
    assert torch.equal(absorbing.alpha(old, t), absorbing.alpha(new, t))
    assert torch.equal(absorbing.nelbo_weight(old, t), absorbing.nelbo_weight(new, t))
    with pytest.raises(ValueError, match="unknown schedule 'vp'"):
        absorbing.alpha("vp", t)


@pytest.mark.parametrize("schedule", absorbing.SCHEDULES)
def test_absorbing_nelbo_weight_is_minus_alpha_rate_over_masked_fraction(schedule):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64, requires_grad=True)
    a = absorbing.alpha(schedule, t)
    (rate,) = torch.autograd.grad(a.sum(), t)
    torch.testing.assert_close(absorbing.nelbo_weight(schedule, t), -rate / (1 - a))
    assert absorbing.alpha(schedule, torch.tensor(0.0)) == 1 and absorbing.alpha(schedule, torch.tensor(1.0)) < 1e-12


def test_a_checkpoint_with_the_old_continuous_name_loads_the_same_model():
    model = load_checkpoint(str(GOLDEN))[0]
    ckpt = torch.load(GOLDEN, map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["schedule"] == "log_linear"  # written before the rename
    assert model.training_config.schedule == "loglinear"
    assert model.sde.config() == solvers.LogLinearVPSDE(-6.0, 2.0).config()


def test_old_masked_schedule_names_give_the_same_model():
    dm = TextDataModule(num_examples=16, batch_size=8)
    make = lambda schedule: MaskedDiffusionLM(tokenizer_json=dm.tokenizer_json(), seq_len=dm.hparams.seq_len,  # noqa: E731
                                              network={"width": 16, "depth": 1, "heads": 2}, val_samples=0,
                                              training={"schedule": schedule})
    old, new = make("cosine"), make("mask_cosine")
    assert old.hparams.training["schedule"] == new.hparams.training["schedule"] == "mask_cosine"
    torch.manual_seed(0)
    masked_old = old.masking(6)
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(masked_old, new.masking(6)))


def test_a_continuous_model_stores_the_canonical_name():
    dm = TextDataModule(num_examples=16, batch_size=8)
    model = DiffusionLM(tokenizer_json=dm.tokenizer_json(), seq_len=dm.hparams.seq_len,
                        network={"width": 16, "depth": 1, "heads": 2}, val_samples=0, training={"schedule": "linear"})
    assert model.hparams.training["schedule"] == "vp" and model.sde.name == "vp"
