"""Time grids: decreasing float64 tensors of steps + 1 points from t_start to t_end.

Endpoints are pinned exactly (no round trip through log-SNR), so every grid starts at
t_start and ends at t_end whatever the schedule.
"""
from __future__ import annotations

import math

import torch

from .sde import SDE

Tensor = torch.Tensor

__all__ = ["GRIDS", "make_grid", "uniform", "quadratic", "log_snr", "karras"]


def uniform(sde: SDE, steps: int, t_start: float, t_end: float) -> Tensor:
    return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)


def quadratic(sde: SDE, steps: int, t_start: float, t_end: float) -> Tensor:
    """Uniform in sqrt(t - t_end): small steps near the data end (DDIM's 'quad')."""
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return t_end + (t_start - t_end) * u ** 2


def log_snr(sde: SDE, steps: int, t_start: float, t_end: float) -> Tensor:
    """Uniform in log-SNR, the natural variable of exponential integrators (DPM-Solver)."""
    lam0, lam1 = sde.log_snr(t_start).item(), sde.log_snr(t_end).item()
    if not (math.isfinite(lam0) and math.isfinite(lam1)):
        raise ValueError(f"the log_snr grid needs a finite log-SNR at both ends; got {lam0} at "
                         f"t_start={t_start} and {lam1} at t_end={t_end} (use t_end > 0 or grid='karras')")
    return _pin(sde.t_from_log_snr(torch.linspace(lam0, lam1, steps + 1, dtype=torch.float64)), t_start, t_end)


def karras(sde: SDE, steps: int, t_start: float, t_end: float, rho: float = 7.0) -> Tensor:
    """EDM grid (Karras et al.): uniform in (sigma/alpha)^(1/rho), mapped back to t."""
    s_max = math.exp(-0.5 * sde.log_snr(t_start).item())  # sigma/alpha = exp(-lambda/2)
    s_min = math.exp(-0.5 * sde.log_snr(t_end).item())
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    s = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _pin(sde.t_from_log_snr(-2.0 * torch.log(s)), t_start, t_end)


def _pin(ts: Tensor, t_start: float, t_end: float) -> Tensor:
    ts = ts.clone()
    ts[0], ts[-1] = t_start, t_end
    return ts


GRIDS = {"uniform": uniform, "quadratic": quadratic, "log_snr": log_snr, "karras": karras}


def make_grid(grid, sde: SDE, steps: int, t_start: float = 1.0, t_end: float = 0.0) -> Tensor:
    """A named grid (see GRIDS) or an explicit 1-D tensor/sequence of decreasing times."""
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; available: {', '.join(GRIDS)}")
        ts = GRIDS[grid](sde, steps, float(t_start), float(t_end))
    else:
        ts = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
        if ts.ndim != 1 or ts.numel() < 2:
            raise ValueError(f"an explicit grid must be 1-D with at least 2 points, got shape {tuple(ts.shape)}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError(f"grid must be strictly decreasing (t_start > t_end), got {ts.tolist()}")
    return ts
