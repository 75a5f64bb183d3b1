"""log_likelihood against the closed-form Gaussian marginal."""
import pytest
import torch

import solvers
from solvers import VPSDE, LogLinearVPSDE
from solvers.analytic import GaussianTarget


def _data(sde, shape, n=8, seed=0):
    gauss = GaussianTarget.random(shape)
    g = torch.Generator().manual_seed(seed)
    x0 = gauss.mu + gauss.s * torch.randn((n, *shape), generator=g, dtype=torch.float64)
    return gauss, x0


@pytest.mark.parametrize("sde", [VPSDE(), LogLinearVPSDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("method", ["torchdiffeq:dopri5", "scipy:RK45"])
def test_exact_divergence_matches_closed_form(sde, method):
    gauss, x0 = _data(sde, (2, 3))
    exact = gauss.log_prob(sde, sde.t_min_default, x0)
    ll = solvers.log_likelihood(gauss.denoiser(sde), sde, x0, method=method, divergence="exact",
                                prior_log_prob=lambda x: gauss.log_prob(sde, 1.0, x))
    assert ll.shape == (8,) and ll.dtype == torch.float64
    assert ((ll - exact).abs() / exact.abs()).max().item() < 1e-3


def test_default_prior_is_close_for_vpsde():
    """With the N(0, 1) prior the only error is alpha(1) ~ 0.007 of the data left at t = 1."""
    sde = VPSDE()
    gauss, x0 = _data(sde, (3,))
    exact = gauss.log_prob(sde, sde.t_min_default, x0)
    ll = solvers.log_likelihood(gauss.denoiser(sde), sde, x0, divergence="exact")
    assert ((ll - exact).abs() / exact.abs()).max().item() < 3e-2


def test_hutchinson_within_sampling_error():
    """A non-diagonal linear denoiser (rotated Gaussian data), so probes matter: the Gaussian
    probe's estimate scatters around the exact divergence's result with zero mean."""
    sde = LogLinearVPSDE()
    d = 4
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    var = torch.tensor([0.1, 0.4, 1.0, 2.0], dtype=torch.float64)
    cov = q @ torch.diag(var) @ q.T

    def marg_cov(t):
        a, s = sde.alpha(t).item(), sde.sigma(t).item()
        return a * a * cov + s * s * torch.eye(d, dtype=torch.float64)

    def denoiser(x, t):  # E[x0 | x_t] = a cov (a^2 cov + s^2 I)^-1 x_t for zero-mean data
        a = sde.alpha(t[0].item()).item()
        return x @ torch.linalg.solve(marg_cov(t[0].item()), a * cov).T

    def log_p(t, x):
        return torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64), marg_cov(t)).log_prob(x)

    x0 = torch.randn(64, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    prior = lambda x: log_p(1.0, x)  # noqa: E731
    exact = log_p(0.0, x0)
    ll_exact = solvers.log_likelihood(denoiser, sde, x0, divergence="exact", prior_log_prob=prior)
    assert ((ll_exact - exact).abs() / exact.abs()).max().item() < 1e-3
    ll_h = solvers.log_likelihood(denoiser, sde, x0, divergence="hutchinson", probe="gaussian",
                                  prior_log_prob=prior, generator=torch.Generator().manual_seed(1))
    diff = ll_h - exact
    assert diff.std().item() > 1e-3  # the probe does add noise here...
    assert abs(diff.mean().item()) < 4 * diff.std().item() / 8  # ...without bias (4 standard errors)
    ll_r = solvers.log_likelihood(denoiser, sde, x0, prior_log_prob=prior, generator=torch.Generator().manual_seed(1))
    assert abs((ll_r - exact).mean().item()) < 4 * (ll_r - exact).std().item() / 8


def test_bad_arguments():
    sde, x0 = VPSDE(), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown divergence 'trace'"):
        solvers.log_likelihood(lambda x, t: x, sde, x0, divergence="trace")
    with pytest.raises(ValueError, match="unknown probe 'uniform'"):
        solvers.log_likelihood(lambda x, t: x, sde, x0, probe="uniform")
    with pytest.raises(ValueError, match="singular at t_end=0.0"):
        solvers.log_likelihood(lambda x, t: x, sde, x0, t_end=0.0)
    with pytest.raises(ValueError, match="unknown likelihood method 'rk4'"):
        solvers.log_likelihood(lambda x, t: x, sde, x0, method="rk4")
