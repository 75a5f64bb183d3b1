"""Pins each reach of solvers into torchdiffeq's private API (solvers/private_api.py): a
torchdiffeq release that moves or changes one fails here, by name."""
import math

import pytest
import torch
from torchdiffeq import odeint

from solvers.private_api import torchdiffeq_is_fixed_grid, torchdiffeq_is_runge_kutta, torchdiffeq_methods


def test_the_method_registry_is_the_one_odeint_reads():
    methods = torchdiffeq_methods()
    assert {"euler", "rk4", "dopri5", "bosh3"} <= set(methods)
    y0, ts = torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    for name, options in (("rk4", {"step_size": 0.01}), ("dopri5", {})):
        assert abs(odeint(lambda t, y: -y, y0, ts, method=name, options=options)[-1].item() - math.exp(-1)) < 1e-6
    with pytest.raises(ValueError) as error:  # odeint validates a name against this very registry
        odeint(lambda t, y: -y, y0, ts, method="no_such_method")
    assert all(name in str(error.value) for name in methods)


def test_the_kinds_of_method():
    assert torchdiffeq_is_fixed_grid("euler") and torchdiffeq_is_fixed_grid("rk4")
    assert not torchdiffeq_is_fixed_grid("dopri5")
    assert torchdiffeq_is_runge_kutta("dopri5") and torchdiffeq_is_runge_kutta("bosh3")
    assert not torchdiffeq_is_runge_kutta("euler")


def test_runge_kutta_methods_take_step_t():
    """The adapters make the last Runge-Kutta step land on t_end with the `step_t` option."""
    seen = []
    y0, ts = torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 0.5], dtype=torch.float64)
    odeint(lambda t, y: seen.append(float(t)) or -y, y0, ts, method="dopri5", options={"step_t": ts[1:]})
    assert max(seen) <= 0.5 + 1e-12
