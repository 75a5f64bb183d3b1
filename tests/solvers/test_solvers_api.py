"""sample(): registry, NFE, shapes, dtypes, hooks, callbacks, errors, reproducibility."""
import math

import pytest
import torch

import solvers
from solvers import VPSDE, LogLinearVPSDE, NonFiniteError
from solvers.analytic import GaussianTarget

SDE = LogLinearVPSDE()


class Counting:
    """A denoiser that counts its calls (the ground truth for NFE)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype
        self.calls += 1
        return self.fn(x, t)


def _gauss_denoiser(shape, sde=SDE):
    return GaussianTarget.random(shape[1:], dtype=torch.float64).denoiser(sde)


def test_available_lists_everything():
    names = solvers.available()
    for m in ("euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m", "dpm_adaptive",
              "euler_maruyama", "ancestral", "pc", "dpmpp_2m_sde"):
        assert m in names
    from torchdiffeq._impl.odeint import SOLVERS
    assert {f"torchdiffeq:{m}" for m in SOLVERS} <= set(names)
    assert {f"scipy:{m}" for m in ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")} <= set(names)
    assert {"torchsde:euler", "torchsde:milstein", "torchsde:srk", "torchsde:reversible_heun"} <= set(names)
    assert set(solvers.available("ode")) | set(solvers.available("sde")) == set(names)


@pytest.mark.filterwarnings("ignore:Functional iteration did not converge")  # implicit Adams at 6 steps
@pytest.mark.parametrize("method", solvers.available())
def test_nfe_is_exact_and_output_keeps_shape_and_dtype(method):
    shape = (2, 3, 2)
    x_T = SDE.prior_sample(shape, generator=torch.Generator().manual_seed(0))
    den = Counting(_gauss_denoiser(shape))
    res = solvers.sample(den, SDE, x_T, method=method, steps=6, generator=torch.Generator().manual_seed(1))
    assert res.nfe == den.calls > 0
    assert res.x.shape == x_T.shape and res.x.dtype == x_T.dtype and res.method == method
    assert bool(torch.isfinite(res.x).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 4), (2, 5, 3), (2, 2, 3, 3)], ids=["Bd", "BLd", "BCHW"])
@pytest.mark.parametrize("method", ["ddim", "heun", "dpmpp_3m", "dpm_adaptive", "ancestral", "pc",
                                    "dpmpp_2m_sde", "torchdiffeq:rk4"])
def test_shapes_and_dtypes(method, shape, dtype):
    gauss = GaussianTarget.random(shape[1:], dtype=dtype)
    x_T = SDE.prior_sample(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    res = solvers.sample(gauss.denoiser(SDE), SDE, x_T, method=method, steps=30,
                         generator=torch.Generator().manual_seed(0))
    assert res.x.shape == shape and res.x.dtype == dtype
    if solvers.method_info(method)["kind"] == "ode":
        ref = gauss.exact_map(SDE, x_T, 1.0, 0.0)
        assert ((res.x.double() - ref).norm() / ref.norm()).item() < 2e-2


def test_x0_hook_state_hook_and_callback():
    shape = (3, 4)
    x_T = SDE.prior_sample(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen, hooked = [], []

    def state_hook(x, t):
        hooked.append(t[0].item())
        x = x.clone()
        x[:, 0] = 5.0
        return x

    res = solvers.sample(_gauss_denoiser(shape), SDE, x_T, method="dpmpp_2m", steps=8,
                         x0_hook=lambda x0, t: x0.clamp(-0.1, 0.1), state_hook=state_hook, callback=seen.append)
    grid = solvers.make_grid("log_snr", SDE, 8, 1.0, 0.0).tolist()
    assert [s.step for s in seen] == list(range(8))
    assert [s.t for s in seen] == pytest.approx(grid[1:]) and hooked == pytest.approx(grid[1:])
    assert all(s.x0.abs().max() <= 0.1 for s in seen)  # the callback sees the hooked x0
    assert (res.x[:, 0] == 5.0).all() and seen[-1].x is res.x


@pytest.mark.parametrize("method", ["euler_maruyama", "ancestral", "pc", "dpmpp_2m_sde", "torchsde:euler"])
def test_same_seed_same_samples(method):
    x_T = SDE.prior_sample((4, 3), generator=torch.Generator().manual_seed(0))
    den = _gauss_denoiser((4, 3))
    run = lambda seed: solvers.sample(den, SDE, x_T, method=method, steps=5,  # noqa: E731
                                      generator=torch.Generator().manual_seed(seed)).x
    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert not torch.equal(run(3), run(4))


def test_grid_and_t_end_handling():
    x_T = torch.randn(2, 3, dtype=torch.float64)
    den = Counting(_gauss_denoiser((2, 3)))
    res = solvers.sample(den, SDE, x_T, method="ddim", grid=torch.tensor([1.0, 0.6, 0.3, 0.1]))
    assert res.steps == 3 and res.nfe == 3
    ts = []
    solvers.sample(lambda x, t: ts.append(t[0].item()) or x, VPSDE(), x_T, method="euler", steps=4, grid="uniform")
    assert ts == pytest.approx([1.0, 0.75025, 0.5005, 0.25075])  # ends at VPSDE.t_min_default = 1e-3
    solvers.sample(den, VPSDE(), x_T, method="dpmpp_2m", steps=4, t_end=0.0)  # sigma(0) = 0: karras grid


def test_restart_from_intermediate_time():
    sde = SDE
    gauss = GaussianTarget.random((3,))
    x_mid = sde.perturb(torch.zeros(2, 3, dtype=torch.float64), 0.4, generator=torch.Generator().manual_seed(0))
    res = solvers.sample(gauss.denoiser(sde), sde, x_mid, method="dpmpp_3m", steps=40, t_start=0.4)
    ref = gauss.exact_map(sde, x_mid, 0.4, 0.0)
    assert ((res.x - ref).norm() / ref.norm()).item() < 1e-3


def test_bad_arguments_are_rejected_by_name():
    x_T, den = torch.randn(2, 3), _gauss_denoiser((2, 3))
    with pytest.raises(ValueError, match=r"unknown method 'foo'; available: .*euler.*dpmpp_2m"):
        solvers.sample(den, SDE, x_T, method="foo")
    with pytest.raises(ValueError, match=r"'eta'.*'ddim'.*none"):
        solvers.sample(den, SDE, x_T, method="ddim", eta=0.5)
    with pytest.raises(ValueError, match=r"'snr2'.*'pc'.*predictor, snr, corrector_steps"):
        solvers.sample(den, SDE, x_T, method="pc", snr2=0.5)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"steps must be a positive integer, got {bad!r}"):
            solvers.sample(den, SDE, x_T, steps=bad)
    with pytest.raises(ValueError, match="state_hook"):
        solvers.sample(den, SDE, x_T, method="torchdiffeq:dopri5", state_hook=lambda x, t: x)
    with pytest.raises(ValueError, match="t_end"):
        solvers.sample(den, SDE, x_T, t_start=0.2, t_end=0.5)
    with pytest.raises(ValueError, match="predictor 'heun'"):
        solvers.sample(den, SDE, x_T, method="pc", predictor="heun")
    with pytest.raises(ValueError, match="takes no grid"):
        solvers.sample(den, SDE, x_T, method="dpm_adaptive", grid="uniform")
    with pytest.raises(ValueError, match="singular at t_end=0.0"):
        solvers.sample(den, VPSDE(), x_T, method="scipy:RK45", t_end=0.0)


@pytest.mark.parametrize("method", ["ddim", "dpmpp_3m", "euler_maruyama", "dpm_adaptive", "torchdiffeq:dopri5",
                                    "scipy:RK45"])
def test_nan_is_an_error_naming_the_step(method):
    calls = [0]

    def den(x, t):
        calls[0] += 1
        return torch.full_like(x, math.nan) if calls[0] == 4 else torch.zeros_like(x)

    with pytest.raises(NonFiniteError, match=r"(step|evaluation) \d+ \(t=[0-9.]+\)"):
        solvers.sample(den, SDE, torch.randn(2, 3), method=method, steps=10)
    assert issubclass(NonFiniteError, FloatingPointError)


def test_nan_in_state_names_the_step():
    def hook(x, t):
        return x if t[0] > 0.5 else x * math.inf

    with pytest.raises(NonFiniteError, match=r"after step 4 \(t=0.5\)"):
        solvers.sample(lambda x, t: x, SDE, torch.randn(2, 3), method="euler", steps=10, grid="uniform",
                       state_hook=hook)


def test_external_integrators_stay_inside_the_interval():
    ts = []

    def den(x, t):
        ts.append(t[0].item())
        return torch.zeros_like(x)

    for method in ("torchdiffeq:dopri5", "torchdiffeq:bosh3", "scipy:RK45", "scipy:BDF"):
        solvers.sample(den, VPSDE(), torch.randn(2, 3, dtype=torch.float64), method=method)
    assert min(ts) >= 1e-3 and max(ts) <= 1.0


def test_progress_bar_runs():
    x_T = torch.randn(2, 3)
    for method in ("ddim", "dpm_adaptive"):
        res = solvers.sample(_gauss_denoiser((2, 3)), SDE, x_T, method=method, steps=3, progress=True)
        assert res.x.shape == x_T.shape
