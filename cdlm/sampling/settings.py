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
from dataclasses import dataclass

import solvers
from cdlm.settings import Settings, count, number, setting

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


# the sampling cost cuts both models have (`cdlm.sampling.base`)
TRIM_HELP = ("run the network only over each batch's longest content, not seq_len (a cost cut; approximate: the "
             "network was trained to see the padding)")
GROUP_HELP = "sort samples by length into batches, so that trim_padding cuts more (other noise per sample than ungrouped)"


@dataclass(frozen=True)
class SamplerConfig(Settings):
    """How the continuous model turns noise into tokens (see `cdlm.sampling.continuous.generate`)."""

    what = "sampler option"

    method: str = setting("ddim", "solver; see solvers.available()")
    steps: int = setting(50, "solver steps of the first pass")
    score_temperature: float = setting(0.5, "score temperature τ: x0 = softmax(logits / τ)·E, not a token draw's "
                                            "(continuous models; --temperature is its old name)")
    clamp_below_t: float = setting(0.0, "snap x0 to the nearest embedding below this t (0: never)")
    rounding: str = setting("logits", "how vectors become tokens: logits, nearest, or last (skips the final call)")
    restarts: int = setting(0, "restart passes after the first solve")
    restart_log_snr: float = setting(-1.5, "log-SNR the restarts re-noise to")
    restart_log_snr_end: float | None = setting(None, "log-SNR of the last restart (the level moves linearly)")
    restart_steps: int = setting(10, "solver steps per restart pass")
    restart_keep: float = setting(0.0, "fraction of the surest tokens kept known by the last restart (mask-predict)")
    commit: bool = setting(False, "decide positions in order of confidence")
    self_condition_scale: float = setting(1.0, "self-conditioning guidance s: logits without + s (with - without) "
                                                "the previous x0 (1: off; otherwise two network calls per step)")
    trim_padding: bool = setting(False, TRIM_HELP)
    group_lengths: bool = setting(False, GROUP_HELP)
    # `temperature` is a token draw's (the masked and autoregressive models); the continuous model's
    # shapes x0 and draws nothing, and took that name before: accepted, folded into score_temperature
    temperature: float | None = setting(None, "continuous models: the old name of score_temperature")

    def __post_init__(self):
        if self.temperature is not None:  # the old name: configs, flags and checkpoints that use it still work
            object.__setattr__(self, "score_temperature", self.temperature)
            object.__setattr__(self, "temperature", None)
        for name, valid in (("method", solvers.available()), ("rounding", ROUNDINGS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; available: {', '.join(valid)}")
        self._check(_CHECKS)
        if self.method in IMPLICIT_METHODS:
            raise ValueError(f"method {self.method!r} is {IMPLICIT_WHY}")


CUT_CHECKS = {name: (lambda v: isinstance(v, bool), "true or false") for name in ("trim_padding", "group_lengths")}
# field → (test, what it must be); NaN fails every comparison
_CHECKS = {
    "steps": (lambda v: count(v, 1), "a positive integer"),
    "score_temperature": (lambda v: number(v) and v > 0, "a finite number > 0"),
    "clamp_below_t": (lambda v: number(v) and 0 <= v <= 1, "a time in [0, 1]"),
    "restarts": (lambda v: count(v, 0), "a non-negative integer"),
    "restart_log_snr": (number, "a finite number"),
    "restart_log_snr_end": (number, "a finite number"),
    "restart_steps": (lambda v: count(v, 1), "a positive integer"),
    "restart_keep": (lambda v: number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "commit": (lambda v: isinstance(v, bool), "true or false"),
    "self_condition_scale": (number, "a finite number"),
    **CUT_CHECKS,
}
# the flat names DiffusionLM took before SamplerConfig, as checkpoints of that time hold them
LEGACY_NAMES = {"sample_method": "method", "sample_steps": "steps", **{n: n for n in SamplerConfig.names()[2:]}}


MASKED_METHODS = ("ancestral", "low_confidence", "semi_ar", "threshold")
# the settings only some masked methods read (method, steps and temperature apply to all)
MASKED_METHOD_SETTINGS = {"semi_ar": ("block_length",), "threshold": ("block_length", "threshold")}


@dataclass(frozen=True)
class MaskedSamplerConfig(Settings):
    """How the masked diffusion model unmasks (see `cdlm.sampling.masked`)."""

    what = "sampler option"

    method: str = setting("low_confidence", "sampler: ancestral, low_confidence, semi_ar or threshold (masked model)")
    steps: int = setting(40, "sampling steps (threshold: the most network calls it may make)")
    temperature: float = setting(1.0, "temperature of the predicted tokens (0: the most probable)")
    block_length: int = setting(8, "positions per block, decided left to right (masked model: semi_ar, threshold)")
    threshold: float = setting(0.9, "confidence above which a prediction is kept at once (masked model: threshold)")
    trim_padding: bool = setting(False, TRIM_HELP)
    group_lengths: bool = setting(False, GROUP_HELP)

    def __post_init__(self):
        if self.method not in MASKED_METHODS:
            raise ValueError(f"unknown method {self.method!r}; available: {', '.join(MASKED_METHODS)}")
        self._check(_MASKED_CHECKS)

    def used(self) -> tuple[str, ...]:
        """The fields this config's method reads."""
        return ("method", "steps", "temperature", *MASKED_METHOD_SETTINGS.get(self.method, ()), "trim_padding", "group_lengths")


_MASKED_CHECKS = {
    "steps": (lambda v: count(v, 1), "a positive integer"),
    "temperature": (lambda v: number(v) and v >= 0, "a finite number >= 0"),
    "block_length": (lambda v: count(v, 1), "a positive integer"),
    "threshold": (lambda v: number(v) and 0 <= v <= 1, "a confidence in [0, 1]"),
    **CUT_CHECKS,
}
SETTINGS = (SamplerConfig, MaskedSamplerConfig)  # the sampler settings of every model: `cdlm sample` has a flag for each field


def sampler_flags() -> dict:
    """name → (type, help) of every sampler setting any model declares: one `cdlm sample` /
    `cdlm eval` flag each."""
    flags = {}
    for config in SETTINGS:
        for f in dataclasses.fields(config):
            kind = next(t for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str)) if name in str(f.type))
            helps = flags.get(f.name, (kind, []))[1]
            if f.metadata["help"] not in helps:  # a name two models share keeps both meanings
                helps.append(f.metadata["help"])
            flags[f.name] = (kind, helps)
    return {name: (kind, "; ".join(helps)) for name, (kind, helps) in flags.items()}
