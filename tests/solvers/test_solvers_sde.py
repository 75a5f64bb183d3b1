"""SDE schedules: marginals, derivatives, inverses, shapes and dtypes."""
import math

import pytest
import torch

import solvers
from solvers import VESDE, VPSDE, LogLinearVPSDE, SubVPSDE, VPCosineSDE, VPSqrtSDE, append_dims, sde_from_name

ALL = [VPSDE(), VPCosineSDE(), VPSqrtSDE(), SubVPSDE(), VESDE(), LogLinearVPSDE()]
VP_FAMILY = [VPSDE(), VPCosineSDE(), VPSqrtSDE(), LogLinearVPSDE()]
ids = lambda s: type(s).__name__  # noqa: E731
T = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)


@pytest.mark.parametrize("sde", VP_FAMILY, ids=ids)
def test_vp_family_preserves_variance(sde):
    a, s = sde.alpha(T), sde.sigma(T)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(T), rtol=0, atol=1e-12)
    torch.testing.assert_close(sde.g2(T), sde.beta(T), rtol=1e-10, atol=1e-12)  # g^2 = beta for VP


@pytest.mark.parametrize("sde", ALL, ids=ids)
def test_log_snr_round_trip(sde):
    t = T.clamp(max=0.99 * getattr(sde, "t_max", 1.0))
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-9)
    lam = sde.log_snr(t)
    torch.testing.assert_close(lam, torch.log(sde.alpha(t) ** 2 / sde.sigma(t) ** 2))
    assert bool((lam[1:] < lam[:-1]).all()), "log-SNR must decrease in t"


@pytest.mark.parametrize("sde", ALL, ids=ids)
def test_derivatives_match_finite_differences(sde):
    h = 1e-6
    for f, df in ((lambda t: sde.alpha(t).log(), sde.d_log_alpha), (lambda t: sde.sigma(t).log(), sde.d_log_sigma)):
        fd = (f(T + h) - f(T - h)) / (2 * h)
        torch.testing.assert_close(df(T), fd, rtol=1e-6, atol=1e-6)


def test_linear_vp_and_subvp_coefficients():
    vp, sub = VPSDE(), SubVPSDE()
    torch.testing.assert_close(vp.beta(T), 0.1 + 19.9 * T)
    b = 0.1 * T + 0.5 * 19.9 * T**2
    torch.testing.assert_close(vp.alpha(T), torch.exp(-0.5 * b))
    torch.testing.assert_close(sub.sigma(T), 1 - torch.exp(-b))
    torch.testing.assert_close(sub.g2(T), vp.beta(T) * (1 - torch.exp(-2 * b)))
    x = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(vp.drift(x, 0.3), -0.5 * vp.beta(0.3) * x)
    torch.testing.assert_close(vp.diffusion(0.3), vp.beta(0.3).sqrt())


def test_ve_coefficients():
    ve = VESDE(0.01, 50.0)
    torch.testing.assert_close(ve.sigma(T), 0.01 * 5000.0**T)
    torch.testing.assert_close(ve.alpha(T), torch.ones_like(T))
    torch.testing.assert_close(ve.beta(T), 2 * ve.sigma(T) ** 2 * math.log(5000.0))  # d sigma^2 / dt
    assert ve.prior_std == 50.0


def test_loglinear_is_finite_beyond_the_interval():
    sde = LogLinearVPSDE(-6.0, 2.0)
    t = torch.linspace(-0.2, 1.2, 57, dtype=torch.float64)
    for f in (sde.alpha, sde.sigma, sde.log_snr, sde.beta, sde.diffusion, sde.d_log_alpha, sde.d_log_sigma):
        assert bool(torch.isfinite(f(t)).all())
    assert sde.sigma(0.0).item() > 0 and sde.t_min_default == 0.0
    assert sde.log_snr(0.0).item() == pytest.approx(2.0) and sde.log_snr(1.0).item() == pytest.approx(-6.0)
    # beta = -lambda' sigmoid(-lambda)
    torch.testing.assert_close(sde.beta(t), 8.0 * torch.sigmoid(-sde.log_snr(t)))


def test_cosine_is_finite_at_and_beyond_one():
    sde = VPCosineSDE()
    t = torch.tensor([0.5, 0.99, 1.0, 1.05], dtype=torch.float64)
    for f in (sde.alpha, sde.sigma, sde.log_snr, sde.beta, sde.d_log_sigma):
        assert bool(torch.isfinite(f(t)).all())


@pytest.mark.parametrize("sde", ALL, ids=ids)
def test_shapes_and_dtypes_of_coefficients(sde):
    assert sde.alpha(0.5).shape == () and sde.alpha(0.5).dtype == torch.float64
    for t in (torch.rand(5), torch.rand(2, 3, dtype=torch.float64)):
        for f in (sde.alpha, sde.sigma, sde.log_snr, sde.beta, sde.diffusion):
            out = f(t)
            assert out.shape == t.shape and out.dtype == torch.float64
    x = torch.randn(4, 3, 2)
    assert sde.drift(x, torch.rand(4)).dtype == torch.float32 and sde.drift(x, 0.3).shape == x.shape


@pytest.mark.parametrize("sde", [VPSDE(), LogLinearVPSDE(), VESDE()], ids=ids)
def test_perturb_marginal(sde):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 2), 1.5)
    t = torch.full((20000,), 0.4)
    xt = sde.perturb(x0, t, generator=g)
    a, s = sde.alpha(0.4).item(), sde.sigma(0.4).item()
    assert xt.dtype == torch.float32 and xt.shape == x0.shape
    assert xt.mean().item() == pytest.approx(1.5 * a, abs=4 * s / 200)
    assert xt.std().item() == pytest.approx(s, rel=0.02)
    noise = torch.randn(3, 5, 4, dtype=torch.float64)
    x0 = torch.randn(3, 5, 4, dtype=torch.float64)
    tb = torch.tensor([0.1, 0.5, 0.9])
    expect = append_dims(sde.alpha(tb), 3) * x0 + append_dims(sde.sigma(tb), 3) * noise
    torch.testing.assert_close(sde.perturb(x0, tb, noise), expect)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=ids)
def test_prior(sde):
    x = sde.prior_sample((3, 4, 5), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert x.shape == (3, 4, 5) and x.dtype == torch.float64
    lp = sde.prior_log_prob(x)
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(x).flatten(1).sum(1)
    assert lp.shape == (3,)
    torch.testing.assert_close(lp, ref)


def test_append_dims_and_registry():
    assert append_dims(torch.ones(3), 4).shape == (3, 1, 1, 1)
    assert append_dims(torch.tensor(2.0), 3).shape == (1, 1, 1)
    with pytest.raises(ValueError):
        append_dims(torch.ones(2, 2), 1)
    for sde in ALL:
        again = sde_from_name(**sde.config())
        assert type(again) is type(sde) and again.config() == sde.config()
    with pytest.raises(ValueError, match="unknown SDE 'nope'.*loglinear"):
        sde_from_name("nope")
    with pytest.raises(ValueError, match="log_snr_min"):
        LogLinearVPSDE(2.0, -6.0)
    assert set(solvers.SDES) == {"vp", "cosine", "sqrt", "subvp", "ve", "loglinear"}


# ------------------------------------------------------------------------------ noise scale
@pytest.mark.parametrize("sde", VP_FAMILY, ids=ids)
def test_noise_scale_one_is_the_plain_schedule(sde):
    assert type(sde_from_name(**sde.config(), noise_scale=1.0)) is type(sde)
    scaled = solvers.NoiseScaledVPSDE(sde, 1.0)
    t = T.clamp(max=0.99 * getattr(sde, "t_max", 1.0))
    for name in ("alpha", "sigma", "log_snr", "d_log_snr", "g2", "beta"):
        torch.testing.assert_close(getattr(scaled, name)(t), getattr(sde, name)(t), rtol=0, atol=1e-12, msg=name)
    assert scaled.name == sde.name and scaled.t_min_default == sde.t_min_default


@pytest.mark.parametrize("sde", VP_FAMILY, ids=ids)
def test_noise_scale_gives_the_exact_noisier_marginal(sde):
    """x_t = alpha x0 + k sigma eps, divided by sqrt(alpha^2 + k^2 sigma^2): still variance preserving,
    its log-SNR lowered by 2 log k, with the base's derivatives, inverse and a config that round-trips."""
    k = 3.0
    scaled = solvers.NoiseScaledVPSDE(sde, k)
    t = T.clamp(max=0.99 * getattr(sde, "t_max", 1.0))
    a, s = sde.alpha(t), sde.sigma(t)
    norm = torch.sqrt(a**2 + (k * s) ** 2)
    torch.testing.assert_close(scaled.alpha(t), a / norm, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scaled.sigma(t), k * s / norm, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scaled.log_snr(t), sde.log_snr(t) - 2 * math.log(k))
    torch.testing.assert_close(scaled.d_log_snr(t), sde.d_log_snr(t))
    torch.testing.assert_close(scaled.t_from_log_snr(scaled.log_snr(t)), t, rtol=0, atol=1e-9)
    again = sde_from_name(**scaled.config())
    assert isinstance(again, solvers.NoiseScaledVPSDE) and again.config() == scaled.config()
    torch.testing.assert_close(again.alpha(t), scaled.alpha(t), rtol=0, atol=0)
    # the perturbation kernel's moments are the marginal's
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    xt = scaled.perturb(x0, 0.5, generator=torch.Generator().manual_seed(0))
    assert abs(xt.mean().item() - 0.7 * scaled.alpha(0.5).item()) < 0.02
    assert abs(xt.std().item() - scaled.sigma(0.5).item()) < 0.02


def test_noise_scale_rejects_bad_values():
    with pytest.raises(ValueError, match="noise_scale must be a finite number > 0, got 0.0"):
        solvers.NoiseScaledVPSDE(VPSDE(), 0.0)
    with pytest.raises(ValueError, match="variance-preserving"):
        solvers.NoiseScaledVPSDE(VESDE(), 2.0)
