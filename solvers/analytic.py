"""An analytic target for testing and benchmarking samplers: data x0 ~ N(mu, diag s^2).

Everything is closed form: the exact denoiser E[x0 | x_t], the marginals N(alpha mu,
alpha^2 s^2 + sigma^2), their log-densities, and the probability-flow ODE map, which is
affine per dimension:
    x_t = alpha_t mu + sd_t / sd_T (x_T - alpha_T mu),   sd = sqrt(alpha^2 s^2 + sigma^2).
"""
from __future__ import annotations

import math

import torch

from .sde import SDE, append_dims

Tensor = torch.Tensor

__all__ = ["GaussianTarget", "relative_error"]


class GaussianTarget:
    """mu, s: tensors of the per-sample shape (they broadcast against [B, ...])."""

    def __init__(self, mu: Tensor, s: Tensor):
        self.mu, self.s = mu, s

    @classmethod
    def random(cls, shape, seed: int = 0, dtype: torch.dtype = torch.float64) -> "GaussianTarget":
        """A non-trivial target: mu ~ N(0, 1), s uniform in [0.3, 1] (s != 1 on purpose)."""
        g = torch.Generator().manual_seed(seed)
        mu = torch.randn(tuple(shape), generator=g, dtype=torch.float64)
        s = 0.3 + 0.7 * torch.rand(tuple(shape), generator=g, dtype=torch.float64)
        return cls(mu.to(dtype), s.to(dtype))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn((n, *self.mu.shape), generator=generator, dtype=self.mu.dtype)
        return self.mu + self.s * z

    def denoiser(self, sde: SDE):
        """The exact denoiser E[x0 | x_t] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu)."""

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            mu, s = self.mu.to(x), self.s.to(x)
            if bool((t == t[0]).all()):  # shared time: compute the coefficients once
                t = t[:1]
            a = append_dims(sde.alpha(t).to(x), x.ndim)
            sg = append_dims(sde.sigma(t).to(x), x.ndim)
            return mu + a * s**2 / (a**2 * s**2 + sg**2) * (x - a * mu)

        return denoise

    def marginal(self, sde: SDE, t: float, like: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of x_t (float64, of like's per-sample shape)."""
        mu, s = self.mu.double(), self.s.double()
        a, sg = sde.alpha(float(t)).item(), sde.sigma(float(t)).item()
        shape = like.shape[1:]
        return (a * mu).expand(shape), (a**2 * s**2 + sg**2).sqrt().expand(shape)

    def exact_map(self, sde: SDE, x_T: Tensor, t_start: float, t_end: float) -> Tensor:
        """The probability-flow ODE solution at t_end from x_T at t_start (float64)."""
        m0, sd0 = self.marginal(sde, t_start, x_T)
        m1, sd1 = self.marginal(sde, t_end, x_T)
        return m1 + sd1 / sd0 * (x_T.double() - m0)

    def log_prob(self, sde: SDE, t: float, x: Tensor) -> Tensor:
        """log p_t(x) summed over non-batch dims, [B] (float64)."""
        m, sd = self.marginal(sde, t, x)
        z = (x.double() - m) / sd
        return (-0.5 * z**2 - sd.log() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def relative_error(x: Tensor, ref: Tensor) -> float:
    """||x - ref|| / ||ref|| over the whole batch, in float64."""
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()
