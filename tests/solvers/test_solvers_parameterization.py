"""x0 / eps / v / score conversions."""
import itertools

import pytest
import torch

from solvers import PREDICTIONS, VESDE, VPSDE, LogLinearVPSDE, as_x0_denoiser, convert
from solvers.analytic import GaussianTarget

SDES = [VPSDE(), VESDE(), LogLinearVPSDE()]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("source,target", list(itertools.permutations(PREDICTIONS, 2)))
def test_round_trip(sde, source, target):
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    pred = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64)
    back = convert(convert(pred, x_t, t, sde, source, target), x_t, t, sde, target, source)
    torch.testing.assert_close(back, pred)


def test_definitions_and_zero_sigma_guard():
    sde = VPSDE()
    x0, eps = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    x_t = sde.perturb(x0, t, eps)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    torch.testing.assert_close(convert(x0, x_t, t, sde, "x0", "eps"), eps)
    torch.testing.assert_close(convert(x0, x_t, t, sde, "x0", "v"), a * eps - s * x0)
    torch.testing.assert_close(convert(eps, x_t, t, sde, "eps", "score"), -eps / s)
    # sigma(0) = 0 for linear VP: no division by zero, finite output
    out = convert(x0, x0, torch.zeros(2), sde, "x0", "eps")
    assert bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="unknown prediction type 'z'"):
        convert(x0, x_t, t, sde, "z", "x0")


def test_as_x0_denoiser():
    sde = VPSDE()
    gauss = GaussianTarget.random((3,))
    den = gauss.denoiser(sde)
    x_t = torch.randn(5, 3, dtype=torch.float64)
    t = torch.full((5,), 0.4, dtype=torch.float64)
    for kind in PREDICTIONS:
        model = lambda x, tt, k=kind: convert(den(x, tt), x, tt, sde, "x0", k)  # noqa: E731
        torch.testing.assert_close(as_x0_denoiser(model, sde, kind)(x_t, t), den(x_t, t))
