"""Probability-flow ODE samplers: euler, heun, ddim, dpmpp_2m, dpmpp_3m, dpm_adaptive.

Notation for a step from s = grid[i] to t = grid[i+1] (t < s): alpha, sigma as usual,
lam = log(alpha / sigma) (half the log-SNR), h = lam_t - lam_s > 0. With x0 held fixed the
ODE is solved exactly by  x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) x0  (DDIM);
higher orders add log-SNR derivatives of x0 weighted by phi-functions (DPM-Solver++).
"""
from __future__ import annotations

import math

import torch

from .core import Context, Method, StepInfo, Stepper, phi_coefs, register, register_stepper, time_vector

Tensor = torch.Tensor

__all__ = ["ddim_update", "multistep_update"]


def ddim_update(ctx: Context, i: int, x: Tensor, x0: Tensor) -> Tensor:
    """Exact PF-ODE step from grid[i] to grid[i+1] for a constant x0."""
    h = ctx.lam[i + 1] - ctx.lam[i]
    return (ctx.sigma[i + 1] / ctx.sigma[i]) * x + (ctx.alpha[i + 1] * -math.expm1(-h)) * x0


def multistep_update(x: Tensor, x0s: list[Tensor], lams: list[float], lam_t: float, alpha_t: float,
                     sigma_t: float, sigma_s: float, noise: Tensor | None = None) -> Tensor:
    """Exponential-integrator step with x0 extrapolated by a polynomial in lam.

    x0s / lams hold the newest prediction first (lams[0] = lam_s); their count is the order.
    ODE:  x_t = (sigma_t/sigma_s) x + alpha_t sum_k h^(k+1) phi_{k+1}(-h) D_k
    SDE (noise given, the DPM-Solver++ SDE with eta = 1): the same with H = 2h and D_k / 2^k,
          x scaled by e^-h, plus sigma_t sqrt(1 - e^-2h) noise.
    D_k are log-SNR derivatives of x0 at lam_s from divided differences (exact for polynomials).
    Order 2 instead uses the weight of D_0 times x0 extrapolated to the step's lam-midpoint
    (DPM-Solver++(2M)); also second order, and half the error of the Taylor weight on our
    Gaussian tests.
    """
    order = len(x0s)
    h = lam_t - lams[0]
    stochastic = noise is not None
    H = 2 * h if stochastic else h
    c = phi_coefs(H, order)
    if stochastic:
        c = [ck / 2 ** k for k, ck in enumerate(c)]
    # weights of x0s[j] in D_1 and D_2
    w = [c[0], 0.0, 0.0]
    if order >= 2:
        a = 1.0 / (lams[0] - lams[1])
        if order == 2:
            c[1] = c[0] * h / 2  # midpoint rule (see docstring)
            d1 = [a, -a, 0.0]
            d2 = [0.0, 0.0, 0.0]
        else:
            b, cc = 1.0 / (lams[1] - lams[2]), 1.0 / (lams[0] - lams[2])
            dd = [cc * a, -cc * (a + b), cc * b]  # second divided difference
            gap = lams[0] - lams[1]
            d1 = [a + gap * dd[0], -a + gap * dd[1], gap * dd[2]]
            d2 = [2 * v for v in dd]
        w = [w[j] + c[1] * d1[j] + (c[2] * d2[j] if order >= 3 else 0.0) for j in range(3)]
    ratio = sigma_t / sigma_s
    out = (ratio * math.exp(-h) if stochastic else ratio) * x
    for j in range(order):
        out = out + (alpha_t * w[j]) * x0s[j]
    if stochastic and sigma_t > 0:
        out = out + sigma_t * math.sqrt(-math.expm1(-2 * h)) * noise
    return out


# cosine stands still beyond t_max (about 0.9946), where a grid uniform in t spends its first
# step: Euler's error there rises from 80 to 160 steps (1.4e-3 to 2.8e-3 on the Gaussian
# target). Uniform in log-SNR it falls at order 1.
EULER_GRID = {"cosine": "log_snr", "*": "uniform"}


@register_stepper("euler", "ode", default_grid=EULER_GRID)
class Euler(Stepper):
    """Explicit Euler in t on the PF ODE: the textbook first-order baseline."""

    def step(self, i, x):
        ctx = self.ctx
        x0 = self.denoise(x, i)
        return x + (ctx.t[i + 1] - ctx.t[i]) * ctx.sde.ode_velocity(x, x0, ctx.t[i])


@register_stepper("ddim", "ode", default_grid="uniform")
class DDIM(Stepper):
    """DDIM (eta = 0): exact in x0, i.e. Euler in (sigma/alpha, x/alpha) coordinates."""

    def step(self, i, x):
        return ddim_update(self.ctx, i, x, self.denoise(x, i))


@register_stepper("heun", "ode", default_grid="karras")
class Heun(Stepper):
    """EDM's second-order Heun in (sigma/alpha, x/alpha) coordinates; the last step is Euler."""

    def step(self, i, x):
        ctx = self.ctx
        x0 = self.denoise(x, i)
        x_pred = ddim_update(ctx, i, x, x0)  # the Euler predictor in EDM coordinates
        if self.is_last(i) or ctx.sigma[i + 1] == 0:
            return x_pred
        x0_next = ctx.model(x_pred, ctx.t[i + 1])
        # trapezoid on d = (x/alpha - x0) / (sigma/alpha): average of the two slopes
        a_s, a_t = ctx.alpha[i], ctx.alpha[i + 1]
        ss, st = ctx.sigma[i] / a_s, ctx.sigma[i + 1] / a_t
        d_s = (x / a_s - x0) / ss
        d_t = (x_pred / a_t - x0_next) / st
        return a_t * (x / a_s + (st - ss) * 0.5 * (d_s + d_t))


class Multistep(Stepper):
    """DPM-Solver++ multistep of `order`, in log-SNR. Lower orders while history builds up,
    at a singular end (sigma = 0), and (lower_order_final, below 15 steps) for the final
    steps, which stabilises few-step sampling."""

    order = 2
    stochastic = False

    def __init__(self, ctx, lower_order_final: bool = True):
        super().__init__(ctx)
        self.lower_order_final = lower_order_final
        self.x0s: list[Tensor] = []
        self.lams: list[float] = []

    def step(self, i, x):
        ctx = self.ctx
        x0 = self.denoise(x, i)
        self.x0s.insert(0, x0)
        self.lams.insert(0, ctx.lam[i])
        del self.x0s[self.order:], self.lams[self.order:]
        k = len(self.x0s)
        if self.lower_order_final and ctx.steps < 15:
            k = min(k, ctx.steps - i)
        if math.isinf(ctx.lam[i + 1]):
            k = 1
        noise = ctx.randn_like(x) if self.stochastic else None
        return multistep_update(x, self.x0s[:k], self.lams[:k], ctx.lam[i + 1], ctx.alpha[i + 1],
                                ctx.sigma[i + 1], ctx.sigma[i], noise)


_MS_OPTIONS = {"lower_order_final": True}


# dpmpp_2m's default grid: one on which its error falls with steps at order 2 (10 to 160 steps
# on the exact Gaussian target, tests/solvers/test_solvers_ode.py). Uniform in log-SNR, its
# natural variable, for every schedule but sqrt. karras_snr (rho = 7) is not: on vp, cosine and
# ve its second-order error term nearly vanishes (it changes sign near rho = 5.5), so the error
# changes sign between 18 and 20 steps and rises again from 20 to 40 (on linear VP 1.4e-4,
# 2.0e-4, 6.7e-5 at 20, 40, 80 steps): a cancellation, not an order; its 20-step lead is luck.
# On sqrt, whose log-SNR is singular at t = 0, karras_snr has no such cancellation (falls at
# order 1.8-2.1 on both test targets) and is 3-5x more accurate than log_snr at 20-160 steps.
DPMPP_2M_GRID = {"sqrt": "karras_snr", "*": "log_snr"}


@register_stepper("dpmpp_2m", "ode", _MS_OPTIONS, default_grid=DPMPP_2M_GRID)
class DPMpp2M(Multistep):
    order = 2


@register_stepper("dpmpp_3m", "ode", _MS_OPTIONS, default_grid="log_snr")
class DPMpp3M(Multistep):
    order = 3


def _dpm_adaptive(ctx: Context, x: Tensor, rtol: float = 1e-3, atol: float = 1e-4,
                  max_steps: int = 10_000, safety: float = 0.9) -> tuple[Tensor, dict]:
    """Adaptive embedded pair in log-SNR: DDIM (order 1) inside DPM-Solver++(2S) (order 2,
    midpoint in lam). The difference estimates the local error; the order-2 result is kept.
    One step size for the whole batch (time is shared); `steps` sets the first step size."""
    sde, model = ctx.sde, ctx.model
    lam_s, lam_end = 0.5 * sde.log_snr(ctx.t_start).item(), 0.5 * sde.log_snr(ctx.t_end).item()
    if not math.isfinite(lam_end):
        raise ValueError(f"dpm_adaptive needs sigma(t_end) > 0; got t_end={ctx.t_end} (use t_end > 0)")
    if not (rtol > 0 and atol >= 0):
        raise ValueError(f"dpm_adaptive needs rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}")

    def coefs(lam: float, last: bool):
        t = ctx.t_end if last else sde.t_from_log_snr(2 * lam).item()
        return t, sde.alpha(t).item(), sde.sigma(t).item()

    t_s, s_s = ctx.t_start, sde.sigma(ctx.t_start).item()
    h = (lam_end - lam_s) / ctx.steps
    accepted = rejected = 0
    bar = ctx.progress_bar(None)
    model.where = "step 0"
    x0_s = model(x, t_s)
    while lam_s < lam_end:
        if accepted + rejected >= max_steps:
            raise RuntimeError(f"dpm_adaptive exceeded max_steps={max_steps} at t={t_s:.6g}")
        last = h >= lam_end - lam_s
        h = min(h, lam_end - lam_s)
        t_t, a_t, s_t = coefs(lam_s + h, last)
        t_m, a_m, s_m = coefs(lam_s + h / 2, False)
        x_mid = (s_m / s_s) * x + a_m * -math.expm1(-h / 2) * x0_s
        x0_m = model(x_mid, t_m)
        x_low = (s_t / s_s) * x + a_t * -math.expm1(-h) * x0_s
        x_high = multistep_update(x, [x0_s, x0_m], [lam_s, lam_s + h / 2], lam_s + h, a_t, s_t, s_s)
        scale = atol + rtol * torch.maximum(x_low.abs(), x.abs())
        err = ((x_high - x_low) / scale).flatten(1).pow(2).mean(1).sqrt().max().item()
        if err <= 1.0:
            accepted += 1
            x, t_s, s_s = x_high, t_t, s_t
            lam_s = lam_end if last else lam_s + h
            if ctx.state_hook is not None:
                x = ctx.state_hook(x, time_vector(x, t_s))
            ctx.check(x, accepted - 1, t_s)
            model.where = f"step {accepted}"
            if lam_s < lam_end:
                x0_s = model(x, t_s)
            if ctx.callback is not None:
                ctx.callback(StepInfo(accepted - 1, t_s, x, model.last_x0))
            if bar is not None:
                bar.update(1)
        else:
            rejected += 1
        h *= min(5.0, max(0.2, safety * (err + 1e-10) ** -0.5))
    if bar is not None:
        bar.close()
    return x, {"steps": accepted, "accepted": accepted, "rejected": rejected}


register(Method("dpm_adaptive", "ode", _dpm_adaptive,
                {"rtol": 1e-3, "atol": 1e-4, "max_steps": 10_000, "safety": 0.9}, adaptive=True))
