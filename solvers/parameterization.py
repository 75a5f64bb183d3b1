"""Conversions between x0, eps, v and score predictions at x_t = alpha x0 + sigma eps.

    eps   = (x_t - alpha x0) / sigma          x0 = (x_t - sigma eps) / alpha
    score = -eps / sigma                       (the score of the Gaussian marginal)
    v     = alpha eps - sigma x0               x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)

Only x0 -> eps and x0 -> score divide by sigma; where sigma = 0 they return 0 instead of
dividing (eps is undefined there). alpha > 0 for every SDE in this package.
"""
from __future__ import annotations

from typing import Callable

import torch

from .sde import SDE, append_dims

Tensor = torch.Tensor

__all__ = ["PREDICTIONS", "x0_to_eps", "eps_to_x0", "x0_to_score", "score_to_x0", "x0_to_v", "v_to_x0",
           "convert", "as_x0_denoiser"]

PREDICTIONS = ("x0", "eps", "v", "score")


def _coefs(x: Tensor, t, sde: SDE) -> tuple[Tensor, Tensor]:
    a, s = sde.alpha(t), sde.sigma(t)
    return (append_dims(c.to(dtype=x.dtype, device=x.device), x.ndim) for c in (a, s))


def _div_or_zero(num: Tensor, den: Tensor) -> Tensor:
    safe = torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.zeros_like(num), num / safe)


def x0_to_eps(x0: Tensor, x_t: Tensor, t, sde: SDE) -> Tensor:
    a, s = _coefs(x_t, t, sde)
    return _div_or_zero(x_t - a * x0, s)


def eps_to_x0(eps: Tensor, x_t: Tensor, t, sde: SDE) -> Tensor:
    a, s = _coefs(x_t, t, sde)
    return (x_t - s * eps) / a


def x0_to_score(x0: Tensor, x_t: Tensor, t, sde: SDE) -> Tensor:
    a, s = _coefs(x_t, t, sde)
    return _div_or_zero(a * x0 - x_t, s * s)


def score_to_x0(score: Tensor, x_t: Tensor, t, sde: SDE) -> Tensor:
    a, s = _coefs(x_t, t, sde)
    return (x_t + s * s * score) / a


def x0_to_v(x0: Tensor, x_t: Tensor, t, sde: SDE) -> Tensor:
    # v = alpha eps - sigma x0 with sigma eps = x_t - alpha x0, written without dividing by sigma
    a, s = _coefs(x_t, t, sde)
    return a * _div_or_zero(x_t - a * x0, s) - s * x0


def v_to_x0(v: Tensor, x_t: Tensor, t, sde: SDE) -> Tensor:
    a, s = _coefs(x_t, t, sde)
    return (a * x_t - s * v) / (a * a + s * s)


_TO_X0 = {"x0": lambda p, x, t, sde: p, "eps": eps_to_x0, "v": v_to_x0, "score": score_to_x0}
_FROM_X0 = {"x0": lambda p, x, t, sde: p, "eps": x0_to_eps, "v": x0_to_v, "score": x0_to_score}


def _check(name: str) -> None:
    if name not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {name!r}; available: {', '.join(PREDICTIONS)}")


def convert(pred: Tensor, x_t: Tensor, t, sde: SDE, source: str, target: str) -> Tensor:
    """Convert a `source` prediction (x0/eps/v/score) at (x_t, t) to a `target` one."""
    _check(source), _check(target)
    if source == target:
        return pred
    return _FROM_X0[target](_TO_X0[source](pred, x_t, t, sde), x_t, t, sde)


def as_x0_denoiser(model: Callable[[Tensor, Tensor], Tensor], sde: SDE, prediction: str = "eps"):
    """Wrap a model predicting eps / v / score / x0 into a denoiser(x_t, t) -> x0_hat."""
    _check(prediction)
    if prediction == "x0":
        return model

    def denoiser(x_t: Tensor, t: Tensor) -> Tensor:
        return _TO_X0[prediction](model(x_t, t), x_t, t, sde)

    return denoiser
