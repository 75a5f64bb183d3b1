"""Sampler settings, declared once.

`SamplerConfig` holds how the continuous model samples, `MaskedSamplerConfig` how the masked
diffusion model does. Each field is at once a model default
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


@dataclass(frozen=True)  # a dataclass too: jsonargparse reads a config of dataclasses alone as plain fields
class _Settings:
    """What every model's sampler settings do: copy with overrides, travel as plain values."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **overrides):
        """A copy with `overrides` (None keeps the value); an unknown name is a one-line error."""
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown sampler option {unknown[0]!r}; valid: {', '.join(self.names())}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def _check(self, checks: dict) -> None:
        """ValueError naming the first field that fails its test in `checks` (None passes)."""
        for name, (ok, must_be) in checks.items():
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise ValueError(f"{name} must be {must_be}, got {value!r}")

    @classmethod
    def of(cls, value):
        """From itself, from the plain dict a checkpoint holds, or the defaults."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if not isinstance(value, dict):
            raise ValueError(f"sampler settings must be a mapping, got {type(value).__name__}")
        return cls().replace(**value)


@dataclass(frozen=True)
class SamplerConfig(_Settings):
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
    self_condition_scale: float = _setting(1.0, "self-conditioning guidance s: logits without + s (with - without) "
                                                "the previous x0 (1: off; otherwise two network calls per step)")

    def __post_init__(self):
        for name, valid in (("method", solvers.available()), ("rounding", ROUNDINGS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; available: {', '.join(valid)}")
        self._check(_CHECKS)
        if self.method in IMPLICIT_METHODS:
            raise ValueError(f"method {self.method!r} is {IMPLICIT_WHY}")


def _count(v, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least  # True is an int to Python, not a count


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# field → (test, what it must be); NaN fails every comparison
_CHECKS = {
    "steps": (lambda v: _count(v, 1), "a positive integer"),
    "temperature": (lambda v: _number(v) and v > 0, "a finite number > 0"),
    "clamp_below_t": (lambda v: _number(v) and 0 <= v <= 1, "a time in [0, 1]"),
    "restarts": (lambda v: _count(v, 0), "a non-negative integer"),
    "restart_log_snr": (_number, "a finite number"),
    "restart_log_snr_end": (_number, "a finite number"),
    "restart_steps": (lambda v: _count(v, 1), "a positive integer"),
    "restart_keep": (lambda v: _number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "commit": (lambda v: isinstance(v, bool), "true or false"),
    "self_condition_scale": (_number, "a finite number"),
}
# the flat names DiffusionLM took before SamplerConfig, as checkpoints of that time hold them
LEGACY_NAMES = {"sample_method": "method", "sample_steps": "steps", **{n: n for n in SamplerConfig.names()[2:]}}


MASKED_METHODS = ("ancestral", "low_confidence", "semi_ar", "threshold")
# the settings only some masked methods read (method, steps and temperature apply to all)
MASKED_METHOD_SETTINGS = {"semi_ar": ("block_length",), "threshold": ("block_length", "threshold")}


@dataclass(frozen=True)
class MaskedSamplerConfig(_Settings):
    """How the masked diffusion model unmasks (see `cdlm.sampling.masked`)."""

    method: str = _setting("low_confidence", "sampler: ancestral, low_confidence, semi_ar or threshold (masked model)")
    steps: int = _setting(40, "sampling steps (threshold: the most network calls it may make)")
    temperature: float = _setting(1.0, "temperature of the predicted tokens (0: the most probable)")
    block_length: int = _setting(8, "positions per block, decided left to right (masked model: semi_ar, threshold)")
    threshold: float = _setting(0.9, "confidence above which a prediction is kept at once (masked model: threshold)")

    def __post_init__(self):
        if self.method not in MASKED_METHODS:
            raise ValueError(f"unknown method {self.method!r}; available: {', '.join(MASKED_METHODS)}")
        self._check(_MASKED_CHECKS)

    def used(self) -> tuple[str, ...]:
        """The fields this config's method reads."""
        return ("method", "steps", "temperature", *MASKED_METHOD_SETTINGS.get(self.method, ()))


_MASKED_CHECKS = {
    "steps": (lambda v: _count(v, 1), "a positive integer"),
    "temperature": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
    "block_length": (lambda v: _count(v, 1), "a positive integer"),
    "threshold": (lambda v: _number(v) and 0 <= v <= 1, "a confidence in [0, 1]"),
}
SETTINGS = (SamplerConfig, MaskedSamplerConfig)  # the sampler settings of every model: `cdlm sample` has a flag for each field
