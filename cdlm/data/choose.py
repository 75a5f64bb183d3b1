"""The tokenizer and `seq_len` chosen from the data where they are not given: word level for
short-line corpora, BPE for prose; the smallest multiple of 8 that holds 99% of the texts. The
embedded corpus takes its own settings."""

from __future__ import annotations

import math
import re
from collections import Counter

EMBEDDED_SETTINGS = {"tokenizer": "word", "seq_len": 40}  # what the embedded corpus takes when not given
# the choice from the data (`choose_tokenizer`, `choose_seq_len`) when tokenizer or seq_len is not given
WORD_LEVEL_MAX_WORDS = 64  # word level only for texts this short (99% of them), as records and sentences are
PACKED_SEQ_LEN = 128  # windows of running text (packing): nanoGPT's shakespeare_char block is 256
MAX_AUTO_SEQ_LEN = 512  # longer texts are cut rather than the model made this wide
PIECE_CHARS = 1 << 20  # long running text is counted and trained on a piece of about this many characters at a time
WHOLE_TRAINING_CHARS = 1 << 22  # a text up to this long trains the tokenizer whole, as it always has
_WORDS = re.compile(r"\w+|[^\w\s]+")  # what the word tokenizer's Whitespace pre-tokenizer splits into


def _quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def choose_tokenizer(texts: list[str], vocab_size: int) -> tuple[str, str]:
    """(tokenizer kind, why) for `texts`: "word" for short-line corpora whose words fit the vocabulary
    (99% of texts within `WORD_LEVEL_MAX_WORDS` words, at most `vocab_size` distinct words), else
    "bpe" (prose, running text, or too many distinct words for one id each)."""
    counts: Counter = Counter()
    lengths = []
    for text in texts:
        n = 0
        for piece in _pieces(text):  # a running text a piece at a time: no list of all its words
            words = _WORDS.findall(piece)
            n += len(words)
            counts.update(words)
        lengths.append(n)
    p99, distinct = _quantile(lengths, 0.99), len(counts)
    if p99 > WORD_LEVEL_MAX_WORDS:
        return "bpe", f"prose: 99% of texts within {p99:,} words, more than the {WORD_LEVEL_MAX_WORDS} word level takes"
    if distinct > vocab_size:
        return "bpe", f"{distinct:,} distinct words, more than vocab_size={vocab_size:,}"
    return "word", f"short lines: 99% of texts within {p99:,} words, {distinct:,} distinct words"


def _pieces(text: str, size: int = PIECE_CHARS):
    """`text` in pieces of about `size` characters, cut after a newline (else a space) so that no
    word is split; a text this short whole."""
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind("\n", start, end) + 1 or text.rfind(" ", start, end) + 1 or end
        yield text[start:cut]
        start = cut
    yield text[start:]


def training_texts(texts: list[str]) -> list[str]:
    """What a tokenizer trains on: texts as they are, and a running text longer than
    `WHOLE_TRAINING_CHARS` in pieces (the trainer's pre-tokenization of one huge string takes
    about 100 bytes a character; pieces cut at newlines only differ where BPE would have merged
    whitespace across a line break)."""
    if all(len(t) <= WHOLE_TRAINING_CHARS for t in texts):
        return texts
    return [p for t in texts for p in (_pieces(t) if len(t) > WHOLE_TRAINING_CHARS else [t])]


def choose_seq_len(lengths: list[int]) -> tuple[int, str]:
    """(seq_len, why) for texts of `lengths` tokens, one per example: the smallest multiple of 8 that
    holds 99% of them and the pad that ends them, at most `MAX_AUTO_SEQ_LEN`."""
    p99, longest = _quantile(lengths, 0.99), max(lengths)
    seq_len = min(max(8, math.ceil((p99 + 1) / 8) * 8), MAX_AUTO_SEQ_LEN)
    over = sum(n > seq_len for n in lengths)
    why = f"99% of texts within {p99:,} tokens"
    if over:
        why += f"; {over:,} longer ones (up to {longest:,}) are cut"
    return seq_len, why
