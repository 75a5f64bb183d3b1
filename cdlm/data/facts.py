"""The embedded facts corpus: invented people, one-to-one relations phrased both ways, and
chains of them, with an exact checker. It tests the reversal curse and multi-hop reasoning.

A *world* is a set of chains of distinct people p0 - p1 - ... - pn. Each link holds one
relation, e.g. "the mentor of p0 is p1", whose reverse phrasing is "the student of p1 is p0".
Every person sits in one chain, so each (person, relation word) names at most one person and
every question has exactly one answer.

    the mentor of ada kowalski is omar lindqvist .        (a link, forward phrasing)
    the student of omar lindqvist is ada kowalski .       (the same link, reversed)
    the parent of the mentor of ada kowalski is ...       (two hops)

Splits, fixed by the seed:
- *reversal* links: `both` are seen in both phrasings; `forward_only` in the forward phrasing
  only, and their reversed phrasing is held out (the reversal-curse questions);
- *chains* for the hop questions: every link of every chain is seen in both phrasings; k-hop
  statements (k <= `train_hops`) of the `train` chains are training text, and k-hop questions
  over the `test` chains (any k) are held out. A question walks a chain *forward* (every hop a
  forward relation word), *backward* (every hop a reverse word) or *mixed* (some of each: the
  chains of mixed links point either way).

Text format: lowercase words and "." separated by single spaces; a name is two words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FIRST = (
    "ada", "omar", "lena", "yusuf", "mira", "tomas", "ines", "kofi", "sara", "ivan", "noor", "pablo", "hana",
    "felix", "zara", "marco", "leila", "anton", "priya", "jonas", "elif", "diego", "maya", "otto", "rosa",
    "samir", "vera", "nils", "aiko", "bruno",
)
LAST = (
    "kowalski", "lindqvist", "okafor", "moreau", "tanaka", "petrov", "silva", "haddad", "novak", "brennan",
    "castillo", "weber", "nakamura", "osei", "dubois", "rossi", "varga", "hansen", "mendes", "kaplan",
    "fischer", "ortiz", "yilmaz", "larsen", "costa", "ibrahim", "keller", "santos", "bauer", "sato",
)
# forward relation word -> the word of its reverse phrasing
RELATIONS = {"mentor": "student", "parent": "child", "manager": "employee"}
REVERSE = {**RELATIONS, **{v: k for k, v in RELATIONS.items()}}


def statement(words: list[str], start: str, end: str) -> str:
    """'the w_k of ... the w_1 of START is END .': hop words innermost first (w_1 applies to START)."""
    return " ".join(["the", *" of the ".join(reversed(words)).split(), "of", start, "is", end, "."])


def question(words: list[str], start: str) -> str:
    """The prompt of `statement`: everything before the answer."""
    return statement(words, start, "").rsplit(" ", 2)[0]


def parse(text: str) -> tuple[list[str], str, str] | None:
    """(hop words innermost first, start, end) of a statement, or None when it is not one."""
    tokens = text.split()
    if len(tokens) < 8 or tokens[-1] != "." or tokens[-4] != "is" or tokens[0] != "the":
        return None
    end, start, head = " ".join(tokens[-3:-1]), " ".join(tokens[-6:-4]), tokens[:-6]
    if len(head) % 3 or head[-1] != "of":
        return None
    hops = [head[i: i + 3] for i in range(0, len(head), 3)]
    if any(h[0] != "the" or h[2] != "of" or h[1] not in REVERSE for h in hops):
        return None
    return [h[1] for h in reversed(hops)], start, end


@dataclass
class Link:
    """`target` is the `relation` of `source`: 'the RELATION of SOURCE is TARGET .'"""

    source: str
    relation: str
    target: str

    def forward(self) -> str:
        return statement([self.relation], self.source, self.target)

    def reverse(self) -> str:
        return statement([RELATIONS[self.relation]], self.target, self.source)


@dataclass
class Question:
    prompt: str  # the words before the answer
    answer: str  # a two-word name
    kind: str  # e.g. "forward", "reverse", "backward", "mixed"
    hops: int = 1
    template: str | None = None  # the whole statement with the unknown name as "___ ___" (infilling form)

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer} ."


@dataclass
class World:
    people: list[str]
    reversal: dict[str, list[Link]]  # "both" / "forward_only"
    chains: dict[str, list[list[tuple[str, Link]]]]  # "train" / "test": chains of (kind, link) hops
    train_hops: int
    texts: list[str] = field(default_factory=list)  # the training text, one statement per line

    def answer_of(self, words: list[str], start: str) -> str | None:
        """Follow relation words from `start` through every link of the world (the exact checker)."""
        person = start
        for w in words:
            person = self._graph.get((person, w))
            if person is None:
                return None
        return person

    @property
    def _graph(self) -> dict:
        if not hasattr(self, "_graph_cache"):
            g = {}
            links = [*self.reversal["both"], *self.reversal["forward_only"],
                     *(l for split in self.chains.values() for chain in split for _, l in chain)]
            for l in links:
                g[(l.source, l.relation)] = l.target
                g[(l.target, RELATIONS[l.relation])] = l.source
            self._graph_cache = g
        return self._graph_cache

    def is_true(self, text: str) -> bool:
        """Whether a text is a statement of the world that holds."""
        parsed = parse(text)
        return parsed is not None and self.answer_of(parsed[0], parsed[1]) == parsed[2]

    def reversal_questions(self) -> list[Question]:
        """Forward questions of forward-only links (seen), their reverse (held out) with an
        infilling form, and the reverse of links seen both ways (a control)."""
        out = []
        for split, links in self.reversal.items():
            for l in links:
                if split == "forward_only":
                    out.append(Question(question([l.relation], l.source), l.target, "forward (seen)"))
                rev = Question(question([RELATIONS[l.relation]], l.target), l.source,
                               "reverse (held out)" if split == "forward_only" else "reverse (seen)")
                rev.template = statement([l.relation], "___ ___", l.target)
                out.append(rev)
        return out

    def hop_questions(self, max_hops: int, per_kind: int = 64, seed: int = 0) -> list[Question]:
        """k-hop questions over the test chains, k = 1..max_hops, forward, backward and mixed."""
        rng, out = random.Random(seed), []
        for k in range(1, max_hops + 1):
            found: dict[str, list[Question]] = {"forward": [], "backward": [], "mixed": []}
            for chain in self.chains["test"]:
                for kind, q in _walks(chain, k):
                    found[kind].append(q)
            for kind, qs in found.items():
                out += rng.sample(qs, min(per_kind, len(qs)))
        return out


def _walks(chain: list[tuple[str, Link]], k: int):
    """(kind, Question) of every k-hop walk along a chain, in both directions."""
    people = [chain[0][1].source if chain[0][0] == "fwd" else chain[0][1].target]
    for orientation, l in chain:
        people.append(l.target if orientation == "fwd" else l.source)
    # the word that moves from people[i] to people[i+1], and back
    along = [l.relation if o == "fwd" else RELATIONS[l.relation] for o, l in chain]
    back = [REVERSE[w] for w in along]
    for i in range(len(people) - k):
        for words, start, end in ((along[i: i + k], people[i], people[i + k]),
                                  (back[i: i + k][::-1], people[i + k], people[i])):
            forward = [w in RELATIONS for w in words]
            kind = "forward" if all(forward) else "backward" if not any(forward) else "mixed"
            yield kind, Question(question(words, start), end, kind, hops=k)


def build_world(seed: int = 0, reversal_links: int = 120, chains: int = 60, chain_length: int = 6,
                train_hops: int = 2, train_chain_fraction: float = 0.5) -> World:
    """A deterministic world. Half the reversal links are seen both ways; chains alternate
    between all-forward links (clean forward/backward walks) and links pointing either way
    (mixed walks). Consecutive links of a chain use different relations."""
    rng = random.Random(seed)
    needed = 2 * reversal_links + chains * (chain_length + 1)
    names = [f"{f} {l}" for f in FIRST for l in LAST]
    if needed > len(names):
        raise ValueError(f"a world of {needed} people needs more than the {len(names)} names")
    people = rng.sample(names, needed)
    pool = iter(people)
    relations = list(RELATIONS)
    links = [Link(next(pool), rng.choice(relations), next(pool)) for _ in range(reversal_links)]
    half = reversal_links // 2
    reversal = {"both": links[:half], "forward_only": links[half:]}
    built = []
    for c in range(chains):
        persons = [next(pool) for _ in range(chain_length + 1)]
        chain, previous = [], None
        for a, b in zip(persons, persons[1:]):
            r = rng.choice([x for x in relations if x != previous])
            previous = r
            pointing = "fwd" if c % 2 == 0 or rng.random() < 0.5 else "bwd"
            chain.append((pointing, Link(a, r, b) if pointing == "fwd" else Link(b, r, a)))
        built.append(chain)
    cut = int(len(built) * train_chain_fraction)
    world = World(people, reversal, {"train": built[:cut], "test": built[cut:]}, train_hops)
    texts = [l.forward() for l in links] + [l.reverse() for l in reversal["both"]]
    for chain in built:
        texts += [t for _, l in chain for t in (l.forward(), l.reverse())]
    for chain in world.chains["train"]:
        for k in range(2, train_hops + 1):
            texts += [q.text for _, q in _walks(chain, k)]
    world.texts = texts
    return world


def held_out_texts(world: World) -> list[str]:
    """Validation text: true statements the training text lacks (held-out reverses and hops)."""
    seen = set(world.texts)
    qs = world.reversal_questions() + world.hop_questions(world.train_hops + 1, per_kind=10 ** 6)
    return sorted({q.text for q in qs} - seen)
