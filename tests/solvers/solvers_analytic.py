"""Analytic target: data x0 ~ N(mu, diag s^2). Exact denoiser, exact PF-ODE map, marginals."""
from __future__ import annotations

import math

import torch

from solvers.sde import append_dims


class Gaussian:
    """mu, s: tensors of the per-sample shape (broadcast against [B, ...])."""

    def __init__(self, mu: torch.Tensor, s: torch.Tensor):
        self.mu, self.s = mu, s

    def _ms(self, x):
        return self.mu.to(x), self.s.to(x)

    def denoiser(self, sde):
        """E[x0 | x_t] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu)."""
        def d(x, t):
            mu, s = self._ms(x)
            a = append_dims(sde.alpha(t).to(x), x.ndim)
            sg = append_dims(sde.sigma(t).to(x), x.ndim)
            return mu + a * s**2 / (a**2 * s**2 + sg**2) * (x - a * mu)
        return d

    def marginal(self, sde, t, like):
        """Mean and std of x_t (float64, broadcast to `like`'s per-sample shape)."""
        mu, s = self.mu.double(), self.s.double()
        a, sg = sde.alpha(float(t)).item(), sde.sigma(float(t)).item()
        return (a * mu).expand(like.shape[1:]), (a**2 * s**2 + sg**2).sqrt().expand(like.shape[1:])

    def exact_map(self, sde, x_T, t_start, t_end):
        """PF-ODE flow from t_start to t_end: each dim is an affine map (float64)."""
        m0, sd0 = self.marginal(sde, t_start, x_T)
        m1, sd1 = self.marginal(sde, t_end, x_T)
        return m1 + sd1 / sd0 * (x_T.double() - m0)

    def log_prob(self, sde, t, x):
        m, sd = self.marginal(sde, t, x)
        z = (x.double() - m) / sd
        return (-0.5 * z**2 - sd.log() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def make_gaussian(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g, dtype=torch.float64)
    s = 0.3 + 0.7 * torch.rand(shape, generator=g, dtype=torch.float64)  # s in [0.3, 1.0], not 1
    return Gaussian(mu.to(dtype), s.to(dtype))


def rel_err(x, ref):
    return ((x.double() - ref).norm() / ref.norm()).item()
