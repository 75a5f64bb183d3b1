"""Attributes: meaning representations ("name[the eagle], food[french]") as conditions.

An attribute is one `key=value` pair in canonical form (key without case, spaces or
underscores; value lower-case with single spaces), so "eatType[Pub]", "eat_type=pub" and
"eat type[pub]" are the same attribute. An `AttributeVocab` numbers the attributes seen in
training data; a set of attributes becomes a multi-hot row the score network is conditioned
on (all zeros: unconditional). It travels inside checkpoints as its list of names.

(Whether a text expresses its attributes is `cdlm.control.attributes`.)
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

import torch

_PIECE = re.compile(r"\s*([^\[\],=]+?)\s*\[([^\[\]]*)\]\s*(?:,|$)")


def canonical(key: str, value: str) -> str:
    k = re.sub(r"[\s_]", "", key).lower()
    v = " ".join(value.lower().split())
    if not k or not v:
        raise ValueError(f"attribute {key!r}={value!r} needs a key and a value")
    return f"{k}={v}"


def parse_mr(mr: str) -> dict[str, str]:
    """'name[The Eagle], eatType[pub]' → {'name': 'the eagle', 'eattype': 'pub'} (canonical)."""
    out: dict[str, str] = {}
    pos = 0
    text = mr.strip()
    while pos < len(text):
        m = _PIECE.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"bad meaning representation at {text[pos:]!r}; expected key[value] pieces separated by ','")
        key, value = canonical(m.group(1), m.group(2)).split("=", 1)
        out[key] = value
        pos = m.end()
    return out


def parse_attributes(spec: str | Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Attributes from an MR string, a {key: value} mapping, or KEY=VALUE strings."""
    if isinstance(spec, Mapping):
        pairs = [canonical(k, v) for k, v in spec.items()]
    elif isinstance(spec, str) and "[" in spec:
        return parse_mr(spec)
    else:
        pairs = []
        for item in [spec] if isinstance(spec, str) else spec:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"attribute {item!r} is not KEY=VALUE (e.g. food=french)")
            pairs.append(canonical(key, value))
    return dict(p.split("=", 1) for p in pairs)


class AttributeVocab:
    """The attributes a model can be conditioned on, numbered."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def build(cls, mrs: Iterable[str]) -> "AttributeVocab":
        names = {f"{k}={v}" for mr in mrs for k, v in parse_mr(mr).items()}
        if not names:
            raise ValueError("no attributes found in the condition column")
        return cls(sorted(names))

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, attributes: Sequence[Mapping[str, str]], strict: bool = True) -> torch.Tensor:
        """Multi-hot rows [N, A]. Unknown attributes raise (`strict`) or are skipped (data rows)."""
        rows = torch.zeros(len(attributes), len(self.names))
        for r, attrs in enumerate(attributes):
            for k, v in attrs.items():
                i = self.index.get(f"{k}={v}")
                if i is None:
                    if strict:
                        raise ValueError(f"attribute {k}={v!r} was never seen in training; known for {k!r}: "
                                         f"{', '.join(n.split('=', 1)[1] for n in self.names if n.startswith(k + '=')) or 'none'}")
                    continue
                rows[r, i] = 1.0
        return rows
