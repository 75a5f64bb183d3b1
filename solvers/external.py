"""Adapters to external integrators: `torchdiffeq:<m>`, `torchsde:<m>`, `scipy:<m>`.

They integrate the probability-flow ODE (or the reverse SDE) with the counted denoiser, so
NFE is exact. Adaptive integrators may evaluate a little outside [t_end, t_start] (and
linear VP is singular at t = 0), so the vector field clamps t into that interval: finite
everywhere, unchanged inside. They step on their own, so state_hook and callback are not
supported (ValueError).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .core import Context, Method, register
from .private_api import torchdiffeq_is_fixed_grid, torchdiffeq_is_runge_kutta, torchdiffeq_methods

Tensor = torch.Tensor

# scipy.integrate.solve_ivp methods; Radau/BDF/LSODA build finite-difference Jacobians
# (one denoiser call per state dimension), so they only suit small states.
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
# torchsde methods valid for our additive (hence diagonal, Ito = Stratonovich) noise,
# with the calculus each is implemented for.
TORCHSDE_METHODS = {"euler": "ito", "milstein": "ito", "srk": "ito", "midpoint": "stratonovich",
                    "heun": "stratonovich", "euler_heun": "stratonovich", "reversible_heun": "stratonovich"}


def _clamped_time(ctx: Context):
    lo, hi = ctx.t_end, ctx.t_start
    return lambda t: min(max(float(t), lo), hi)


class PFODEField:
    """f(t, x) of the probability-flow ODE; counts evaluations for error messages."""

    def __init__(self, ctx: Context):
        self.ctx, self.clamp = ctx, _clamped_time(ctx)
        self.calls = 0

    def __call__(self, t, x):
        t = self.clamp(t)
        self.ctx.model.where = f"evaluation {self.calls}"
        self.calls += 1
        return self.ctx.sde.ode_velocity(x, self.ctx.model(x, t), t)


class StepCountingField(PFODEField):
    """The same field, counting accepted / rejected steps through torchdiffeq's callbacks
    (which only its adaptive Runge-Kutta solvers call)."""

    accepted = rejected = 0

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


def _check_end(ctx: Context):
    if not math.isfinite(ctx.sde.d_log_sigma(ctx.t_end).item()):
        raise ValueError(f"the probability-flow ODE is singular at t_end={ctx.t_end} for {ctx.sde!r}; "
                         f"use t_end > 0 (e.g. sde.t_min_default={ctx.sde.t_min_default})")


def _finish(ctx: Context, x: Tensor, stats: dict) -> tuple[Tensor, dict]:
    ctx.check(x, stats.get("steps") or 0, ctx.t_end)
    return x, stats


# ---------------------------------------------------------------- torchdiffeq
def _run_torchdiffeq(name: str):
    def run(ctx: Context, x: Tensor, **opts):
        from torchdiffeq import odeint

        _check_end(ctx)
        rk = torchdiffeq_is_runge_kutta(name)
        f = StepCountingField(ctx) if rk else PFODEField(ctx)
        stats = {"steps": None}
        if torchdiffeq_is_fixed_grid(name):
            step_size = opts.get("step_size")
            if step_size is None:  # step on the sampling grid
                ts, options = ctx.grid.to(x.device), {}
            else:
                ts, options = torch.tensor([ctx.t_start, ctx.t_end], dtype=torch.float64, device=x.device), \
                    {"step_size": float(step_size)}
            xs = odeint(f, x, ts, method=name, options=options)
            stats["steps"] = ctx.steps if step_size is None else None
        else:
            ts = torch.tensor([ctx.t_start, ctx.t_end], dtype=torch.float64, device=x.device)
            # Runge-Kutta solvers would step past t_end and interpolate back; step_t makes the
            # last step land on t_end, so no stage sees the (clamped) field beyond it
            options = {"step_t": ts[1:]} if rk else {}
            xs = odeint(f, x, ts, method=name, rtol=opts["rtol"], atol=opts["atol"], options=options)
            if rk:
                stats = {"steps": f.accepted, "accepted": f.accepted, "rejected": f.rejected}
        return _finish(ctx, xs[-1].to(x.dtype), stats)

    return run


for _name in torchdiffeq_methods():
    _fixed = torchdiffeq_is_fixed_grid(_name)
    register(Method(f"torchdiffeq:{_name}", "ode", _run_torchdiffeq(_name),
                    {"step_size": None} if _fixed else {"rtol": 1e-5, "atol": 1e-5},
                    default_grid="uniform" if _fixed else None, hooks=False, adaptive=not _fixed))


# ---------------------------------------------------------------- torchsde
class _ReverseSDE(torch.nn.Module):
    """The reverse SDE in forward time tau = t_start - t on a flat [B, D] state."""

    noise_type = "diagonal"

    def __init__(self, ctx: Context, shape, sde_type: str):
        super().__init__()
        self.ctx, self.shape, self.sde_type = ctx, shape, sde_type
        self.clamp = _clamped_time(ctx)
        self.calls = 0

    def f(self, tau, y):
        t = self.clamp(self.ctx.t_start - float(tau))
        x = y.reshape(self.shape)
        self.ctx.model.where = f"evaluation {self.calls}"
        self.calls += 1
        return -self.ctx.sde.reverse_drift(x, self.ctx.model(x, t), t).reshape(y.shape)

    def g(self, tau, y):
        t = self.clamp(self.ctx.t_start - float(tau))
        return torch.full_like(y, self.ctx.sde.diffusion(t).item())


def _run_torchsde(name: str):
    def run(ctx: Context, x: Tensor, **opts):
        import torchsde

        _check_end(ctx)
        flat = x.reshape(x.shape[0], -1)
        T = float(torch.tensor(ctx.t_start - ctx.t_end, dtype=flat.dtype))  # representable: no overshoot
        # the Brownian motion's seed comes from the explicit generator: same seed, same path
        entropy = int(torch.randint(0, 2 ** 62, (1,), generator=ctx.generator).item())
        levy = "space-time" if name == "srk" else "none"
        bm = torchsde.BrownianInterval(t0=0.0, t1=T, size=flat.shape, dtype=flat.dtype, device=flat.device,
                                       entropy=entropy, levy_area_approximation=levy)
        sde = _ReverseSDE(ctx, x.shape, TORCHSDE_METHODS[name])
        ts = torch.tensor([0.0, T], dtype=flat.dtype, device=flat.device)
        ys = torchsde.sdeint(sde, flat, ts, bm=bm, method=name, dt=T / ctx.steps * (1 + 1e-4),  # no rounding sliver step
                             options={"grad_free": True} if name == "milstein" else None)
        return _finish(ctx, ys[-1].reshape(x.shape).to(x.dtype), {"steps": ctx.steps})

    return run


for _name in TORCHSDE_METHODS:
    register(Method(f"torchsde:{_name}", "sde", _run_torchsde(_name), {}, hooks=False))


# ---------------------------------------------------------------- scipy
def _run_scipy(name: str):
    def run(ctx: Context, x: Tensor, **opts):
        from scipy.integrate import solve_ivp

        _check_end(ctx)
        f = PFODEField(ctx)

        def fun(t, y):  # float64 state; the denoiser still sees x's dtype
            xt = torch.from_numpy(y).to(device=x.device, dtype=x.dtype).reshape(x.shape)
            v = f(t, xt)
            return v.detach().to(torch.float64).cpu().numpy().reshape(-1)

        y0 = x.detach().to(torch.float64).cpu().numpy().reshape(-1)
        sol = solve_ivp(fun, (ctx.t_start, ctx.t_end), y0, method=name, rtol=opts["rtol"], atol=opts["atol"])
        if not sol.success:
            raise RuntimeError(f"scipy:{name} failed: {sol.message}")
        out = torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).to(device=x.device, dtype=x.dtype)
        steps = len(sol.t) - 1  # without t_eval, sol.t lists every accepted step
        return _finish(ctx, out.reshape(x.shape), {"steps": steps, "accepted": steps})

    return run


for _name in SCIPY_METHODS:
    register(Method(f"scipy:{_name}", "ode", _run_scipy(_name), {"rtol": 1e-5, "atol": 1e-5},
                    hooks=False, adaptive=True))
