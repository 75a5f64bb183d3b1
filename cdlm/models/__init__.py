"""The Lightning models, side by side on one backbone: continuous diffusion, masked diffusion,
autoregressive, and the attribute classifier that guides a trained diffusion model. Loaded on
first use, so that importing one model imports no other."""

import importlib

_EXPORTS = {"AttributeClassifier": "cdlm.models.classifier", "AutoregressiveLM": "cdlm.models.autoregressive",
            "DiffusionLM": "cdlm.models.diffusion", "DistilledDiffusionLM": "cdlm.models.distilled",
            "LanguageModel": "cdlm.models.base", "MaskedDiffusionLM": "cdlm.models.masked"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cdlm.models' has no attribute {name!r}")
