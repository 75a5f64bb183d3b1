"""Texts in memory → fixed-length examples: one sentence per example, padded with [PAD] (and
stopped, or cut with a warning, when longer than `seq_len`), or running text cut into windows;
and the length counts of sentence examples, which the model samples lengths from."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import TensorDataset

from cdlm.data.attributes import AttributeVocab, parse_mr
from cdlm.data.stream import WindowDataset
from cdlm.data.tokenizer import PAD, encode


def encode_sentences(tokenizer, texts: list[str], seq_len: int, truncate: bool, split: str = "training",
                     conditions: list[str] | None = None, attribute_vocab: AttributeVocab | None = None) -> TensorDataset:
    """(ids, mask[, attribute rows]) of one text per row, padded to `seq_len`; `conditions` (meaning
    representations) become multi-hot rows of `attribute_vocab`."""
    pad = tokenizer.token_to_id(PAD)
    encoded = [enc.ids for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]
    check_lengths([len(seq) for seq in encoded], seq_len, truncate, split)
    ids = torch.full((len(texts), seq_len), pad, dtype=torch.long)
    for row, seq in enumerate(encoded):
        seq = seq[:seq_len]  # cuts only with truncate=True; check_lengths stops otherwise
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    if conditions is None:
        return TensorDataset(ids, ids != pad)
    attribute_rows = attribute_vocab.encode([parse_mr(c) for c in conditions], strict=False)
    return TensorDataset(ids, ids != pad, attribute_rows)


def check_lengths(lengths: list[int], seq_len: int, truncate: bool, split: str) -> None:
    """Stop (with `truncate`, warn) when texts are longer than seq_len: cutting them silently
    loses their ends and teaches the model that they stop mid-sentence."""
    over = [n for n in lengths if n > seq_len]
    if not over:
        return
    total, lost = sum(lengths), sum(over) - seq_len * len(over)
    fits, longest = sorted(lengths)[math.ceil(0.99 * len(lengths)) - 1], max(lengths)
    fitting = (f"seq_len={longest} fits them all" if fits == longest
               else f"seq_len={fits} fits 99% of them, seq_len={longest} all")
    message = (f"{len(over):,} of {len(lengths):,} {split} texts ({100 * len(over) / len(lengths):.3g}%) are longer "
               f"than seq_len={seq_len} tokens; truncating them {'drops' if truncate else 'would drop'} {lost:,} of "
               f"{total:,} tokens ({100 * lost / total:.3g}%). {fitting}")
    if not truncate:
        raise ValueError(f"{message}; pass --data.truncate=true to cut them anyway")
    rank_zero_warn(message)


def encode_running(tokenizer, texts: list[str], seq_len: int, train: bool) -> WindowDataset:
    """Texts joined by newlines into one token stream, cut into windows: every start for training
    (drawn at random each epoch), back to back for validation."""
    tokens = torch.tensor(encode(tokenizer, "\n".join(texts)), dtype=torch.long)
    return WindowDataset(tokens, seq_len, stride=1 if train else seq_len)


def length_counts(examples: TensorDataset, seq_len: int) -> list[int]:
    """How many sentence examples have 0..seq_len tokens (texts cut by `truncate` count at
    seq_len, the length the model sees)."""
    return torch.bincount(examples.tensors[1].sum(1), minlength=seq_len + 1).tolist()
