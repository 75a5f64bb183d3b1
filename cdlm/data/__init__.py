"""Text in, token ids out: the embedded corpus, sources, tokenizers, the data's spec, and the
Lightning data module that wires them."""

import importlib

_EXPORTS = {"EMBEDDED": "cdlm.data.sources", "load_texts": "cdlm.data.sources", "DataSpec": "cdlm.data.spec",
            "TextDataModule": "cdlm.data.module"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # loaded on first use: importing `cdlm.data.corpus` or `cdlm.data.tokenizer` should not pull in
    # Lightning and datasets
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cdlm.data' has no attribute {name!r}")
