"""Reverse-SDE samplers reproduce the Gaussian marginal at t_end."""
import pytest
import torch

import solvers
from solvers import VPSDE, LogLinearVPSDE
from solvers.analytic import GaussianTarget

N = 4096  # standard error of a mean / std estimate: about 1.6% / 1.1% of the std


def _check_marginal(sde, method, steps=100, **options):
    gauss = GaussianTarget.random((2,), dtype=torch.float32)
    x_T = sde.prior_sample((N, 2), generator=torch.Generator().manual_seed(1))
    res = solvers.sample(gauss.denoiser(sde), sde, x_T, method=method, steps=steps,
                         generator=torch.Generator().manual_seed(2), **options)
    m, sd = gauss.marginal(sde, sde.t_min_default, x_T)
    mean_err = ((res.x.double().mean(0) - m) / sd).abs().max().item()
    std_err = (res.x.double().std(0) / sd - 1).abs().max().item()
    # ~5 standard errors plus a little discretisation bias
    assert mean_err < 0.08 and std_err < 0.06, (method, options, mean_err, std_err)


@pytest.mark.parametrize("sde", [VPSDE(), LogLinearVPSDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("method,options", [
    ("euler_maruyama", {}), ("ancestral", {}), ("ancestral", {"eta": 0.5}), ("dpmpp_2m_sde", {}),
    ("pc", {}), ("pc", {"predictor": "ancestral", "snr": 0.1, "corrector_steps": 2}),
])
def test_own_sde_samplers(sde, method, options):
    _check_marginal(sde, method, **{"steps": 100, **options})


@pytest.mark.parametrize("method", [m for m in solvers.available("sde") if m.startswith("torchsde:")])
def test_torchsde_samplers(method):
    _check_marginal(LogLinearVPSDE(), method, steps=20 if method == "torchsde:srk" else 50)

