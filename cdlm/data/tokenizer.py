"""Tokenizers from HF `tokenizers`: trained locally (word, BPE or character level) or loaded.

A tokenizer travels inside checkpoints as its JSON string, so everything here converts
to and from that string.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD = "[PAD]"
UNK = "[UNK]"
SPECIAL_TOKENS = [PAD, UNK]  # PAD is id 0: generated sequences end in a run of pads
KINDS = ("word", "bpe", "char")


def train_tokenizer(texts: Iterable[str], kind: str = "word", vocab_size: int = 8000) -> Tokenizer:
    """Train a tokenizer on `texts`. `vocab_size` bounds BPE only; word and char keep every symbol."""
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        # words and runs of punctuation ("pub." → "pub", "."); decoding joins them with spaces
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif kind == "char":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, newlines too
        tok.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; valid: {', '.join(KINDS)}")
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path_or_json: str) -> Tokenizer:
    """A tokenizer from a `tokenizer.json` path or from its JSON string."""
    text = path_or_json.lstrip()
    if text.startswith("{"):
        tok = Tokenizer.from_str(path_or_json)
    else:
        path = Path(path_or_json)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path_or_json!r} does not exist")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"tokenizer file {path_or_json!r} is not a valid tokenizer.json ({err})") from None
    if tok.token_to_id(PAD) is None:
        raise ValueError(f"tokenizer {path_or_json[:60]!r} has no {PAD} token; retrain it with cdlm")
    return tok


def encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def decode(tok: Tokenizer, ids: Iterable[int]) -> str:
    """Text of `ids`, cut at the first pad (a generated sequence ends where padding starts)."""
    pad = tok.token_to_id(PAD)
    kept = []
    for i in ids:
        if i == pad:
            break
        kept.append(int(i))
    return tok.decode(kept, skip_special_tokens=True)
