"""Machinery shared by every sampling method: the method registry, the counting denoiser,
the per-run context and the one fixed-grid step loop that all grid-based samplers reuse.

A fixed-grid method is a `Stepper` subclass that only says how to go from grid[i] to
grid[i + 1]; hooks, NaN checks, callbacks and the progress bar live in `run_fixed` once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .sde import SDE, randn

Tensor = torch.Tensor

__all__ = [
    "NonFiniteError", "StepInfo", "CountedDenoiser", "Context", "Method", "Stepper",
    "METHODS", "register", "register_stepper", "get_method", "run_fixed", "time_vector",
]


class NonFiniteError(FloatingPointError):
    """A NaN or inf appeared in a solver state or a denoiser output."""


@dataclass
class StepInfo:
    """What `callback` receives after each step."""

    step: int  # 0-based index of the step just taken
    t: float  # time of the state after the step
    x: Tensor  # state after the step (and after state_hook)
    x0: Tensor | None  # latest denoiser prediction (after x0_hook)


def time_vector(x: Tensor, t: float) -> Tensor:
    """The scalar time t as a [B] tensor in x's dtype and device: what denoisers and hooks get."""
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


class CountedDenoiser:
    """Wraps the user's denoiser: counts every call (the reported NFE), applies x0_hook,
    checks the output's shape and finiteness. `where` names the current step for errors."""

    def __init__(self, denoiser: Callable, x0_hook: Callable | None = None):
        self.denoiser, self.x0_hook = denoiser, x0_hook
        self.nfe = 0
        self.last_x0: Tensor | None = None
        self.where = "start"

    def __call__(self, x: Tensor, t: float) -> Tensor:
        tv = time_vector(x, t)
        x0 = self.denoiser(x, tv)
        self.nfe += 1
        if self.x0_hook is not None:
            x0 = self.x0_hook(x0, tv)
        if x0.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(x0.shape)} for input shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x0).all()):
            raise NonFiniteError(f"denoiser returned NaN/inf at {self.where} (t={float(t):.6g})")
        self.last_x0 = x0
        return x0


@dataclass
class Context:
    """Everything a method needs for one `sample` call. Grid coefficients are python floats
    computed in float64, so multiplying a state by them keeps the state's dtype."""

    model: CountedDenoiser
    sde: SDE
    t_start: float
    t_end: float
    steps: int
    grid: Tensor | None = None  # float64, decreasing, steps + 1 points (fixed-grid methods)
    generator: torch.Generator | None = None
    state_hook: Callable | None = None
    callback: Callable | None = None
    progress: bool = False
    t: list = field(default_factory=list)
    alpha: list = field(default_factory=list)
    sigma: list = field(default_factory=list)
    lam: list = field(default_factory=list)  # half log-SNR log(alpha / sigma), +inf where sigma = 0

    def __post_init__(self):
        if self.grid is not None:
            self.t = self.grid.tolist()
            self.alpha = self.sde.alpha(self.grid).tolist()
            self.sigma = self.sde.sigma(self.grid).tolist()
            self.lam = (0.5 * self.sde.log_snr(self.grid)).tolist()

    def randn_like(self, x: Tensor) -> Tensor:
        """Gaussian noise from the explicit generator (drawn on the generator's device)."""
        return randn(x.shape, self.generator, x.dtype, x.device)

    def check(self, x: Tensor, step: int, t: float) -> None:
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"non-finite state (NaN/inf) after step {step} (t={t:.6g})")

    def progress_bar(self, total: int | None):
        if not self.progress:
            return None
        from tqdm.auto import tqdm  # optional dependency, only when asked for

        return tqdm(total=total, desc="sampling")


@dataclass(frozen=True)
class Method:
    """A registered sampling method. `run(ctx, x_T, **options) -> (x, stats)`."""

    name: str
    kind: str  # "ode" (probability-flow ODE) or "sde" (reverse SDE, stochastic)
    run: Callable[..., tuple[Tensor, dict]]
    options: dict[str, Any]  # option name -> default
    default_grid: str | dict | None = None  # None: no grid; dict: per SDE name, "*" for the rest
    hooks: bool = True  # supports state_hook and callback
    adaptive: bool = False  # chooses its own steps (ignores `steps`, reports accepted/rejected)

    def resolve(self, given: dict) -> dict:
        bad = sorted(set(given) - set(self.options))
        if bad:
            known = ", ".join(self.options) or "none"
            raise ValueError(f"unknown option(s) {', '.join(map(repr, bad))} for method {self.name!r}; "
                             f"its options: {known}")
        return {**self.options, **given}


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name]


class Stepper:
    """A fixed-grid method: `step(i, x)` maps the state at grid[i] to grid[i + 1].
    One instance per `sample` call, so multistep methods may keep history on self."""

    def __init__(self, ctx: Context, **options):
        self.ctx, self.opts = ctx, options

    def step(self, i: int, x: Tensor) -> Tensor:
        raise NotImplementedError

    # shared helpers
    def denoise(self, x: Tensor, i: int) -> Tensor:
        return self.ctx.model(x, self.ctx.t[i])

    def is_last(self, i: int) -> bool:
        return i == self.ctx.steps - 1


def run_fixed(stepper: Stepper, ctx: Context, x: Tensor) -> tuple[Tensor, dict]:
    """The one step loop: step, state_hook, NaN check, callback, progress."""
    bar = ctx.progress_bar(ctx.steps)
    for i in range(ctx.steps):
        ctx.model.where = f"step {i}"
        x = stepper.step(i, x)
        t = ctx.t[i + 1]
        if ctx.state_hook is not None:
            x = ctx.state_hook(x, time_vector(x, t))
        ctx.check(x, i, t)
        if ctx.callback is not None:
            ctx.callback(StepInfo(i, t, x, ctx.model.last_x0))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return x, {"steps": ctx.steps}


def register_stepper(name: str, kind: str, options: dict | None = None, default_grid: str | dict = "uniform"):
    """Class decorator registering a Stepper subclass as a fixed-grid method."""

    def deco(cls: type[Stepper]) -> type[Stepper]:
        def run(ctx: Context, x: Tensor, **opts):
            return run_fixed(cls(ctx, **opts), ctx, x)

        register(Method(name, kind, run, dict(options or {}), default_grid))
        return cls

    return deco


def phi_coefs(h: float, order: int) -> list[float]:
    """h^(k+1) phi_{k+1}(-h) for k < order: the exponential-integrator weights of the k-th
    log-SNR derivative of x0 (phi_1(z) = (e^z - 1)/z, ...). h = inf gives [1] (order 1 only)."""
    if math.isinf(h):
        return [1.0]
    em = math.expm1(-h)
    return [-em, em + h, -(em + h - 0.5 * h * h)][:order]
