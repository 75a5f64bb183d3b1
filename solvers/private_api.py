"""Every reach of `solvers` into another library's private API, in one place.

torchdiffeq publishes `odeint` but neither its list of methods nor which of them step on a
fixed grid or are adaptive Runge-Kutta pairs; the adapters (`solvers.external`, the
likelihood) need all three. tests/solvers/test_solvers_private_api.py pins each reach, so a
torchdiffeq release that moves one fails there by name.
"""
from __future__ import annotations

from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
from torchdiffeq._impl.solvers import FixedGridODESolver

__all__ = ["torchdiffeq_methods", "torchdiffeq_is_fixed_grid", "torchdiffeq_is_runge_kutta"]


def torchdiffeq_methods() -> dict:
    """torchdiffeq's method registry, name -> solver class (the one `odeint` itself reads)."""
    return SOLVERS


def torchdiffeq_is_fixed_grid(name: str) -> bool:
    """Whether torchdiffeq's `name` steps on the given times (no tolerances)."""
    return issubclass(SOLVERS[name], FixedGridODESolver)


def torchdiffeq_is_runge_kutta(name: str) -> bool:
    """Whether torchdiffeq's `name` is an adaptive Runge-Kutta pair (takes the `step_t` option)."""
    return issubclass(SOLVERS[name], RKAdaptiveStepsizeODESolver)
