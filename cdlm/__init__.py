"""cdlm: a continuous embedding-space diffusion language model on the `solvers` SDE toolkit."""

import importlib

# loaded on first use, so that `cdlm --help` and `import cdlm` stay fast
_EXPORTS = {"TextDataModule": "cdlm.data", "DataSpec": "cdlm.data", "AttributeClassifier": "cdlm.models",
            "AutoregressiveLM": "cdlm.models",
            "DiffusionLM": "cdlm.models", "DistilledDiffusionLM": "cdlm.models", "LanguageModel": "cdlm.models",
            "MaskedDiffusionLM": "cdlm.models", "load": "cdlm.hub", "evaluate": "cdlm.evaluation",
            "diagnose": "cdlm.diagnostics",
            "diagnose_heldout": "cdlm.diagnostics", "heldout_data": "cdlm.evaluation", "Request": "cdlm.control.request", "SamplerConfig": "cdlm.sampling.settings"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cdlm' has no attribute {name!r}")
