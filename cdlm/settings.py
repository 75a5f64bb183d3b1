"""Typed groups of settings: frozen dataclasses validated once, copied with overrides, and stored
in checkpoints as plain values. LightningCLI shows each field of a group given as a constructor
parameter (`--model.sampler.steps`, `--model.optim.lr`), and YAML sets them as a mapping."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


def setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)  # a dataclass too: jsonargparse reads a config of dataclasses alone as plain fields
class Settings:
    """What every group of settings does: copy with overrides, travel as plain values."""

    what = "setting"  # what errors call a field (a class attribute, not a field: no annotation)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **overrides):
        """A copy with `overrides` (None keeps the value); an unknown name is a one-line error."""
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown {self.what} {unknown[0]!r}; valid: {', '.join(self.names())}")
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
            raise ValueError(f"{cls.what}s must be a mapping, got {type(value).__name__}")
        return cls().replace(**value)


def count(v, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least  # True is an int to Python, not a count


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fold_flat_names(hparams: dict, groups: dict[str, dict[str, str]]) -> dict:
    """`hparams` (a checkpoint's, from before its settings were grouped) with flat names folded
    into their groups; `groups` maps each group to {flat name: its field there}. A value the
    group already holds wins over a flat one."""
    out = dict(hparams)
    for group, names in groups.items():
        legacy = {new: out.pop(old) for old, new in names.items() if old in out}
        if legacy:
            out[group] = {**legacy, **(out.get(group) or {})}
    return out
