"""Reverse-SDE samplers: euler_maruyama, ancestral, pc, dpmpp_2m_sde.

All randomness comes from ctx.randn_like (the explicit generator): same seed, same samples.
Every step adds noise, including the last one, so samples follow the marginal at t_end
(where sigma(t_end) = 0 the noise term vanishes by itself).
"""
from __future__ import annotations

import math

import torch

from .core import Stepper, register_stepper
from .ode import Multistep

Tensor = torch.Tensor


@register_stepper("euler_maruyama", "sde", default_grid="uniform")
class EulerMaruyama(Stepper):
    """Euler-Maruyama on the reverse SDE dx = [f x - g^2 score] dt + g dW (Song et al.)."""

    def step(self, i, x):
        ctx = self.ctx
        s, t = ctx.t[i], ctx.t[i + 1]
        x0 = self.denoise(x, i)
        g = ctx.sde.diffusion(s).item()
        return x + (t - s) * ctx.sde.reverse_drift(x, x0, s) + g * math.sqrt(s - t) * ctx.randn_like(x)


@register_stepper("ancestral", "sde", {"eta": 1.0}, default_grid="log_snr")
class Ancestral(Stepper):
    """DDPM ancestral step: sample the Gaussian posterior q(x_t | x_s, x0 = x0_hat) exactly.
    eta scales its noise (eta = 1: DDPM posterior; eta = 0: DDIM), as in DDIM's eta."""

    def __init__(self, ctx, eta: float = 1.0):
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"ancestral: eta must be in [0, 1], got {eta}")
        super().__init__(ctx, eta=eta)
        self.eta = eta

    def step(self, i, x):
        ctx = self.ctx
        x0 = self.denoise(x, i)
        h = ctx.lam[i + 1] - ctx.lam[i]
        a_s, s_s, a_t, s_t = ctx.alpha[i], ctx.sigma[i], ctx.alpha[i + 1], ctx.sigma[i + 1]
        var_frac = -math.expm1(-2 * h)  # posterior variance / sigma_t^2 = 1 - e^-2h
        keep = math.sqrt(max(0.0, 1.0 - self.eta ** 2 * var_frac))  # share of the predicted noise kept
        eps_hat_coef = s_t * keep / s_s  # x_t = a_t x0 + s_t keep eps_hat + s_t eta sqrt(var_frac) z
        out = (a_t - eps_hat_coef * a_s) * x0 + eps_hat_coef * x
        if self.eta > 0 and s_t > 0:
            out = out + s_t * self.eta * math.sqrt(var_frac) * ctx.randn_like(x)
        return out


PREDICTORS = {"euler_maruyama": EulerMaruyama, "ancestral": Ancestral}


@register_stepper("pc", "sde", {"predictor": "euler_maruyama", "snr": 0.16, "corrector_steps": 1},
                  default_grid="uniform")
class PredictorCorrector(Stepper):
    """Song et al.'s predictor-corrector: `corrector_steps` Langevin steps at the current time
    (step size from the target `snr`), then one predictor step to the next time."""

    def __init__(self, ctx, predictor: str = "euler_maruyama", snr: float = 0.16, corrector_steps: int = 1):
        if predictor not in PREDICTORS:
            raise ValueError(f"pc: unknown predictor {predictor!r}; available: {', '.join(PREDICTORS)}")
        if snr <= 0 or int(corrector_steps) != corrector_steps or corrector_steps < 0:
            raise ValueError(f"pc: need snr > 0 and an integer corrector_steps >= 0, got snr={snr}, "
                             f"corrector_steps={corrector_steps}")
        super().__init__(ctx)
        self.predictor = PREDICTORS[predictor](ctx)
        self.snr, self.corrector_steps = snr, int(corrector_steps)

    def step(self, i, x):
        ctx = self.ctx
        a, s = ctx.alpha[i], ctx.sigma[i]
        for _ in range(self.corrector_steps):
            score = (a * self.denoise(x, i) - x) / (s * s)
            z = ctx.randn_like(x)
            # one step size for the batch from batch-mean norms, as Song et al.: a per-sample
            # ratio explodes for samples whose score happens to be near zero (small dims)
            ratio = z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            eps = 2 * (self.snr * ratio.item()) ** 2
            x = x + eps * score + math.sqrt(2 * eps) * z
        return self.predictor.step(i, x)


@register_stepper("dpmpp_2m_sde", "sde", {"lower_order_final": True}, default_grid="log_snr")
class DPMpp2MSDE(Multistep):
    """DPM-Solver++(2M) SDE: the data-prediction exponential integrator of the reverse SDE."""

    order = 2
    stochastic = True
