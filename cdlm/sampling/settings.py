"""Sampler settings, declared once.

`SamplerConfig` holds how the continuous model samples. Each field is at once a model default
(`DiffusionLM(sampler=...)`, YAML `model.init_args.sampler`, `--model.sampler.steps`), a flag of
`cdlm sample` / `cdlm eval` (`--steps`, generated from the fields and their help), and a keyword
of `generate` / `sample_ids` (`model.generate(8, steps=20)`). It is validated here, once, and
travels in checkpoints as plain values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import solvers

# logits: argmax of one more call at the end time; nearest: embedding nearest to that call's x0;
# last: argmax of the last solver call, no extra call (one NFE less per pass, for short restarts)
ROUNDINGS = ("logits", "nearest", "last")
# Implicit (stiff) solvers differentiate the field by finite differences, one network call per state
# coordinate, with float64-sized steps that only see a float32 network's rounding noise: their Newton
# iterations fail and the step size collapses (scipy:Radau moved t from 1 to 0.99 in a minute on a
# 40-token model). Even given a proper Jacobian, scipy:BDF took 20 s and 11,541 calls where
# scipy:RK45 takes 0.2 s and 207 for 16 samples: the probability-flow ODE is not stiff.
IMPLICIT_METHODS = ("scipy:Radau", "scipy:BDF", "scipy:LSODA", "torchdiffeq:scipy_solver")
IMPLICIT_WHY = ("an implicit solver, unsuited to a network-sized state (it builds a finite-difference "
                "Jacobian, one network call per coordinate); use an explicit one such as scipy:RK45")


def _setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SamplerConfig:
    """How the continuous model turns noise into tokens (see `cdlm.sampling.continuous.generate_ids`)."""

    method: str = _setting("ddim", "solver; see solvers.available()")
    steps: int = _setting(50, "solver steps of the first pass")
    temperature: float = _setting(0.5, "score temperature: softmax(logits / temperature) gives x0")
    clamp_below_t: float = _setting(0.0, "snap x0 to the nearest embedding below this t (0: never)")
    rounding: str = _setting("logits", "how vectors become tokens: logits, nearest, or last (skips the final call)")
    restarts: int = _setting(0, "restart passes after the first solve")
    restart_log_snr: float = _setting(-1.5, "log-SNR the restarts re-noise to")
    restart_log_snr_end: float | None = _setting(None, "log-SNR of the last restart (the level moves linearly)")
    restart_steps: int = _setting(10, "solver steps per restart pass")
    restart_keep: float = _setting(0.0, "fraction of the surest tokens kept known by the last restart (mask-predict)")
    commit: bool = _setting(False, "decide positions in order of confidence")

    def __post_init__(self):
        for name, valid in (("method", solvers.available()), ("rounding", ROUNDINGS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; available: {', '.join(valid)}")
        for name, (ok, must_be) in _CHECKS.items():
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise ValueError(f"{name} must be {must_be}, got {value!r}")
        if self.method in IMPLICIT_METHODS:
            raise ValueError(f"method {self.method!r} is {IMPLICIT_WHY}")

    def replace(self, **overrides) -> SamplerConfig:
        """A copy with `overrides` (None keeps the value); an unknown name is a one-line error."""
        unknown = sorted(set(overrides) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown sampler option {unknown[0]!r}; valid: {', '.join(FIELDS)}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, value: SamplerConfig | dict | None) -> SamplerConfig:
        """From itself, from the plain dict a checkpoint holds, or the defaults."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if not isinstance(value, dict):
            raise ValueError(f"sampler settings must be a mapping, got {type(value).__name__}")
        return cls().replace(**value)


def _is(kind):
    return lambda v: isinstance(v, kind) and not isinstance(v, bool) if kind is not bool else isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# field → (test, what it must be); NaN fails every comparison
_CHECKS = {
    "steps": (lambda v: _is(int)(v) and v >= 1, "a positive integer"),
    "temperature": (lambda v: _number(v) and v > 0, "a finite number > 0"),
    "clamp_below_t": (lambda v: _number(v) and 0 <= v <= 1, "a time in [0, 1]"),
    "restarts": (lambda v: _is(int)(v) and v >= 0, "a non-negative integer"),
    "restart_log_snr": (_number, "a finite number"),
    "restart_log_snr_end": (_number, "a finite number"),
    "restart_steps": (lambda v: _is(int)(v) and v >= 1, "a positive integer"),
    "restart_keep": (lambda v: _number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "commit": (_is(bool), "true or false"),
}
FIELDS = tuple(f.name for f in dataclasses.fields(SamplerConfig))
# the flat names DiffusionLM took before SamplerConfig, as checkpoints of that time hold them
LEGACY_NAMES = {"sample_method": "method", "sample_steps": "steps", **{name: name for name in FIELDS[2:]}}
SETTINGS = (SamplerConfig,)  # the sampler settings of every model: `cdlm sample` has a flag for each field
