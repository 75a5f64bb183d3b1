"""Whether texts express the attributes they were asked for (`expressed`, `attribute_accuracy`).

Attributes themselves (parsing meaning representations, their canonical form and vocabulary)
are the data's (`cdlm.data.attributes`), imported here for the callers that ask for them here.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from cdlm.data import corpus
from cdlm.data.attributes import AttributeVocab, canonical, parse_attributes, parse_mr

__all__ = ["AttributeVocab", "attribute_accuracy", "canonical", "expressed", "parse_attributes", "parse_mr"]

_WORD = re.compile(r"[^\W_]+|[^\w\s]")


def _words(text: str) -> str:
    """Lower-case words and punctuation marks, space-separated and space-padded for matching."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def expressed(text: str, requested: Mapping[str, str], embedded: bool, exact: bool = False) -> bool:
    """Whether `text` expresses every requested attribute (with `exact`, and no other).

    On the embedded corpus the validator parses the text's record and compares values exactly;
    elsewhere (E2E) a value counts as expressed when it appears in the text as words,
    Diffusion-LM's exact-match criterion (`exact` needs the parser, so it is ignored there).
    """
    if embedded:
        record = corpus.parse(text)
        if record is None:
            return False
        found = parse_mr(record.to_mr())
        return found == dict(requested) if exact else requested.items() <= found.items()
    words = _words(text)
    return all(_words(v) in words for v in requested.values())


def attribute_accuracy(texts: Sequence[str], requested: Sequence[Mapping[str, str]], embedded: bool,
                       exact: bool = False) -> float:
    """Fraction of texts that express their requested attributes (see `expressed`)."""
    if len(texts) != len(requested):
        raise ValueError(f"{len(texts)} texts but {len(requested)} attribute requests")
    return sum(expressed(t, r, embedded, exact) for t, r in zip(texts, requested)) / max(len(texts), 1)
