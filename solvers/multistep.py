"""More multistep probability-flow ODE samplers: UniPC (bh1, bh2) and DEIS (tAB, eps form).

Same notation as `ode.py`: a step goes from s = grid[i] to t = grid[i+1], lam = log(alpha/sigma)
(half the log-SNR), h = lam_t - lam_s > 0, and x0 / eps are the denoiser's predictions.

UniPC (Zhao et al. 2023, "UniPC: a unified predictor-corrector framework"), data-prediction
form. The predictor UniP-p writes
    x_t = (sigma_t/sigma_s) x_s + alpha_t (1 - e^-h) x0_s + alpha_t B(h) sum_k rho_k D_k,
    D_k = (x0_k - x0_s) / r_k,  r_k = (lam_k - lam_s) / h  (< 0, past points),
with the rho solving  sum_k rho_k r_k^(n-1) = b_n = n! h phi_{n+1}(-h) / B(h), n < p: this
matches the Taylor terms of the exact exponential integral, so any B(h) = O(h) gives order p.
The paper's two choices, with the data-prediction form's sign absorbed: B1(h) = h ("bh1") and
B2(h) = 1 - e^-h ("bh2"). The corrector UniC evaluates the denoiser once at the predicted x_t
and re-solves with that point added (r = 1): the order rises by one. That evaluation is the
next step's x0_s (as in the paper), so the corrector costs no call: NFE = steps.
A system with one unknown (UniP-2, UniC on the first step) takes rho = 1/2, its limit as
h -> 0, as the paper's code does: that is where B(h) enters, since it cancels from an exact
solve. With B2, UniP-2 is exactly dpmpp_2m's update; with B1 its weight is the Taylor h^2/2.

DEIS (Zhang & Chen 2022, "Fast sampling of diffusion models with exponential integrator"),
eps form: x/alpha is integrated exactly against d(sigma/alpha),
    x_t / alpha_t = x_s / alpha_s + sum_j eps_j int_{rho_s}^{rho_t} l_j d rho,   rho = sigma/alpha,
with l_j the Lagrange basis through the last p grid points, as a polynomial in t (tAB-DEIS,
the paper's best) or in lam (then it is DPM-Solver's multistep in eps form). The integrals are
computed by Gauss-Legendre quadrature in lam, where rho = e^-lam and t(lam) are smooth.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .core import Stepper, register_stepper
from .ode import ddim_update

Tensor = torch.Tensor

__all__ = ["phi", "unipc_rhos", "lagrange_weights"]


def phi(k: int, z: float) -> float:
    """phi_k(z) = sum_j z^j / (j + k)!  (phi_0 = e^z, phi_1 = (e^z - 1)/z, ...); a series for
    small |z|, where the recursion phi_{k+1} = (phi_k - 1/k!)/z cancels."""
    if abs(z) < 1.0:
        term, total, j = 1.0 / math.factorial(k), 0.0, 0
        while abs(term) > 1e-18 * max(abs(total), 1e-300) or j < 2:
            total += term
            j += 1
            term *= z / (j + k)
        return total
    val = math.exp(z)
    for n in range(k):
        val = (val - 1.0 / math.factorial(n)) / z
    return val


def unipc_rhos(h: float, rks: list[float], variant: str) -> np.ndarray:
    """Solve sum_k rho_k r_k^(n-1) = b_n, n = 1..len(rks), for one UniP / UniC update."""
    m = len(rks)
    if m == 1:  # one unknown: its h -> 0 limit, so B(h) matters (it cancels from an exact solve)
        return np.array([0.5])
    B = h if variant == "bh1" else -math.expm1(-h)  # B(h) for the data-prediction form, up to sign
    R = np.array([[r ** (n - 1) for r in rks] for n in range(1, m + 1)], dtype=np.float64)
    b = np.array([math.factorial(n) * h * phi(n + 1, -h) / B for n in range(1, m + 1)])
    return np.linalg.solve(R, b)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


def lagrange_weights(lam_s: float, lam_t: float, nodes_u: list[float], u_of_lam) -> list[float]:
    """int_{rho_s}^{rho_t} l_j(u) d rho (rho = e^-lam) for the Lagrange basis l_j through nodes_u,
    u = u_of_lam(lam) the interpolation variable; Gauss-Legendre in lam on [lam_s, lam_t]."""
    half = 0.5 * (lam_t - lam_s)
    lam = lam_s + half * (_GL_NODES + 1.0)
    u = u_of_lam(lam)
    drho = -np.exp(-lam) * half * _GL_WEIGHTS  # d rho = -e^-lam d lam
    out = []
    for j, uj in enumerate(nodes_u):
        basis = np.ones_like(lam)
        for m, um in enumerate(nodes_u):
            if m != j:
                basis = basis * (u - um) / (uj - um)
        out.append(float((basis * drho).sum()))
    return out


class _History(Stepper):
    """Shared by both: the denoiser's outputs at past grid points, newest first, and the order
    used at step i (lower while history builds up, at a singular end, and with
    lower_order_final below 15 steps, as for dpmpp_*m)."""

    order = 2

    def __init__(self, ctx, order: int = 2, lower_order_final: bool = True, **opts):
        if order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
        super().__init__(ctx, order=order, lower_order_final=lower_order_final, **opts)
        self.order, self.lower_order_final = order, lower_order_final
        self.x0s: list[Tensor] = []
        self.idx: list[int] = []  # grid index of each x0s entry

    def push(self, x0: Tensor, i: int, keep: int) -> None:
        self.x0s.insert(0, x0)
        self.idx.insert(0, i)
        del self.x0s[keep:], self.idx[keep:]

    def this_order(self, i: int) -> int:
        k = min(self.order, len(self.x0s))
        if self.lower_order_final and self.ctx.steps < 15:
            k = min(k, self.ctx.steps - i)
        return k


class UniPC(_History):
    """UniPC multistep in data prediction: UniP-`order` predictor, then (corrector=True) UniC,
    which makes it order + 1. The corrector's evaluation at the predicted point is reused as the
    next step's x0 (as in the paper); state_hook sees the corrected state. NFE = steps."""

    variant = "bh1"

    def __init__(self, ctx, order: int = 3, corrector: bool = True, lower_order_final: bool = True):
        super().__init__(ctx, order, lower_order_final, corrector=corrector)
        self.corrector = corrector
        self.pending: Tensor | None = None  # the corrector's evaluation at grid[i], for step i

    def step(self, i, x):
        ctx = self.ctx
        x0 = self.pending if self.pending is not None else self.denoise(x, i)
        self.pending = None
        self.push(x0, i, self.order)
        if math.isinf(ctx.lam[i + 1]):  # sigma_t = 0: only the DDIM step is defined
            return ddim_update(ctx, i, x, x0)
        k = self.this_order(i)
        lam_s, h = ctx.lam[i], ctx.lam[i + 1] - ctx.lam[i]
        rks = [(ctx.lam[j] - lam_s) / h for j in self.idx[1:k]]
        ds = [(xk - x0) / r for xk, r in zip(self.x0s[1:k], rks)]
        B = h if self.variant == "bh1" else -math.expm1(-h)
        a_t = ctx.alpha[i + 1]
        base = ddim_update(ctx, i, x, x0)
        x_t = base
        if ds:
            rho = unipc_rhos(h, rks, self.variant)
            for r, d in zip(rho, ds):
                x_t = x_t + (a_t * B * float(r)) * d
        if not self.corrector or self.is_last(i):
            return x_t
        x0_t = ctx.model(x_t, ctx.t[i + 1])
        self.pending = x0_t
        rho = unipc_rhos(h, rks + [1.0], self.variant)
        out = base + (a_t * B * float(rho[-1])) * (x0_t - x0)
        for r, d in zip(rho[:-1], ds):
            out = out + (a_t * B * float(r)) * d
        return out


class DEIS(_History):
    """tAB-DEIS: eps extrapolated by a Lagrange polynomial in t (poly='t') or in lam
    (poly='log_snr') through the last `order` grid points, integrated exactly in rho."""

    def __init__(self, ctx, order: int = 2, poly: str = "t", lower_order_final: bool = True):
        if poly not in ("t", "log_snr"):
            raise ValueError(f"DEIS poly must be 't' or 'log_snr', got {poly!r}")
        super().__init__(ctx, order, lower_order_final, poly=poly)
        self.poly = poly
        self.eps: list[Tensor] = []

    def step(self, i, x):
        ctx = self.ctx
        x0 = self.denoise(x, i)
        self.push(x0, i, self.order)
        self.eps.insert(0, (x - ctx.alpha[i] * x0) / ctx.sigma[i])
        del self.eps[self.order:]
        if math.isinf(ctx.lam[i + 1]):
            return ddim_update(ctx, i, x, x0)
        k = self.this_order(i)
        if k == 1:
            return ddim_update(ctx, i, x, x0)
        if self.poly == "t":
            nodes = [ctx.t[j] for j in self.idx[:k]]
            sde = ctx.sde

            def u_of_lam(lam):
                return sde.t_from_log_snr(torch.from_numpy(2.0 * lam)).numpy()
        else:
            nodes = [ctx.lam[j] for j in self.idx[:k]]

            def u_of_lam(lam):
                return lam
        w = lagrange_weights(ctx.lam[i], ctx.lam[i + 1], nodes, u_of_lam)
        a_s, a_t = ctx.alpha[i], ctx.alpha[i + 1]
        out = (a_t / a_s) * x
        for wj, e in zip(w, self.eps[:k]):
            out = out + (a_t * wj) * e
        return out


# Two UniPC orders, each with its own default grid. UniPC-2 (UniP-2 + UniC, third order) on
# karras_snr: an x0-form method of low order, for the reason given in grids.karras_snr; with
# bh2 it is the few-step choice (at 10 steps on linear VP 4x below dpmpp_2m, as the paper
# reports UniPC leading DPM-Solver++ at <= 10 steps). UniPC-3 (UniP-3 + UniC, fourth order, the
# paper's setting for unconditional sampling) on the log-SNR grid, the natural grid of
# exponential integrators (DPM-Solver, UniPC): a higher order spreads its error more evenly in
# lam (the optimal step density goes like the local error to the power 1/(order + 1)), so the
# tilt does not pay (measured 10x worse at 20 steps on linear VP). Where a grid's error does
# not fall with steps on the Gaussian target (a change of sign between 10 and 40 steps: a
# cancellation, not an order), another takes its place: log_snr for UniPC-2 with bh2 on cosine
# and subvp, EDM's grid for UniPC-3 on ve.
_UNIPC2 = {"order": 2, "corrector": True, "lower_order_final": True}
_UNIPC3 = {"order": 3, "corrector": True, "lower_order_final": True}
_UNIPC_GRIDS = {"unipc_bh1": "karras_snr", "unipc_bh2": {"cosine": "log_snr", "subvp": "log_snr", "*": "karras_snr"},
                "unipc3_bh1": {"ve": "karras", "*": "log_snr"}, "unipc3_bh2": {"ve": "karras", "*": "log_snr"}}


def _unipc(name: str, variant: str, options: dict, grid: str | dict):
    cls = type(f"UniPC_{name}", (UniPC,), {"variant": variant, "__doc__": UniPC.__doc__})
    return register_stepper(name, "ode", options, default_grid=grid)(cls)


for _v in ("bh1", "bh2"):
    _unipc(f"unipc_{_v}", _v, _UNIPC2, _UNIPC_GRIDS[f"unipc_{_v}"])
    _unipc(f"unipc3_{_v}", _v, _UNIPC3, _UNIPC_GRIDS[f"unipc3_{_v}"])


# DEIS works in eps form: an error in eps enters x multiplied by alpha_t d(sigma/alpha), which
# vanishes toward the data end, so its steps belong nearer the noise end than log-SNR-uniform
# puts them. On the linear-beta schedules (vp, subvp) DDIM's time-quadratic grid does that (its
# density in lam falls off like e^-lam at the data end) and is the grid DEIS was run on there;
# on the others (where quadratic in t means something else, e.g. dense at the data end on VE)
# the log-SNR grid.
DEIS_GRID = {"vp": "quadratic", "subvp": "quadratic", "*": "log_snr"}
_DEIS_OPTS = {"poly": "t", "lower_order_final": True}


@register_stepper("deis_2", "ode", _DEIS_OPTS, default_grid=DEIS_GRID)
class DEIS2(DEIS):
    def __init__(self, ctx, **opts):
        super().__init__(ctx, order=2, **opts)


@register_stepper("deis_3", "ode", _DEIS_OPTS, default_grid=DEIS_GRID)
class DEIS3(DEIS):
    def __init__(self, ctx, **opts):
        super().__init__(ctx, order=3, **opts)
