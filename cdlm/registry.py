"""The models by name: each model class registers itself with `@register`, and a checkpoint names
its class by the name recorded under `MODEL_KEY`. This module imports no model: the first lookup
imports every module of `cdlm.models` once (so their `@register` lines run), as `solvers`' method
registry fills when its method modules are imported. It stands below the models, so checkpoints
and the hub, which the models use, look models up without importing one."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

MODEL_KEY = "cdlm_model"  # the name under which a checkpoint records its class

_MODELS: dict[str, type] = {}
_discovered = False


def register(cls: type) -> type:
    """Class decorator: `cls` is loadable by its name from checkpoints and model folders."""
    _MODELS[cls.__name__] = cls
    return cls


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules([str(Path(__file__).parent / "models")]):
            importlib.import_module(f"cdlm.models.{module.name}")
        _discovered = True


def models() -> dict[str, type]:
    """{name: class} of every registered model."""
    _discover()
    return dict(_MODELS)


def model_class(name: str) -> type | None:
    """The model class registered as `name`, or None."""
    return _MODELS.get(name) or models().get(name)
