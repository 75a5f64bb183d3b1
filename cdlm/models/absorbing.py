"""The absorbing (masking) process of the masked model, apart from the model and its samplers.

A token is masked by time t ∈ [0, 1] with probability 1 - α_t (α_0 = 1, α_1 = 0: all mask).
Two schedules, named for how the masked fraction 1 - α_t grows (distinct from the continuous
model's noise schedules, which are `solvers`' SDEs):

- `mask_linear`: α_t = 1 - t (MDLM's log-linear noise, LLaDA's linear masking);
- `mask_cosine`: α_t = cos(π t / 2).
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("mask_linear", "mask_cosine")
# the names they had before (configs, flags and checkpoints written with them still load)
SCHEDULE_ALIASES = {"log_linear": "mask_linear", "cosine": "mask_cosine"}


def schedule_name(schedule: str) -> str:
    """The canonical name of an absorbing schedule (old names accepted)."""
    name = SCHEDULE_ALIASES.get(schedule, schedule)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    return name


def alpha(schedule: str, t: torch.Tensor) -> torch.Tensor:
    """α_t, the probability that a token is still unmasked at time t ∈ [0, 1] (α_0 = 1, α_1 = 0)."""
    if schedule_name(schedule) == "mask_linear":
        return 1 - t
    return torch.cos(0.5 * math.pi * t)


def nelbo_weight(schedule: str, t: torch.Tensor) -> torch.Tensor:
    """-α'_t / (1 - α_t): the weight of a masked token's cross-entropy at time t in MDLM's
    continuous-time NELBO (1/t for mask_linear)."""
    if schedule_name(schedule) == "mask_linear":
        return 1 / t
    half = 0.5 * math.pi * t
    return 0.5 * math.pi * torch.sin(half) / (1 - torch.cos(half))
