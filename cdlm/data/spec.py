"""`DataSpec`: what the data is, decided once by the data side (`TextDataModule.spec`) and only
read after that: by the model, which is built from it (and stores it in the checkpoint as its
hyperparameters of the same names), and by evaluation, which rebuilds the data around a trained
model's spec instead of choosing again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    """The tokenizer (as its JSON string), tokens per example, the attribute names of conditioned
    data (None without a condition column), and how many training examples have 0..seq_len
    tokens (None for packed text, which has no lengths)."""

    tokenizer_json: str
    seq_len: int
    attribute_names: list[str] | None = None
    length_counts: list[int] | None = None

    def __post_init__(self):
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {self.seq_len!r}")

    @classmethod
    def from_hparams(cls, hparams: Mapping) -> DataSpec:
        """The spec a model was built from, out of its (a checkpoint's) hyperparameters."""
        if hparams.get("tokenizer_json") is None:
            raise ValueError("the model's hyperparameters hold no tokenizer_json: not a model built from data")
        return cls(hparams["tokenizer_json"], hparams["seq_len"], hparams.get("attribute_names") or None,
                   hparams.get("length_counts"))
