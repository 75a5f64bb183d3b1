"""Text in, token ids out: the embedded corpus, tokenizers, and the Lightning data module."""

from cdlm.data.module import EMBEDDED, TextDataModule, load_texts

__all__ = ["EMBEDDED", "TextDataModule", "load_texts"]
