"""Control: anchors, templates, prefixes, suffixes and length, turned into what the sampler
imposes — known token ids per position (-1 where free) and a logit bias that bans tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cdlm.data.tokenizer import PAD, UNK, encode

BLANK = "___"


@dataclass
class Constraints:
    known_ids: torch.Tensor  # [L], -1 where the model decides
    logit_bias: torch.Tensor | None  # [L, V], -inf where a token is banned, or None

    def satisfied(self, ids: torch.Tensor) -> torch.Tensor:
        """[N] bools: each row of `ids` [N, L] holds every known token and no banned one."""
        ids = ids.cpu()
        mask = self.known_ids >= 0
        ok = (ids[:, mask] == self.known_ids[mask]).all(1)
        if self.logit_bias is not None:
            banned = torch.isinf(self.logit_bias.gather(1, ids.T)).T  # [N, L]
            ok &= ~banned.any(1)
        return ok


def _word_ids(tokenizer, word: str, what: str) -> list[int]:
    ids = encode(tokenizer, word)
    unk = tokenizer.token_to_id(UNK)
    if not ids or unk in ids:
        raise ValueError(f"{what} {word!r} cannot be produced by the model's tokenizer")
    return ids


def parse_anchor(spec: str) -> tuple[int, str]:
    """'5=quantum' → (5, 'quantum')."""
    pos, sep, word = spec.partition("=")
    if not sep or not pos.strip().lstrip("-").isdigit() or not word.strip():
        raise ValueError(f"anchor {spec!r} is not POSITION=WORD (e.g. 5=quantum)")
    return int(pos), word.strip()


def build_constraints(
    tokenizer,
    seq_len: int,
    anchors: dict[int, str] | list[tuple[int, str]] | None = None,
    prefix: str | None = None,
    suffix: str | None = None,
    template: str | None = None,
    length: int | None = None,
) -> Constraints:
    """Known ids for positions counted in tokens of `tokenizer` from 0. A word the tokenizer
    splits occupies several positions from the one given. `length` fixes the number of tokens
    before padding (a template fixes it too); `suffix` needs a length to end at."""
    pad = tokenizer.token_to_id(PAD)
    known = torch.full((seq_len,), -1, dtype=torch.long)
    owner: dict[int, str] = {}

    def place(start: int, ids: list[int], what: str) -> None:
        if start < 0 or start + len(ids) > seq_len:
            raise ValueError(f"{what} at position {start} does not fit in the sequence length {seq_len}")
        for i, tok in enumerate(ids, start):
            if i in owner:
                raise ValueError(f"{what} and {owner[i]} both claim position {i}")
            owner[i] = what
            known[i] = tok

    if template is not None:
        words = template.split()
        if BLANK not in words:
            raise ValueError(f"template {template!r} has no blank ({BLANK}, one per token)")
        pos = 0
        for word in words:
            if word == BLANK:
                pos += 1
                continue
            ids = _word_ids(tokenizer, word, "template word")
            place(pos, ids, f"template word {word!r}")
            pos += len(ids)
        if length is not None and length != pos:
            raise ValueError(f"length {length} disagrees with the template's {pos} tokens")
        length = pos
    if length is not None and not 1 <= length <= seq_len:
        raise ValueError(f"length {length} is outside 1..{seq_len}")
    if prefix:
        place(0, _word_ids(tokenizer, prefix, "prefix"), f"prefix {prefix!r}")
    if suffix:
        if length is None:
            raise ValueError("a suffix needs a length (or a template) to end at")
        ids = _word_ids(tokenizer, suffix, "suffix")
        place(length - len(ids), ids, f"suffix {suffix!r}")
    items = anchors.items() if isinstance(anchors, dict) else (anchors or [])
    seen: set[int] = set()
    for pos, word in items:
        if pos in seen:
            raise ValueError(f"two anchors on position {pos}")
        seen.add(pos)
        if length is not None and pos >= length:
            raise ValueError(f"anchor {pos}={word} lies beyond the length {length}")
        place(pos, _word_ids(tokenizer, word, "anchor word"), f"anchor {pos}={word}")
    bias = None
    if length is not None:
        if (known[length:] >= 0).any():
            raise ValueError(f"constraints reach beyond the length {length}")
        free_pad = known[length:] < 0
        known[length:][free_pad] = pad  # exactly `length` tokens: padding after,
        bias = torch.zeros(seq_len, tokenizer.get_vocab_size())
        bias[:length, pad] = float("-inf")  # and no padding before
    return Constraints(known, bias)
