"""Time grids."""
import pytest
import torch

from solvers import GRIDS, VESDE, VPSDE, LogLinearVPSDE, make_grid


@pytest.mark.parametrize("sde", [VPSDE(), LogLinearVPSDE(), VESDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("name", list(GRIDS))
def test_grid_shape_and_ends(sde, name):
    ts = make_grid(name, sde, 12, 1.0, 1e-3)
    assert ts.shape == (13,) and ts.dtype == torch.float64
    assert ts[0].item() == 1.0 and ts[-1].item() == 1e-3
    assert bool((ts[1:] < ts[:-1]).all())


def test_grid_spacing():
    sde = VPSDE()
    lam = sde.log_snr(make_grid("log_snr", sde, 10, 0.9, 0.01))
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(10))
    s = torch.exp(-0.5 * sde.log_snr(make_grid("karras", sde, 10, 0.9, 0.01))) ** (1 / 7)
    torch.testing.assert_close(s.diff(), s.diff().mean().expand(10))
    r = torch.exp(0.5 * sde.log_snr(make_grid("karras_snr", sde, 10, 0.9, 0.01))) ** (1 / 7)
    torch.testing.assert_close(r.diff(), r.diff().mean().expand(10))
    q = make_grid("quadratic", sde, 4, 1.0, 0.0)
    torch.testing.assert_close(q, torch.tensor([1.0, 0.5625, 0.25, 0.0625, 0.0], dtype=torch.float64))
    assert make_grid("karras", sde, 5, 1.0, 0.0)[-1].item() == 0.0  # sigma = 0 is fine for EDM's grid


def test_grid_errors_and_explicit():
    sde = VPSDE()
    with pytest.raises(ValueError, match="unknown grid 'cubic'.*uniform"):
        make_grid("cubic", sde, 5, 1.0, 0.1)
    with pytest.raises(ValueError, match="finite log-SNR"):
        make_grid("log_snr", sde, 5, 1.0, 0.0)
    with pytest.raises(ValueError, match="finite log-SNR"):
        make_grid("karras_snr", sde, 5, 1.0, 0.0)
    with pytest.raises(ValueError, match="decreasing"):
        make_grid(torch.tensor([0.1, 0.5]), sde, 1, 1.0, 0.1)
    ts = make_grid([1.0, 0.5, 0.2], sde, 99, 1.0, 0.1)
    assert ts.tolist() == [1.0, 0.5, 0.2]
