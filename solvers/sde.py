"""Linear (Gaussian-marginal) SDEs  dx = f(t) x dt + g(t) dW,  t in [0, 1], t = 1 is noise.

Every SDE here is fixed by its marginal  x_t = alpha(t) x0 + sigma(t) eps.  A subclass only
gives log alpha, log sigma and their time derivatives; the drift, diffusion and all solver
coefficients follow from them:

    f(t)   = d log alpha / dt
    g(t)^2 = d sigma^2/dt - 2 f sigma^2 = 2 sigma^2 (d log sigma/dt - d log alpha/dt)

The variance-preserving family (alpha^2 + sigma^2 = 1) is fixed by its log-SNR
lambda(t) = log(alpha^2 / sigma^2) alone, so each VP schedule is a few lines.

Coefficients are computed in float64: methods taking only `t` return float64 tensors of
t's shape; methods taking a state return the state's dtype and device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

__all__ = [
    "SDE", "VPFamilySDE", "VPSDE", "VPCosineSDE", "SubVPSDE", "VESDE", "LogLinearVPSDE", "NoiseScaledVPSDE",
    "append_dims", "sde_from_name", "SDES",
]


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a [B] (or scalar) tensor broadcasts against [B, ...]."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor with {v.ndim} dims to {ndim} dims")
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def randn(shape, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
          device=None) -> Tensor:
    """torch.randn drawn on the generator's device (so a CPU generator serves a GPU state)."""
    dev = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=dev).to(device)


def _t64(t) -> Tensor:
    """Time as a float64 tensor (keeps a tensor's device and shape)."""
    return torch.as_tensor(t, dtype=torch.float64)


class SDE:
    """Base class. Subclasses implement `_log_alpha_sigma` and `_dlog_alpha_sigma`."""

    name = "sde"
    t_min_default = 1e-3  # default end time of sampling
    prior_std = 1.0  # the prior at t = 1 is N(0, prior_std^2)

    # ---- what a subclass provides (float64 tensor in, float64 tensors out) ----
    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _dlog_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    _kwargs: dict = {}  # constructor arguments, set by each subclass

    def config(self) -> dict:
        """Plain-valued constructor arguments plus `name`, for `sde_from_name(**config)`."""
        return {"name": self.name, **self._kwargs}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._kwargs.items())
        return f"{type(self).__name__}({args})"

    # ---- marginal ----
    def alpha(self, t) -> Tensor:
        return self._log_alpha_sigma(_t64(t))[0].exp()

    def sigma(self, t) -> Tensor:
        return self._log_alpha_sigma(_t64(t))[1].exp()

    def log_snr(self, t) -> Tensor:
        """lambda(t) = log(alpha^2 / sigma^2); +inf where sigma = 0."""
        la, ls = self._log_alpha_sigma(_t64(t))
        return 2.0 * (la - ls)

    def d_log_alpha(self, t) -> Tensor:
        return self._dlog_alpha_sigma(_t64(t))[0]

    def d_log_sigma(self, t) -> Tensor:
        return self._dlog_alpha_sigma(_t64(t))[1]

    def d_log_snr(self, t) -> Tensor:
        da, ds = self._dlog_alpha_sigma(_t64(t))
        return 2.0 * (da - ds)

    def t_from_log_snr(self, lam) -> Tensor:
        """Inverse of `log_snr` (bisection on [0, 1]; subclasses override with closed forms)."""
        lam = _t64(lam)
        lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
        for _ in range(64):  # log_snr decreases in t
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    # ---- SDE coefficients ----
    def beta(self, t) -> Tensor:
        """beta(t) = -2 d log alpha / dt, the VP drift rate (f = -beta/2)."""
        return -2.0 * self.d_log_alpha(t)

    def g2(self, t) -> Tensor:
        """Squared diffusion g(t)^2 = 2 sigma^2 (d log sigma/dt - d log alpha/dt)."""
        t = _t64(t)
        _, ls = self._log_alpha_sigma(t)
        da, ds = self._dlog_alpha_sigma(t)
        return 2.0 * (2.0 * ls).exp() * (ds - da)

    def diffusion(self, t) -> Tensor:
        return self.g2(t).clamp_min(0.0).sqrt()

    def drift(self, x: Tensor, t) -> Tensor:
        """Forward drift f(t) x."""
        return self._bcast(self.d_log_alpha(t), x) * x

    def ode_velocity(self, x: Tensor, x0: Tensor, t) -> Tensor:
        """Probability-flow ODE dx/dt given a denoised estimate x0 (no division by sigma).

        With x0 fixed, x_t = alpha x0 + sigma eps moves as
        dx/dt = (d log sigma) x + (d log alpha - d log sigma) alpha x0.
        """
        t = _t64(t)
        la, _ = self._log_alpha_sigma(t)
        da, ds = self._dlog_alpha_sigma(t)
        return self._bcast(ds, x) * x + self._bcast((da - ds) * la.exp(), x) * x0

    def reverse_drift(self, x: Tensor, x0: Tensor, t) -> Tensor:
        """Reverse-time SDE drift f x - g^2 score, with score = (alpha x0 - x) / sigma^2."""
        t = _t64(t)
        la, _ = self._log_alpha_sigma(t)
        da, ds = self._dlog_alpha_sigma(t)
        g2_over_s2 = 2.0 * (ds - da)
        return self._bcast(da + g2_over_s2, x) * x - self._bcast(g2_over_s2 * la.exp(), x) * x0

    # ---- sampling and densities ----
    def perturb(self, x0: Tensor, t, noise: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) noise; t is a float or a [B] tensor."""
        if noise is None:
            noise = randn(x0.shape, generator, x0.dtype, x0.device)
        return self._bcast(self.alpha(t), x0) * x0 + self._bcast(self.sigma(t), x0) * noise

    def prior_sample(self, shape, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        return self.prior_std * randn(shape, generator, dtype, device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; 0, prior_std^2), summed over all non-batch dims -> [B]."""
        x64 = x.double().flatten(1)
        var = self.prior_std ** 2
        lp = -0.5 * (x64 ** 2 / var + math.log(2 * math.pi * var))
        return lp.sum(1).to(x.dtype)

    @staticmethod
    def _bcast(coef: Tensor, x: Tensor) -> Tensor:
        """Cast a float64 coefficient to x's dtype/device and shape it to broadcast over x."""
        return append_dims(coef.to(dtype=x.dtype, device=x.device), x.ndim)


class VPFamilySDE(SDE):
    """Variance preserving: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda).

    Subclasses give lambda(t) and lambda'(t) (and optionally the closed-form inverse).
    Then beta(t) = -lambda'(t) sigmoid(-lambda(t)) and g^2 = beta.
    """

    def _lam(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _dlam(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _log_alpha_sigma(self, t):
        lam = self._lam(t)
        # log sigmoid via softplus: exact in both tails, and lambda = +inf gives sigma = 0
        return -0.5 * F.softplus(-lam), -0.5 * F.softplus(lam)

    def _dlog_alpha_sigma(self, t):
        lam, dlam = self._lam(t), self._dlam(t)
        return 0.5 * dlam * torch.sigmoid(-lam), -0.5 * dlam * torch.sigmoid(lam)

    def log_snr(self, t) -> Tensor:
        return self._lam(_t64(t))

    def d_log_snr(self, t) -> Tensor:
        return self._dlam(_t64(t))


class VPSDE(VPFamilySDE):
    """Linear beta(t) = beta_min + t (beta_max - beta_min) (Song et al. 2021)."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self._kwargs = {"beta_min": beta_min, "beta_max": beta_max}

    def _int_beta(self, t):  # B(t) = int_0^t beta = -log alpha^2
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2

    def _lam(self, t):
        b = self._int_beta(t)
        return -b - torch.log(-torch.expm1(-b))  # log(e^-B / (1 - e^-B)); +inf at t = 0

    def _dlam(self, t):
        b = self._int_beta(t)
        beta = self.beta_min + (self.beta_max - self.beta_min) * t
        return -beta / -torch.expm1(-b)  # -beta / sigma^2

    def beta(self, t) -> Tensor:
        t = _t64(t)
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def t_from_log_snr(self, lam) -> Tensor:
        b = F.softplus(-_t64(lam))  # -log alpha^2
        db = self.beta_max - self.beta_min
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min ** 2 + 2 * db * b))  # stable root


class VPCosineSDE(VPFamilySDE):
    """Cosine schedule alpha_bar = cos^2(phi(t)) / cos^2(phi(0)), phi = (t+s)/(1+s) pi/2 (Nichol & Dhariwal).

    alpha -> 0 at t = 1, so t is clipped to `t_max` (log-SNR about -9.5 at the default), which
    keeps every coefficient finite on and beyond [0, 1]; beyond t_max the SDE stands still.
    """

    name = "cosine"

    def __init__(self, s: float = 0.008, t_max: float = 0.9946):
        if not (s >= 0 and 0 < t_max < 1):
            raise ValueError(f"need s >= 0 and 0 < t_max < 1, got s={s}, t_max={t_max}")
        self.s, self.t_max = float(s), float(t_max)
        self._kwargs = {"s": s, "t_max": t_max}
        self._phi0 = self.s / (1 + self.s) * math.pi / 2

    def _phi(self, t):
        return (t.clamp(max=self.t_max) + self.s) / (1 + self.s) * math.pi / 2

    def _log_alpha_bar(self, phi):  # <= 0 (clamped against rounding at t = 0)
        return (2 * (torch.log(torch.cos(phi)) - math.log(math.cos(self._phi0)))).clamp(max=0.0)

    def _lam(self, t):
        # log_alpha_bar = 2 log(cos phi / cos phi0);  lambda = log_alpha_bar - log(1 - alpha_bar)
        la_bar = self._log_alpha_bar(self._phi(t))
        return la_bar - torch.log(-torch.expm1(la_bar))

    def _dlam(self, t):
        phi = self._phi(t)
        la_bar = self._log_alpha_bar(phi)
        dla_bar = -2 * torch.tan(phi) * math.pi / (2 * (1 + self.s))
        dla_bar = torch.where(t > self.t_max, torch.zeros_like(dla_bar), dla_bar)
        return dla_bar / torch.expm1(la_bar).abs()  # d/dt [l - log(1 - e^l)] = l' / (1 - e^l)

    def t_from_log_snr(self, lam) -> Tensor:
        alpha_bar = torch.sigmoid(_t64(lam))
        phi = torch.arccos((alpha_bar.sqrt() * math.cos(self._phi0)).clamp(max=1.0))
        return (phi * 2 * (1 + self.s) / math.pi - self.s).clamp(0.0, self.t_max)


class VPSqrtSDE(VPFamilySDE):
    """Diffusion-LM's sqrt schedule alpha_bar = 1 - sqrt((t + s) / (1 + s)): noise rises fast
    near t = 0 and then slowly. t is clipped to `t_max` so that alpha stays positive."""

    name = "sqrt"

    def __init__(self, s: float = 1e-4, t_max: float = 0.9999):
        if not (s > 0 and 0 < t_max < 1):
            raise ValueError(f"need s > 0 and 0 < t_max < 1, got s={s}, t_max={t_max}")
        self.s, self.t_max = float(s), float(t_max)
        self._kwargs = {"s": s, "t_max": t_max}

    def _r(self, t):  # r = 1 - alpha_bar = sigma^2
        return torch.sqrt((t.clamp(0.0, self.t_max) + self.s) / (1 + self.s))

    def _lam(self, t):
        r = self._r(t)
        return torch.log1p(-r) - torch.log(r)

    def _dlam(self, t):
        r = self._r(t)
        dr = 1.0 / (2 * r * (1 + self.s))
        dr = torch.where((t < 0) | (t > self.t_max), torch.zeros_like(dr), dr)
        return -dr / (r * (1 - r))

    def t_from_log_snr(self, lam) -> Tensor:
        r = torch.sigmoid(-_t64(lam))
        return (r ** 2 * (1 + self.s) - self.s).clamp(0.0, self.t_max)


class LogLinearVPSDE(VPFamilySDE):
    """VP SDE with log-SNR linear in t: lambda(0) = log_snr_max, lambda(1) = log_snr_min.

    Finite everywhere (also outside [0, 1]), sigma(0) > 0, so sampling may end at t = 0.
    Training on a bounded log-SNR window is what makes embedding diffusion learn quickly.
    """

    name = "loglinear"
    t_min_default = 0.0

    def __init__(self, log_snr_min: float = -6.0, log_snr_max: float = 2.0):
        if not log_snr_min < log_snr_max:
            raise ValueError(f"need log_snr_min < log_snr_max, got {log_snr_min} >= {log_snr_max}")
        self.log_snr_min, self.log_snr_max = float(log_snr_min), float(log_snr_max)
        self._kwargs = {"log_snr_min": log_snr_min, "log_snr_max": log_snr_max}

    def _lam(self, t):
        return self.log_snr_max + (self.log_snr_min - self.log_snr_max) * t

    def _dlam(self, t):
        return torch.full_like(t, self.log_snr_min - self.log_snr_max)

    def t_from_log_snr(self, lam) -> Tensor:
        return (_t64(lam) - self.log_snr_max) / (self.log_snr_min - self.log_snr_max)


class SubVPSDE(SDE):
    """Sub-VP SDE (Song et al.): alpha^2 = e^{-B(t)}, sigma^2 = (1 - e^{-B(t)})^2, linear beta."""

    name = "subvp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self._kwargs = {"beta_min": beta_min, "beta_max": beta_max}

    _b = VPSDE._int_beta  # the same linear-beta integral B(t)

    def _log_alpha_sigma(self, t):
        b = self._b(t)
        return -0.5 * b, torch.log(-torch.expm1(-b))

    def _dlog_alpha_sigma(self, t):
        b = self._b(t)
        beta = self.beta_min + (self.beta_max - self.beta_min) * t
        return -0.5 * beta, beta * torch.exp(-b) / -torch.expm1(-b)


class VESDE(SDE):
    """Variance exploding: alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t."""

    name = "ve"
    t_min_default = 0.0  # sigma(0) = sigma_min > 0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._kwargs = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _log_alpha_sigma(self, t):
        return torch.zeros_like(t), math.log(self.sigma_min) + self._log_ratio * t

    def _dlog_alpha_sigma(self, t):
        return torch.zeros_like(t), torch.full_like(t, self._log_ratio)

    def beta(self, t) -> Tensor:
        """For VE there is no drift; beta is defined as d sigma^2 / dt (= g^2)."""
        return self.g2(t)

    def t_from_log_snr(self, lam) -> Tensor:
        return (-0.5 * _t64(lam) - math.log(self.sigma_min)) / self._log_ratio


class NoiseScaledVPSDE(VPFamilySDE):
    """A VP schedule made `noise_scale` k times noisier at every t: log-SNR lambda(t) - 2 log k.

    ELF's x_t = alpha x0 + k sigma eps has SNR alpha^2 / (k^2 sigma^2); divided by
    sqrt(alpha^2 + k^2 sigma^2) it is exactly this SDE's x_t. The division, a known function of
    t, keeps x_t at unit variance, and as the result is another VP SDE every sampler, bound and
    likelihood holds unchanged. It keeps the base's `name`, so methods' default grids are the
    base schedule's; `config()` round-trips through `sde_from_name`.
    """

    def __init__(self, base: VPFamilySDE, noise_scale: float):
        if not isinstance(base, VPFamilySDE):
            raise ValueError(f"noise_scale needs a variance-preserving schedule, got {base!r}")
        if not (math.isfinite(noise_scale) and noise_scale > 0):
            raise ValueError(f"noise_scale must be a finite number > 0, got {noise_scale}")
        self.base, self.noise_scale, self.shift = base, float(noise_scale), 2.0 * math.log(noise_scale)
        self.name, self.t_min_default = base.name, base.t_min_default
        base_kwargs = {k: v for k, v in base.config().items() if k != "name"}
        self._kwargs = {**base_kwargs, "noise_scale": noise_scale}

    def _lam(self, t):
        return self.base.log_snr(t) - self.shift

    def _dlam(self, t):
        return self.base.d_log_snr(t)

    def t_from_log_snr(self, lam) -> Tensor:
        return self.base.t_from_log_snr(_t64(lam) + self.shift)


SDES: dict[str, type[SDE]] = {c.name: c for c in (VPSDE, VPCosineSDE, VPSqrtSDE, SubVPSDE, VESDE, LogLinearVPSDE)}


def sde_from_name(name: str, noise_scale: float = 1.0, **kwargs) -> SDE:
    """Build an SDE from its short name ('vp', 'cosine', 'sqrt', 'subvp', 've', 'loglinear');
    a `noise_scale` other than 1 wraps a VP schedule in `NoiseScaledVPSDE`."""
    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; available: {', '.join(SDES)}")
    sde = SDES[name](**kwargs)
    return sde if noise_scale == 1.0 else NoiseScaledVPSDE(sde, noise_scale)
