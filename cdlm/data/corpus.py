"""The embedded corpus: E2E-style restaurant descriptions and an exact validator.

A *record* (a meaning representation, as in the E2E NLG data) is a restaurant name plus
some of seven attributes. `realise` turns a record into a description such as

    "the eagle is a cheap pub near the bakers . it serves italian food ."

and `parse` maps a description back to its record, or to None when the text is not a
description the generator could have produced. Validity (the fraction of texts that
parse) is the exact quality metric of diffusion samples, and the parsed record measures
attribute control.

How it works. Every description is built from *phrases* (template expansions such as
"is near the bakers" or "in the city centre") arranged by a small sentence grammar. A
description is first sampled as a *plan* (which frame, which phrases, in which order);
`_render` turns a plan into tokens and `_check` decides whether a plan is well formed
and returns its record. The generator samples plans and keeps those `_check` accepts;
the parser reads plans off the tokens and accepts a text only if the plan passes the
same `_check` and renders back to exactly the same tokens. Both sides share the tables,
`_render` and `_check`, so the validator accepts precisely the generator's language
(apart from record size and length: any non-empty set of attributes and, by default,
any length parse).

Phrase tables are chosen so that two phrasings of the same fact differ by at least two
token edits (and the grammar avoids the few cross-structure near-misses, see below). So a
single dropped, swapped, substituted or inserted token does not turn a description into
another description of the same record: it is rejected, or it names a different record
(e.g. "italian" -> "french"); the tests check this over every such edit of many
descriptions. This keeps the metric strict.

Text format: lowercase words, digits, "." and "," separated by single spaces.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, fields
from typing import Iterable, Iterator, NamedTuple

__all__ = [
    "ATTRIBUTES", "NAMES", "LANDMARKS", "VALUES", "MR_KEYS", "Record", "random_record",
    "realise", "generate", "corpus_texts", "parse", "is_valid", "vocabulary", "validity",
]

# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------

ATTRIBUTES: tuple[str, ...] = (
    "name", "eat_type", "food", "price_range", "customer_rating", "area", "family_friendly", "near",
)
_OPTIONAL = ATTRIBUTES[1:]

# No name is another name with one word dropped, and names and landmarks are disjoint,
# so "near the eagle" or "the curry" are never valid.
NAMES: tuple[str, ...] = (
    "the eagle", "the mill", "the waterman", "the wrestlers", "the phoenix", "the olive grove",
    "the golden curry", "the golden palace", "the dumpling tree", "the cambridge blue",
    "the cricketers", "the rice boat", "the punter", "blue spice", "browns cambridge",
    "loch fyne", "green man", "midsummer house", "travellers rest beefeater", "zizzi",
    "wildwood", "cotto", "aromi", "fitzbillies", "strada",
)
LANDMARKS: tuple[str, ...] = (
    "the bakers", "burger king", "crowne plaza hotel", "the portland arms", "cafe rouge",
    "the sorrento", "all bar one", "avalon", "cafe brazil", "cafe adriatic", "clare hall",
    "express by holiday inn", "rainbow vegetarian cafe", "ranch", "the six bells",
    "yippee noodle bar",
)
_FOODS = ("french", "italian", "chinese", "indian", "japanese", "english", "fast food")
_PRICE_WORDS = ("cheap", "moderate", "high")
_PRICE_AMOUNTS = ("less than 20 pounds", "20 to 25 pounds", "more than 30 pounds")
_RATING_WORDS = ("low", "average", "high")
_RATING_SCORES = ("1 out of 5", "3 out of 5", "5 out of 5")

VALUES: dict[str, tuple[str, ...]] = {
    "name": NAMES,
    "eat_type": ("restaurant", "pub", "coffee shop"),
    "food": _FOODS,
    "price_range": _PRICE_WORDS + _PRICE_AMOUNTS,
    "customer_rating": _RATING_WORDS + _RATING_SCORES,
    "area": ("riverside", "city centre"),
    "family_friendly": ("yes", "no"),
    "near": LANDMARKS,
}

# E2E meaning-representation keys.
MR_KEYS: dict[str, str] = {
    "name": "name", "eat_type": "eatType", "food": "food", "price_range": "priceRange",
    "customer_rating": "customer rating", "area": "area", "family_friendly": "familyFriendly",
    "near": "near",
}

# ---------------------------------------------------------------------------------------
# Surface forms: "attribute.form" -> value -> the ways to say it. A value without a form
# cannot fill a slot of that form (e.g. "fast food cuisine" does not exist).
# ---------------------------------------------------------------------------------------


def _same(values: Iterable[str]) -> dict[str, tuple[str, ...]]:
    return {v: (v,) for v in values}


_FORMS: dict[str, dict[str, tuple[str, ...]]] = {
    "eat_type.noun": _same(VALUES["eat_type"]),
    "food.adj": _same(_FOODS),
    "food.dish": {f: (f if f == "fast food" else f + " food",) for f in _FOODS},
    "food.cuisine": {f: (f + " cuisine",) for f in _FOODS if f != "fast food"},
    "price_range.adj": {"cheap": ("cheap",), "moderate": ("moderately priced",),
                        "high": ("expensive", "high priced")},
    "price_range.level": _same(_PRICE_WORDS),
    "price_range.amount": _same(_PRICE_AMOUNTS),
    "price_range.any": _same(_PRICE_WORDS + _PRICE_AMOUNTS),
    "customer_rating.word": _same(_RATING_WORDS),
    "customer_rating.score": _same(_RATING_SCORES),
    "customer_rating.any": _same(_RATING_WORDS + _RATING_SCORES),
    "customer_rating.adj": {"high": ("highly rated",), "low": ("poorly rated",)},
    "area.where": {"riverside": ("in the riverside area", "by the riverside"),
                   "city centre": ("in the city centre", "in the centre of the city")},
    "area.adj": _same(VALUES["area"]),
    "near.place": _same(LANDMARKS),
}

# ---------------------------------------------------------------------------------------
# Phrase templates. "{attr.form}" is a slot; a trailing (attr, value) pair fixes a value
# for templates without a slot. An "a" before a vowel becomes "an" when expanded. No
# template contains "," "and" "." or "called": those belong to the sentence grammar.
# ---------------------------------------------------------------------------------------

Fixed = tuple[str, str]

# Verb phrases after a subject: (singular, plural[, fixed value]).
_VP: tuple[tuple, ...] = (
    ("serves {food.dish}", "serve {food.dish}"),
    ("offers {food.cuisine}", "offer {food.cuisine}"),
    ("specialises in {food.cuisine}", "specialise in {food.cuisine}"),
    ("serves {price_range.adj} {food.dish}", "serve {price_range.adj} {food.dish}"),
    ("offers {price_range.adj} {food.cuisine}", "offer {price_range.adj} {food.cuisine}"),
    ("is {price_range.adj}", "are {price_range.adj}"),
    ("is in the {price_range.level} price range", "are in the {price_range.level} price range"),
    ("has a {price_range.level} price range", "have a {price_range.level} price range"),
    ("has a price range of {price_range.amount}", "have a price range of {price_range.amount}"),
    ("costs {price_range.amount}", "cost {price_range.amount}"),
    ("has a {customer_rating.word} customer rating", "have a {customer_rating.word} customer rating"),
    ("has a customer rating of {customer_rating.score}", "have a customer rating of {customer_rating.score}"),
    ("is rated {customer_rating.any}", "are rated {customer_rating.any}"),
    ("is {customer_rating.adj}", "are {customer_rating.adj}"),
    ("is {area.where}", "are {area.where}"),
    ("is near {near.place}", "are near {near.place}"),
    ("is close to {near.place}", "are close to {near.place}"),
    ("is not far from {near.place}", "are not far from {near.place}"),
    ("is family friendly", "are family friendly", ("family_friendly", "yes")),
    ("welcomes children", "welcome children", ("family_friendly", "yes")),
    ("is good for families", "are good for families", ("family_friendly", "yes")),
    ("is not family friendly", "are not family friendly", ("family_friendly", "no")),
    ("does not welcome children", "do not welcome children", ("family_friendly", "no")),
    ("is not good for families", "are not good for families", ("family_friendly", "no")),
)

# Noun phrase "a/an PRE* HEAD POST*". Premodifiers come in this attribute order.
_PRE_ORDER = ("price_range", "customer_rating", "family_friendly", "area", "food")
_PRE: tuple[tuple, ...] = (
    ("{price_range.adj}",),
    ("{customer_rating.adj}",),
    ("family friendly", ("family_friendly", "yes")),
    ("non family friendly", ("family_friendly", "no")),
    ("adults only", ("family_friendly", "no")),
    ("{area.adj}",),
    ("{food.adj}",),
)
_HEAD: tuple[tuple, ...] = (("{eat_type.noun}",), ("place",))  # "place": no eat type
_POST: tuple[tuple, ...] = (
    ("{area.where}",),
    ("near {near.place}",),
    ("close to {near.place}",),
    ("not far from {near.place}",),
    ("with a {customer_rating.word} customer rating",),
    ("with a customer rating of {customer_rating.score}",),
    ("rated {customer_rating.score}",),
    ("in the {price_range.level} price range",),
    ("with a price range of {price_range.amount}",),
    ("serving {food.dish}",),
    ("offering {food.cuisine}",),
)
# Fronted location: "near the bakers , the eagle ...".
_FRONT: tuple[tuple, ...] = (
    ("{area.where}",),
    ("near {near.place}",),
    ("close to {near.place}",),
)
# Whole later sentences without a subject (singular descriptions only).
_STANDALONE: tuple[tuple, ...] = (
    ("its customer rating is {customer_rating.any}",),
    ("customers rate it {customer_rating.any}",),
    ("its price range is {price_range.any}",),
    ("{food.dish} is served there",),
    ("{food.cuisine} is on the menu",),
    ("children are welcome there", ("family_friendly", "yes")),
    ("children are not welcome there", ("family_friendly", "no")),
)

# Sentence grammar (see `_render`):
#   first sentence   plain   NAME PREDS
#                    there   there is NP called NAME
#                    appos   NAME , NP , P      (one predicate: "NAME , NP , P and P" would
#                                               be one token from "NAME is NP , P and P")
#                    front   FRONT , NAME PREDS
#   later sentences  subject (it | they | NAME) PREDS
#                    standalone STANDALONE
#   PREDS = P | P and P | P , P and P        P = VP | is NP (singular subjects only)
# Each sentence ends with "." and states at least one attribute; each attribute is stated
# once; a description has at most one NP (so never "is a pub and is a place ..."; an eat
# type, which only an NP head can state, is the head of that NP); pronouns agree ("it" or
# "they" throughout; standalone sentences say "it"); a one-word name is not repeated as a
# later subject (so "it" -> "zizzi" would not be a same-record paraphrase).
_FIRST_FRAMES = ("plain", "there", "appos", "front")
_FRAME_WEIGHTS = (4.0, 1.5, 1.5, 1.5)
_MAX_SENTENCES = 3
_MAX_PREDICATES = 3
_MAX_PRE = 3
_MAX_POST = 2
_PRONOUNS = {"it": "sing", "they": "plur"}
_SEPARATORS = (",", "and")
_VOWELS = "aeiou"

# ---------------------------------------------------------------------------------------
# Template expansion
# ---------------------------------------------------------------------------------------


class _Phrase(NamedTuple):
    tokens: tuple[str, ...]
    assign: tuple[tuple[str, str], ...]  # (attribute, value) pairs, in ATTRIBUTES order
    role: str
    number: str | None  # "sing" / "plur" for verb phrases
    order: int  # premodifier rank


_SLOT = re.compile(r"^\{(\w+)\.(\w+)\}$")


def _key(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs, key=lambda p: ATTRIBUTES.index(p[0])))


def _fix_articles(tokens: list[str]) -> tuple[str, ...]:
    return tuple("an" if t == "a" and i + 1 < len(tokens) and tokens[i + 1][0] in _VOWELS else t
                 for i, t in enumerate(tokens))


def _expand(template: str, role: str, number: str | None = None, fixed: Fixed | None = None) -> list[_Phrase]:
    words = template.split()
    slots = [m.groups() for w in words if (m := _SLOT.match(w))]
    options = [[(a, v, s) for v, surfaces in _FORMS[f"{a}.{f}"].items() for s in surfaces] for a, f in slots]
    out = []
    for combo in itertools.product(*options):
        fill = iter(combo)
        tokens: list[str] = []
        for w in words:
            tokens.extend(next(fill)[2].split() if _SLOT.match(w) else [w])
        assign = _key([(a, v) for a, v, _ in combo] + ([fixed] if fixed else []))
        order = _PRE_ORDER.index(assign[0][0]) if role == "pre" else -1
        out.append(_Phrase(_fix_articles(tokens), assign, role, number, order))
    return out


def _table(role: str, templates: tuple[tuple, ...]) -> list[_Phrase]:
    out = []
    for template, *fixed in templates:
        out.extend(_expand(template, role, None, fixed[0] if fixed else None))
    return out


_VP_PHRASES = {n: [p for sing, plur, *fx in _VP for p in _expand((sing, plur)[i], "vp", n, fx[0] if fx else None)]
               for i, n in enumerate(("sing", "plur"))}
_PRE_PHRASES = _table("pre", _PRE)
_HEAD_PHRASES = _table("head", _HEAD)
_POST_PHRASES = _table("post", _POST)
_FRONT_PHRASES = _table("front", _FRONT)
_STANDALONE_PHRASES = _table("standalone", _STANDALONE)


def _by_assign(phrases: list[_Phrase]) -> dict[tuple, list[_Phrase]]:
    out: dict[tuple, list[_Phrase]] = {}
    for p in phrases:
        out.setdefault(p.assign, []).append(p)
    return out


def _by_tokens(phrases: list[_Phrase]) -> dict[tuple[str, ...], list[_Phrase]]:
    out: dict[tuple[str, ...], list[_Phrase]] = {}
    for p in phrases:
        out.setdefault(p.tokens, []).append(p)
    return out


class _Trie:
    """Prefix tree over phrase tokens: all phrases that match the tokens at a position."""

    def __init__(self, phrases: list[_Phrase]):
        self.root: dict = {}
        for p in phrases:
            node = self.root
            for t in p.tokens:
                node = node.setdefault(t, {})
            node.setdefault(None, []).append(p)

    def matches(self, tokens: tuple[str, ...], i: int) -> list[tuple[int, _Phrase]]:
        out, node = [], self.root
        while i < len(tokens) and (node := node.get(tokens[i])) is not None:
            i += 1
            out.extend((i, p) for p in node.get(None, ()))
        return out


# Generator indexes: which phrases say exactly this set of (attribute, value) pairs.
_VP_BY = {n: _by_assign(ps) for n, ps in _VP_PHRASES.items()}
_PRE_BY = _by_assign(_PRE_PHRASES)
_HEAD_BY = _by_assign(_HEAD_PHRASES)
_POST_BY = _by_assign(_POST_PHRASES)
_FRONT_BY = _by_assign(_FRONT_PHRASES)
_STANDALONE_BY = _by_assign(_STANDALONE_PHRASES)
# Parser indexes: which phrases are exactly these tokens / start at a position.
_VP_AT = {n: _by_tokens(ps) for n, ps in _VP_PHRASES.items()}
_FRONT_AT = _by_tokens(_FRONT_PHRASES)
_STANDALONE_AT = _by_tokens(_STANDALONE_PHRASES)
_PRE_TRIE = _Trie(_PRE_PHRASES)
_HEAD_TRIE = _Trie(_HEAD_PHRASES)
_POST_TRIE = _Trie(_POST_PHRASES)
_NAME_TOKENS = {tuple(n.split()): n for n in NAMES}
_NAME_LENGTHS = sorted({len(t) for t in _NAME_TOKENS})

# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------

_MR_ALIASES = {"less than £20": "less than 20 pounds", "£20-25": "20 to 25 pounds",
               "more than £30": "more than 30 pounds"}
_MR_ATTRS = {re.sub(r"[\s_]", "", k).lower(): a for a, k in MR_KEYS.items()}
_MR_ATTRS.update({a.replace("_", ""): a for a in ATTRIBUTES})
_MR_PIECE = re.compile(r"\s*([^\[\],]+?)\s*\[([^\[\]]*)\]\s*(,|$)")


def _one_line(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in values)


@dataclass(frozen=True)
class Record:
    """A meaning representation: a name and any of the seven other attributes."""

    name: str
    eat_type: str | None = None
    food: str | None = None
    price_range: str | None = None
    customer_rating: str | None = None
    area: str | None = None
    family_friendly: str | None = None
    near: str | None = None

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name != "name":
                continue
            if value not in VALUES[f.name]:
                raise ValueError(f"unknown {f.name} {value!r}; valid: {_one_line(VALUES[f.name])}")

    def attributes(self) -> dict[str, str]:
        """The set attributes (name included), in ATTRIBUTES order."""
        return {a: v for a in ATTRIBUTES if (v := getattr(self, a)) is not None}

    def to_mr(self) -> str:
        """E2E-style meaning representation, e.g. "name[the eagle], eatType[pub]"."""
        return ", ".join(f"{MR_KEYS[a]}[{v}]" for a, v in self.attributes().items())

    @classmethod
    def from_mr(cls, mr: str) -> "Record":
        """Inverse of `to_mr`; also reads E2E spellings ("priceRange[less than £20]", capitals)."""
        if not isinstance(mr, str):
            raise TypeError(f"from_mr expects a string, got {type(mr).__name__}")
        values: dict[str, str] = {}
        pos = 0
        while pos < len(mr):
            m = _MR_PIECE.match(mr, pos)
            if m is None:
                raise ValueError(f"bad meaning representation at {mr[pos:].strip()!r} in {mr!r}; "
                                 f"expected comma-separated key[value] pieces")
            if m.group(3) == "," and m.end() == len(mr):
                raise ValueError(f"trailing ',' in meaning representation {mr!r}")
            key, raw = m.group(1), m.group(2)
            attr = _MR_ATTRS.get(re.sub(r"[\s_]", "", key).lower())
            if attr is None:
                raise ValueError(f"unknown attribute {key!r} in {mr!r}; valid: {_one_line(MR_KEYS.values())}")
            if attr in values:
                raise ValueError(f"attribute {key!r} given twice in {mr!r}")
            value = " ".join(raw.lower().replace("é", "e").split())
            value = _MR_ALIASES.get(value, value)
            if value not in VALUES[attr]:
                raise ValueError(f"unknown {MR_KEYS[attr]} {raw!r} in {mr!r}; valid: {_one_line(VALUES[attr])}")
            values[attr] = value
            pos = m.end()
        if "name" not in values:
            raise ValueError(f"meaning representation {mr!r} has no name[...]")
        return cls(**values)


def random_record(rng: random.Random, min_attributes: int = 2, max_attributes: int = 6) -> Record:
    """A uniformly random name plus `min_attributes`..`max_attributes` other attributes."""
    _check_counts(min_attributes, max_attributes)
    name = rng.choice(NAMES)
    chosen = rng.sample(_OPTIONAL, rng.randint(min_attributes, max_attributes))
    return Record(name=name, **{a: rng.choice(VALUES[a]) for a in _OPTIONAL if a in chosen})


def _check_counts(min_attributes: int, max_attributes: int) -> None:
    if not (isinstance(min_attributes, int) and isinstance(max_attributes, int)
            and 1 <= min_attributes <= max_attributes <= len(_OPTIONAL)):
        raise ValueError(f"need 1 <= min_attributes <= max_attributes <= {len(_OPTIONAL)}, "
                         f"got min_attributes={min_attributes!r}, max_attributes={max_attributes!r}")


# ---------------------------------------------------------------------------------------
# Plans: the shared middle of generator and parser
# ---------------------------------------------------------------------------------------


class _NP(NamedTuple):
    pre: tuple[_Phrase, ...]
    head: _Phrase
    post: tuple[_Phrase, ...]


class _Sentence(NamedTuple):
    frame: str  # plain / there / appos / front / subject / standalone
    subject: str | None = None  # later "subject" sentences: it / they / name
    front: _Phrase | None = None
    np: _NP | None = None
    preds: tuple = ()  # _Phrase (verb phrase) or _NP ("is" + noun phrase)
    standalone: _Phrase | None = None


def _np_tokens(np: _NP) -> list[str]:
    body = [t for p in (*np.pre, np.head, *np.post) for t in p.tokens]
    return ["an" if body[0][0] in _VOWELS else "a", *body]


def _preds_tokens(preds: tuple) -> list[str]:
    parts = [["is", *_np_tokens(p)] if isinstance(p, _NP) else list(p.tokens) for p in preds]
    out: list[str] = []
    for i, part in enumerate(parts):
        if i:
            out.append("and" if i == len(parts) - 1 else ",")
        out.extend(part)
    return out


def _render(name: tuple[str, ...], sentences: tuple[_Sentence, ...]) -> list[str]:
    out: list[str] = []
    for s in sentences:
        if s.frame == "plain":
            out += [*name, *_preds_tokens(s.preds)]
        elif s.frame == "there":
            out += ["there", "is", *_np_tokens(s.np), "called", *name]
        elif s.frame == "appos":
            out += [*name, ",", *_np_tokens(s.np), ",", *_preds_tokens(s.preds)]
        elif s.frame == "front":
            out += [*s.front.tokens, ",", *name, *_preds_tokens(s.preds)]
        elif s.frame == "subject":
            out += [*(name if s.subject == "name" else [s.subject]), *_preds_tokens(s.preds)]
        else:
            out += list(s.standalone.tokens)
        out.append(".")
    return out


def _np_pairs(np: _NP) -> list[tuple[str, str]] | None:
    orders = [p.order for p in np.pre]
    if len(np.pre) > _MAX_PRE or len(np.post) > _MAX_POST or orders != sorted(set(orders)):
        return None
    pairs = [pair for p in (*np.pre, np.head, *np.post) for pair in p.assign]
    return pairs or None


def _check(name: tuple[str, ...], sentences: tuple[_Sentence, ...]) -> Record | None:
    """The record of a well-formed plan, or None. The one definition of well-formedness."""
    if name not in _NAME_TOKENS or not 1 <= len(sentences) <= _MAX_SENTENCES:
        return None
    values: dict[str, str] = {}
    numbers: set[str] = set()
    nps = 0
    for i, s in enumerate(sentences):
        if (i == 0) != (s.frame in _FIRST_FRAMES):
            return None
        number = "sing"
        if s.frame == "subject":
            if s.subject == "name":
                if len(name) < 2:
                    return None
            else:
                number = _PRONOUNS[s.subject]
                numbers.add(number)
        elif s.frame == "standalone":
            numbers.add("sing")
        pairs: list[tuple[str, str]] = []
        if s.np is not None:
            if (np_pairs := _np_pairs(s.np)) is None:
                return None
            pairs += np_pairs
            nps += 1
        if s.frame in ("plain", "appos", "front", "subject"):
            if not 1 <= len(s.preds) <= (1 if s.frame == "appos" else _MAX_PREDICATES):
                return None
            for p in s.preds:
                if isinstance(p, _NP):
                    if number != "sing" or (np_pairs := _np_pairs(p)) is None:
                        return None
                    pairs += np_pairs
                    nps += 1
                elif p.number != number:
                    return None
                else:
                    pairs += p.assign
        for p in (s.front, s.standalone):
            if p is not None:
                pairs += p.assign
        if not pairs:
            return None
        for attr, value in pairs:
            if attr in values:
                return None
            values[attr] = value
    if len(numbers) > 1 or nps > 1:
        return None
    return Record(name=_NAME_TOKENS[name], **values)


# ---------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------


def _split(items: list, parts: int, rng: random.Random) -> list[list]:
    cuts = sorted(rng.sample(range(1, len(items)), parts - 1))
    return [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)])]


def _sample_np(attrs: list[str], record: Record, rng: random.Random) -> _NP:
    heads = _HEAD_BY[(("eat_type", record.eat_type),) if "eat_type" in attrs else ()]
    pre, post = [], []
    for a in attrs:
        if a == "eat_type":
            continue
        key = ((a, getattr(record, a)),)
        before, after = _PRE_BY.get(key, []), _POST_BY.get(key, [])
        use_pre = bool(before) and (not after or rng.random() < 0.5)
        if use_pre and len(pre) >= _MAX_PRE and after:  # steer away from the limits
            use_pre = False
        elif not use_pre and len(post) >= _MAX_POST and before:
            use_pre = True
        (pre if use_pre else post).append(rng.choice(before if use_pre else after))
    pre.sort(key=lambda p: p.order)
    rng.shuffle(post)
    return _NP(tuple(pre), rng.choice(heads), tuple(post))


def _sample_preds(attrs: list[str], record: Record, number: str, rng: random.Random,
                  np_free: list[bool], most: int = _MAX_PREDICATES) -> tuple | None:
    """At most `most` predicates for `attrs`: single-attribute verb phrases, maybe the
    price + food verb phrase, maybe the description's one NP (`np_free[0]`: still unused)."""
    attrs = list(attrs)
    rng.shuffle(attrs)
    pair = (_VP_BY[number].get(_key((a, getattr(record, a)) for a in ("price_range", "food")), [])
            if "price_range" in attrs and "food" in attrs else [])
    can_np = number == "sing" and np_free[0]
    if "eat_type" in attrs and not can_np:
        return None  # only an NP head states an eat type
    preds, rest = [], attrs
    if can_np and ("eat_type" in attrs or len(attrs) - bool(pair) > most or rng.random() < 0.4):
        others = [a for a in attrs if a != "eat_type"]
        least = max(int("eat_type" not in attrs), len(others) - bool(pair) - (most - 1))
        if least > len(others):
            return None
        k = rng.randint(least, len(others))
        preds.append(_sample_np([a for a in attrs if a == "eat_type"] + others[:k], record, rng))
        np_free[0] = False
        rest = others[k:]
    if pair and "price_range" in rest and "food" in rest and (rng.random() < 0.5 or len(preds) + len(rest) > most):
        preds.append(rng.choice(pair))
        rest = [a for a in rest if a not in ("price_range", "food")]
    for a in rest:
        vps = _VP_BY[number].get(((a, getattr(record, a)),))
        if not vps:
            return None
        preds.append(rng.choice(vps))
    if not 1 <= len(preds) <= most:
        return None
    rng.shuffle(preds)
    return tuple(preds)


def _sample_plan(record: Record, rng: random.Random) -> tuple[_Sentence, ...] | None:
    """A random plan for `record`; possibly ill-formed (the caller checks)."""
    attrs = [a for a in _OPTIONAL if getattr(record, a) is not None]
    rng.shuffle(attrs)
    if "eat_type" in attrs and rng.random() < 0.7:  # usually say what it is up front
        attrs.remove("eat_type")
        attrs.insert(0, "eat_type")
    weights = (0.4, 0.4, 0.2)[: min(_MAX_SENTENCES, len(attrs))]
    groups = _split(attrs, rng.choices(range(1, len(weights) + 1), weights)[0], rng)
    number = "plur" if rng.random() < 0.3 else "sing"
    multi_word_name = len(record.name.split()) > 1
    np_free = [True]

    first = groups[0]
    fronts = [a for a in first if a in ("area", "near")] if len(first) > 1 else []
    frames = [f for f in _FIRST_FRAMES if f in ("plain", "there") or len(first) > 1 and (f == "appos" or fronts)]
    frame = rng.choices(frames, [_FRAME_WEIGHTS[_FIRST_FRAMES.index(f)] for f in frames])[0]
    if frame in ("there", "appos"):
        np_free[0] = False
    if frame == "plain":
        s = _Sentence("plain", preds=_sample_preds(first, record, "sing", rng, np_free))
    elif frame == "there":
        s = _Sentence("there", np=_sample_np(first, record, rng))
    elif frame == "appos":
        rng.shuffle(first)
        cut = len(first) - (2 if len(first) > 2 and rng.random() < 0.3 else 1)
        s = _Sentence("appos", np=_sample_np(first[:cut], record, rng),
                      preds=_sample_preds(first[cut:], record, "sing", rng, np_free, most=1))
    else:
        a = rng.choice(fronts)
        s = _Sentence("front", front=rng.choice(_FRONT_BY[((a, getattr(record, a)),)]),
                      preds=_sample_preds([b for b in first if b != a], record, "sing", rng, np_free))
    sentences = [s]

    for group in groups[1:]:
        standalone = _STANDALONE_BY.get(((group[0], getattr(record, group[0])),), []) if len(group) == 1 else []
        if standalone and number == "sing" and rng.random() < 0.3:
            sentences.append(_Sentence("standalone", standalone=rng.choice(standalone)))
            continue
        if multi_word_name and rng.random() < 0.2:
            subject, subject_number = "name", "sing"
        else:
            subject, subject_number = ("it", "sing") if number == "sing" else ("they", "plur")
        sentences.append(_Sentence("subject", subject=subject,
                                   preds=_sample_preds(group, record, subject_number, rng, np_free)))
    if any(s.frame != "there" and s.frame != "standalone" and s.preds is None for s in sentences):
        return None
    return tuple(sentences)


def _realise(record: Record, rng: random.Random, max_tokens: int, max_tries: int) -> str | None:
    name = tuple(record.name.split())
    for _ in range(max_tries):
        plan = _sample_plan(record, rng)
        if plan is None:
            continue
        tokens = _render(name, plan)
        if len(tokens) <= max_tokens and _check(name, plan) == record:
            return " ".join(tokens)
    return None


def _check_max_tokens(max_tokens: int) -> None:
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")


def realise(record: Record, rng: random.Random, max_tokens: int = 40, max_tries: int = 1000) -> str:
    """One random description of `record`, at most `max_tokens` tokens long."""
    if not isinstance(record, Record):
        raise TypeError(f"realise expects a Record, got {type(record).__name__}")
    _check_max_tokens(max_tokens)
    text = _realise(record, rng, max_tokens, max_tries)
    if text is None:
        raise ValueError(f"could not realise {record.to_mr()!r} in at most max_tokens={max_tokens} tokens "
                         f"after {max_tries} tries; raise max_tokens or lower max_attributes")
    return text


def generate(n: int, seed: int = 0, min_attributes: int = 2, max_attributes: int = 6,
             max_tokens: int = 40) -> list[tuple[str, Record]]:
    """`n` (description, record) pairs; the same arguments give the same pairs everywhere.

    A record that finds no description within `max_tokens` (only likely below about 32
    tokens with six attributes) is replaced by a fresh random record.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    _check_counts(min_attributes, max_attributes)
    _check_max_tokens(max_tokens)
    rng = random.Random(seed)
    out: list[tuple[str, Record]] = []
    misses = 0
    while len(out) < n:
        record = random_record(rng, min_attributes, max_attributes)
        text = _realise(record, rng, max_tokens, 200)
        if text is not None:
            out.append((text, record))
            misses = 0
        elif (misses := misses + 1) >= 100:
            raise ValueError(f"max_tokens={max_tokens} is too small for records of {min_attributes} to "
                             f"{max_attributes} attributes; raise max_tokens or lower max_attributes")
    return out


def corpus_texts(n: int, seed: int = 0, min_attributes: int = 2, max_attributes: int = 6,
                 max_tokens: int = 40) -> list[str]:
    """Just the descriptions of `generate`."""
    return [text for text, _ in generate(n, seed, min_attributes, max_attributes, max_tokens)]


# ---------------------------------------------------------------------------------------
# Parser: read candidate plans off the tokens, keep those `_check` accepts and `_render`
# reproduces. "." ends sentences and "," / "and" only separate predicates (or frame
# parts), so most of the work is exact dictionary lookups of phrase token tuples.
# ---------------------------------------------------------------------------------------


def _parse_nps(t: tuple[str, ...]) -> Iterator[_NP]:
    if len(t) < 2 or t[0] not in ("a", "an"):
        return

    def post(i: int, pre: tuple, head: _Phrase, acc: tuple) -> Iterator[_NP]:
        if i == len(t):
            yield _NP(pre, head, acc)
        elif len(acc) < _MAX_POST:
            for j, p in _POST_TRIE.matches(t, i):
                yield from post(j, pre, head, acc + (p,))

    def premods(i: int, acc: tuple) -> Iterator[_NP]:
        for j, h in _HEAD_TRIE.matches(t, i):
            yield from post(j, acc, h, ())
        if len(acc) < _MAX_PRE:
            for j, p in _PRE_TRIE.matches(t, i):
                if not acc or p.order > acc[-1].order:
                    yield from premods(j, acc + (p,))

    yield from premods(1, ())


def _parse_preds(t: tuple[str, ...], number: str) -> Iterator[tuple]:
    cuts = [i for i, tok in enumerate(t) if tok in _SEPARATORS]
    if tuple(t[i] for i in cuts) not in ((), ("and",), (",", "and")):
        return
    options = []
    for a, b in zip([-1, *cuts], [*cuts, len(t)]):
        seg = t[a + 1:b]
        opts: list = list(_VP_AT[number].get(seg, ()))
        if number == "sing" and seg[:1] == ("is",):
            opts.extend(_parse_nps(seg[1:]))
        if not opts:
            return
        options.append(opts)
    yield from itertools.product(*options)


def _names_at_start(t: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for n in _NAME_LENGTHS:
        if t[:n] in _NAME_TOKENS:
            yield t[:n]


def _parse_first(t: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], _Sentence]]:
    for name in _names_at_start(t):
        rest = t[len(name):]
        for preds in _parse_preds(rest, "sing"):
            yield name, _Sentence("plain", preds=preds)
        if rest[:1] == (",",) and "," in rest[1:]:
            k = rest.index(",", 1)
            for np in _parse_nps(rest[1:k]):
                for preds in _parse_preds(rest[k + 1:], "sing"):
                    yield name, _Sentence("appos", np=np, preds=preds)
    if t[:2] == ("there", "is") and "called" in t:
        c = t.index("called")
        if t[c + 1:] in _NAME_TOKENS:
            for np in _parse_nps(t[2:c]):
                yield t[c + 1:], _Sentence("there", np=np)
    if "," in t:
        j = t.index(",")
        for front in _FRONT_AT.get(t[:j], ()):
            for name in _names_at_start(t[j + 1:]):
                for preds in _parse_preds(t[j + 1 + len(name):], "sing"):
                    yield name, _Sentence("front", front=front, preds=preds)


def _parse_later(t: tuple[str, ...], name: tuple[str, ...]) -> Iterator[_Sentence]:
    for p in _STANDALONE_AT.get(t, ()):
        yield _Sentence("standalone", standalone=p)
    if t[:1] and t[0] in _PRONOUNS:
        for preds in _parse_preds(t[1:], _PRONOUNS[t[0]]):
            yield _Sentence("subject", subject=t[0], preds=preds)
    if t[:len(name)] == name:
        for preds in _parse_preds(t[len(name):], "sing"):
            yield _Sentence("subject", subject="name", preds=preds)


def _parses(text: str) -> Iterator[tuple[Record, tuple[str, ...], tuple[_Sentence, ...]]]:
    """Every (record, name, plan) that renders to `text` (more than one would be ambiguity)."""
    tokens = tuple(text.split())
    if not tokens or tokens[-1] != ".":
        return
    ends = [i for i, tok in enumerate(tokens) if tok == "."]
    if len(ends) > _MAX_SENTENCES:
        return
    sentences = [tokens[a + 1:b] for a, b in zip([-1, *ends], ends)]
    if not all(sentences):
        return
    for name, first in _parse_first(sentences[0]):
        for later in itertools.product(*(list(_parse_later(s, name)) for s in sentences[1:])):
            plan = (first, *later)
            record = _check(name, plan)
            if record is not None and tuple(_render(name, plan)) == tokens:
                yield record, name, plan


def parse(text: str, max_tokens: int | None = None) -> Record | None:
    """The record `text` describes, or None if it is not a well-formed description.

    Tokens are split on whitespace; case matters. With `max_tokens`, longer texts are
    rejected too (the generator's default limit is 40).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse expects a string, got {type(text).__name__}")
    if max_tokens is not None and len(text.split()) > max_tokens:
        return None
    return next((record for record, _, _ in _parses(text)), None)


def is_valid(text: str, max_tokens: int | None = None) -> bool:
    """Whether `text` is a well-formed description."""
    return parse(text, max_tokens) is not None


def validity(texts: Iterable[str], max_tokens: int | None = None) -> float:
    """Fraction of `texts` that are well-formed descriptions."""
    texts = list(texts)
    if not texts:
        raise ValueError("validity() needs at least one text, got none")
    return sum(is_valid(t, max_tokens) for t in texts) / len(texts)


def _all_phrases() -> Iterator[_Phrase]:
    yield from itertools.chain(*_VP_PHRASES.values(), _PRE_PHRASES, _HEAD_PHRASES, _POST_PHRASES,
                               _FRONT_PHRASES, _STANDALONE_PHRASES)


_FRAME_WORDS = ("there", "is", "called", "a", "an", *_PRONOUNS, *_SEPARATORS, ".")
_VOCABULARY = tuple(sorted({t for p in _all_phrases() for t in p.tokens}
                           | {t for n in _NAME_TOKENS for t in n} | set(_FRAME_WORDS)))


def vocabulary() -> list[str]:
    """Every token the generator can produce, sorted."""
    return list(_VOCABULARY)
