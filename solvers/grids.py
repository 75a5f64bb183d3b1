"""Time grids: decreasing float64 tensors of steps + 1 points from t_start to t_end.

Endpoints are pinned exactly (no round trip through log-SNR), so every grid starts at
t_start and ends at t_end whatever the schedule.
"""
from __future__ import annotations

import math

import torch

from .sde import SDE

Tensor = torch.Tensor

__all__ = ["GRIDS", "make_grid", "uniform", "quadratic", "log_snr", "karras", "karras_snr", "resolve_default"]


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


def karras_snr(sde: SDE, steps: int, t_start: float, t_end: float, rho: float = 7.0) -> Tensor:
    """EDM's grid mirrored: uniform in (alpha/sigma)^(1/rho) instead of (sigma/alpha)^(1/rho).

    In log-SNR the step density is proportional to exp(lam / rho) (lam = log(alpha/sigma)):
    uniform-in-log-SNR tilted toward the data end, where EDM's grid is tilted toward the noise
    end. Why for data-prediction (x0) exponential integrators: their local error is alpha_t
    times the error of integrating x0 over lam. At low SNR, x0 -> E[x0] for any data, its
    lam-derivatives fall off like the SNR, and alpha_t -> 0 damps what is left, so the noise end
    needs the fewest steps; toward the data end x0 still moves and alpha_t -> 1.
    EDM's rho = 7 is kept (no tuning); rho -> inf gives the log_snr grid back. Check a method's
    order on it before making it a default: for dpmpp_2m on linear VP, rho = 7 lies near a
    cancellation of the leading error term (see solvers.ode.DPMPP_2M_GRID)."""
    lam0, lam1 = 0.5 * sde.log_snr(t_start).item(), 0.5 * sde.log_snr(t_end).item()
    if not (math.isfinite(lam0) and math.isfinite(lam1)):
        raise ValueError(f"the karras_snr grid needs a finite log-SNR at both ends; got {2 * lam0} at "
                         f"t_start={t_start} and {2 * lam1} at t_end={t_end} (use t_end > 0 or grid='karras')")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    r0, r1 = math.exp(lam0 / rho), math.exp(lam1 / rho)
    lam = rho * torch.log(r0 + u * (r1 - r0))
    return _pin(sde.t_from_log_snr(2.0 * lam), t_start, t_end)


def _pin(ts: Tensor, t_start: float, t_end: float) -> Tensor:
    ts = ts.clone()
    ts[0], ts[-1] = t_start, t_end
    return ts


GRIDS = {"uniform": uniform, "quadratic": quadratic, "log_snr": log_snr, "karras": karras, "karras_snr": karras_snr}


def resolve_default(default, sde: SDE) -> str:
    """A method's default grid: a name, or a dict from SDE name (`sde.name`) to grid name with
    "*" for every other schedule. Log-SNR-based grids fall back to EDM's grid where sigma(t_end)
    = 0 (the log-SNR is infinite there; callers check that)."""
    if isinstance(default, dict):
        return default.get(sde.name, default["*"])
    return default


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
