"""Exact likelihood through the probability-flow ODE (instantaneous change of variables):

    log p_{t_end}(x) = log p_1(x_1) + int_{t_end}^1 div_x v(x_t, t) dt,

where v is the PF-ODE velocity and x_t solves the ODE from x at t_end up to t = 1. The
divergence is exact (one backward pass per dimension: small states only) or Hutchinson's
unbiased estimate E[z^T (dv/dx) z] with one probe z fixed for the whole solve.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .core import time_vector
from .private_api import torchdiffeq_is_fixed_grid, torchdiffeq_methods
from .sde import SDE

Tensor = torch.Tensor

__all__ = ["log_likelihood"]

DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")


def _divergence(v: Tensor, x: Tensor, probe: Tensor | None) -> Tensor:
    """div_x v per sample, [B]; v must be a differentiable function of x."""
    if probe is not None:  # Hutchinson: z^T J z = sum(z * d(v.z)/dx)
        (g,) = torch.autograd.grad((v * probe).sum(), x)
        return (g * probe).flatten(1).sum(1)
    vf = v.flatten(1)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for j in range(vf.shape[1]):  # the samples are independent, so d sum_b v[b, j] / dx[b, j] = J_jj
        (g,) = torch.autograd.grad(vf[:, j].sum(), x, retain_graph=True)
        div = div + g.flatten(1)[:, j]
    return div


def _integrate(f: Callable, y0: Tensor, t0: float, t1: float, method: str, rtol: float, atol: float,
               steps: int) -> Tensor:
    """Integrate dy/dt = f(t, y) for a [B, N] tensor with torchdiffeq:<m> or scipy:<m>."""
    backend, _, name = method.partition(":")
    if backend == "torchdiffeq":
        from torchdiffeq import odeint

        if name not in torchdiffeq_methods():
            raise ValueError(f"unknown torchdiffeq method {name!r}; available: {', '.join(torchdiffeq_methods())}")
        n = steps if torchdiffeq_is_fixed_grid(name) else 1
        ts = torch.linspace(t0, t1, n + 1, dtype=torch.float64, device=y0.device)
        return odeint(f, y0, ts, method=name, rtol=rtol, atol=atol)[-1]
    if backend == "scipy":
        from scipy.integrate import solve_ivp

        def fun(t, y):
            out = f(t, torch.from_numpy(y).to(y0).reshape(y0.shape))
            return out.double().cpu().numpy().reshape(-1)

        sol = solve_ivp(fun, (t0, t1), y0.double().cpu().numpy().reshape(-1), method=name, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"scipy:{name} failed: {sol.message}")
        return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).to(y0).reshape(y0.shape)
    raise ValueError(f"unknown likelihood method {method!r}; use 'torchdiffeq:<method>' or 'scipy:<method>'")


def log_likelihood(denoiser: Callable[[Tensor, Tensor], Tensor], sde: SDE, x0: Tensor, t_end: float | None = None,
                   method: str = "torchdiffeq:dopri5", divergence: str = "hutchinson", probe: str = "rademacher",
                   rtol: float = 1e-5, atol: float = 1e-5, generator: torch.Generator | None = None,
                   prior_log_prob: Callable[[Tensor], Tensor] | None = None, steps: int = 100) -> Tensor:
    """log p(x0) in nats per sample, [B] (summed over non-batch dims), in x0's dtype.

    x0 is treated as the state at t_end (default sde.t_min_default). prior_log_prob overrides
    sde.prior_log_prob at t = 1 (e.g. with the exact marginal). `steps` is used by fixed-grid
    torchdiffeq methods only. Use float64 for accurate results.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; available: {', '.join(DIVERGENCES)}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; available: {', '.join(PROBES)}")
    t_end = sde.t_min_default if t_end is None else float(t_end)
    if not 0.0 <= t_end < 1.0:
        raise ValueError(f"need 0 <= t_end < 1, got t_end={t_end}")
    if not math.isfinite(sde.d_log_sigma(t_end).item()):
        raise ValueError(f"the probability-flow ODE is singular at t_end={t_end} for {sde!r}; use t_end > 0")
    shape, n = x0.shape, x0[0].numel()

    z = None
    if divergence == "hutchinson":  # one probe for the whole solve keeps the ODE deterministic
        dev = generator.device if generator is not None else x0.device
        if probe == "rademacher":
            z = torch.randint(0, 2, shape, generator=generator, device=dev).to(x0.dtype) * 2 - 1
        else:
            z = torch.randn(shape, generator=generator, dtype=x0.dtype, device=dev)
        z = z.to(x0.device)

    def f(t, y):
        t = min(max(float(t), t_end), 1.0)  # adaptive solvers may step a little outside
        with torch.enable_grad():
            x = y[:, :n].reshape(shape).detach().requires_grad_(True)
            v = sde.ode_velocity(x, denoiser(x, time_vector(x, t)), t)
            div = _divergence(v, x, z)
        return torch.cat([v.detach().flatten(1), div.detach()[:, None]], 1)

    y0 = torch.cat([x0.detach().flatten(1), x0.new_zeros(shape[0], 1)], 1)
    y1 = _integrate(f, y0, t_end, 1.0, method, rtol, atol, steps)
    x1, delta = y1[:, :n].reshape(shape), y1[:, n]
    prior = (prior_log_prob or sde.prior_log_prob)(x1)
    return (prior + delta).to(x0.dtype)
