"""Text in, token ids out: the embedded corpus, tokenizers, and the Lightning data module."""

import importlib

__all__ = ["EMBEDDED", "TextDataModule", "load_texts"]


def __getattr__(name: str):
    # the data module loaded on first use: `cdlm.data.corpus` (which cdlm.control imports) must
    # not pull in the module, which imports cdlm.control
    if name in __all__:
        return getattr(importlib.import_module("cdlm.data.module"), name)
    raise AttributeError(f"module 'cdlm.data' has no attribute {name!r}")
