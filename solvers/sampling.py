"""The public entry point: `sample(denoiser, sde, x_T, method=..., steps=...)`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import external, multistep, ode, sde_solvers  # noqa: F401  (importing registers the methods)
from .core import METHODS, Context, CountedDenoiser, get_method
from .grids import make_grid, resolve_default
from .sde import SDE

Tensor = torch.Tensor

__all__ = ["SampleResult", "sample", "available", "method_info"]


@dataclass
class SampleResult:
    x: Tensor  # final state: same shape, dtype and device as x_T
    nfe: int  # exact number of denoiser calls
    steps: int | None  # steps taken (None where an external integrator does not say)
    accepted: int | None  # adaptive methods only
    rejected: int | None  # adaptive methods only (None where the integrator does not say)
    method: str


def available(kind: str | None = None) -> list[str]:
    """Every method name (optionally only kind='ode' or kind='sde')."""
    if kind not in (None, "ode", "sde"):
        raise ValueError(f"unknown kind {kind!r}; use 'ode', 'sde' or None")
    return [n for n, m in METHODS.items() if kind is None or m.kind == kind]


def method_info(method: str) -> dict:
    """Kind, options with defaults, default grid, hook support of a method."""
    m = get_method(method)
    grid = dict(m.default_grid) if isinstance(m.default_grid, dict) else m.default_grid
    return {"name": m.name, "kind": m.kind, "options": dict(m.options), "default_grid": grid,
            "hooks": m.hooks, "adaptive": m.adaptive}


def sample(denoiser: Callable[[Tensor, Tensor], Tensor], sde: SDE, x_T: Tensor, method: str = "ddim",
           steps: int = 50, t_start: float = 1.0, t_end: float | None = None,
           generator: torch.Generator | None = None, callback: Callable | None = None,
           x0_hook: Callable | None = None, state_hook: Callable | None = None, grid=None,
           progress: bool = False, **options) -> SampleResult:
    """Integrate from t_start (noise) to t_end (data) with a registered method.

    denoiser(x_t, t) -> x0_hat, with t of shape [B] in x_t's dtype.
    x0_hook(x0_hat, t) -> x0_hat runs on every denoiser output before the solver uses it.
    state_hook(x, t) -> x runs on the state after each step (fixed-grid methods, dpm_adaptive).
    callback(StepInfo) runs after each step. grid: a name from solvers.GRIDS or a decreasing
    tensor of times (then `steps` = len(grid) - 1); None picks the method's default.
    Adaptive methods choose their own steps (`steps` only sets dpm_adaptive's first step).
    Runs under torch.no_grad(); a denoiser that needs gradients (guidance) enables them itself.
    """
    spec = get_method(method)
    opts = spec.resolve(options)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (torch.is_tensor(x_T) and x_T.is_floating_point() and x_T.ndim >= 1):
        raise ValueError(f"x_T must be a floating-point tensor of shape [B, ...], got {type(x_T).__name__}"
                         + (f" of dtype {x_T.dtype} and shape {tuple(x_T.shape)}" if torch.is_tensor(x_T) else ""))
    t_end = sde.t_min_default if t_end is None else float(t_end)
    t_start = float(t_start)
    if not (0.0 <= t_end < t_start and math.isfinite(t_start)):
        raise ValueError(f"need 0 <= t_end < t_start, got t_start={t_start}, t_end={t_end}")
    if not spec.hooks and (state_hook is not None or callback is not None):
        raise ValueError(f"method {method!r} steps on its own and supports neither state_hook nor callback; "
                         f"use a fixed-grid method (e.g. ddim, dpmpp_2m, euler_maruyama)")

    ts = None
    if spec.default_grid is not None:
        name = grid if grid is not None else resolve_default(spec.default_grid, sde)
        if name in ("log_snr", "karras_snr") and grid is None and not math.isfinite(sde.log_snr(t_end).item()):
            name = "karras"  # the log-SNR grid cannot reach sigma = 0; EDM's grid can
        ts = make_grid(name, sde, steps, t_start, t_end)
        t_start, t_end, steps = ts[0].item(), ts[-1].item(), len(ts) - 1
    elif grid is not None:
        raise ValueError(f"method {method!r} chooses its own steps and takes no grid")

    model = CountedDenoiser(denoiser, x0_hook)
    ctx = Context(model, sde, t_start, t_end, steps, ts, generator, state_hook, callback, progress)
    with torch.no_grad():
        x, stats = spec.run(ctx, x_T, **opts)
    return SampleResult(x=x, nfe=model.nfe, steps=stats.get("steps"), accepted=stats.get("accepted"),
                        rejected=stats.get("rejected"), method=method)
