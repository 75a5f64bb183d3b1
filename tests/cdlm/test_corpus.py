"""The embedded corpus: generator, exact validator, records."""

import hashlib
import os
import random
import re
import statistics
import subprocess
import sys
import time

import pytest

from cdlm.data import corpus
from cdlm.data.corpus import (
    ATTRIBUTES,
    LANDMARKS,
    NAMES,
    VALUES,
    Record,
    corpus_texts,
    generate,
    is_valid,
    parse,
    random_record,
    realise,
    validity,
    vocabulary,
)

N_SAMPLE = 50_000


@pytest.fixture(scope="module")
def sample():
    return generate(N_SAMPLE, seed=0)


def tokens_of(text):
    return text.split()


def join(tokens):
    return " ".join(tokens)


# ------------------------------------------------------------------------- determinism


def test_same_seed_same_output_and_different_seed_different():
    assert generate(300, seed=3) == generate(300, seed=3)
    assert corpus_texts(300, seed=3) == [t for t, _ in generate(300, seed=3)]
    assert corpus_texts(300, seed=3) != corpus_texts(300, seed=4)
    assert random_record(random.Random(5)) == random_record(random.Random(5))


def test_output_does_not_depend_on_hash_seed_or_process():
    # Load the (standard-library only) module by path: importing the `cdlm` package pulls in torch.
    code = ("import hashlib, importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('corpus', {corpus.__file__!r}); "
            "m = sys.modules['corpus'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(hashlib.sha256('\\n'.join(m.corpus_texts(300, seed=7)).encode()).hexdigest())")
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        digests.add(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip())
    digests.add(hashlib.sha256("\n".join(corpus_texts(300, seed=7)).encode()).hexdigest())
    assert len(digests) == 1


# ------------------------------------------------------------------------- generator


def test_descriptions_are_clean_tokens_of_the_vocabulary(sample):
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    assert 150 <= len(vocab) <= 350
    assert all(re.fullmatch(r"[a-z0-9]+|[.,]", w) for w in vocab)
    seen = {w for text, _ in sample for w in tokens_of(text)}
    assert seen <= set(vocab)
    assert seen == set(vocab), f"listed but never generated: {sorted(set(vocab) - seen)}"
    assert all(text == " ".join(text.split()) for text, _ in sample[:2000])


def test_scale_and_length(sample):
    texts = [t for t, _ in sample]
    assert len(set(texts)) >= 0.9 * N_SAMPLE  # tens of thousands of distinct descriptions
    lengths = [len(tokens_of(t)) for t in texts]
    assert max(lengths) <= 40
    assert 15 <= statistics.mean(lengths) <= 30
    assert all(text.endswith(" .") for text in texts[:2000])


def test_records_respect_attribute_counts(sample):
    counts = [len(r.attributes()) - 1 for _, r in sample[:5000]]
    assert min(counts) == 2 and max(counts) == 6
    for lo, hi in ((1, 1), (7, 7), (3, 5)):
        for text, record in generate(200, seed=lo, min_attributes=lo, max_attributes=hi):
            assert lo <= len(record.attributes()) - 1 <= hi
            assert parse(text) == record


def test_max_tokens_is_respected():
    pairs = generate(1000, seed=1, max_tokens=26)
    assert max(len(tokens_of(t)) for t, _ in pairs) <= 26
    assert all(parse(t) == r for t, r in pairs)
    long = next(t for t, _ in generate(200, seed=2) if len(tokens_of(t)) > 20)
    assert parse(long, max_tokens=20) is None and parse(long) is not None


def test_realise_describes_the_record():
    rng = random.Random(0)
    record = Record(name="the eagle", food="italian", area="riverside")
    texts = {realise(record, rng) for _ in range(200)}
    assert len(texts) > 20  # many phrasings of one record
    assert all(parse(t) == record for t in texts)


@pytest.mark.parametrize("kwargs", [
    dict(n=-1), dict(n=3, min_attributes=0), dict(n=3, max_attributes=8),
    dict(n=3, min_attributes=4, max_attributes=3), dict(n=3, max_tokens=0), dict(n=3, max_tokens=4),
])
def test_generate_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate(**kwargs)


# ------------------------------------------------------------------------- validator


def test_every_description_parses_to_its_record(sample):
    for text, record in sample[:5000]:
        assert parse(text) == record, text
    assert validity(t for t, _ in sample[:5000]) == 1.0


def test_grammar_is_unambiguous(sample):
    # One derivation per text, so the record a text names cannot depend on parse order.
    for text, _ in sample[:1000]:
        assert len(list(corpus._parses(text))) == 1, text


def test_parse_is_fast(sample):
    texts = [t for t, _ in sample[:10_000]]
    start = time.perf_counter()
    assert validity(texts) == 1.0
    assert time.perf_counter() - start < 5.0  # about 0.3 s on a laptop core


@pytest.mark.parametrize("text, expected", [
    ("the eagle is near the bakers .", Record(name="the eagle", near="the bakers")),
    ("the eagle is a cheap pub in the city centre .",
     Record(name="the eagle", eat_type="pub", price_range="cheap", area="city centre")),
    ("the eagle is a pub near the bakers . it serves cheap italian food .",
     Record(name="the eagle", eat_type="pub", near="the bakers", food="italian", price_range="cheap")),
    ("zizzi is an italian place . they are not family friendly .",
     Record(name="zizzi", food="italian", family_friendly="no")),
    ("there is a coffee shop called blue spice .", Record(name="blue spice", eat_type="coffee shop")),
])
def test_known_good_descriptions(text, expected):
    assert parse(text) == expected
    assert is_valid(text)


@pytest.mark.parametrize("text", [
    "", ".", "the eagle", "the eagle .", "is near the bakers .",
    "the eagle is near the .",  # a word of a multi-word value dropped
    "the eagle is near the bakers",  # no final "."
    "the eagle is near bakers the .",  # wrong order inside a value
    "the eagle is a italian pub .", "the eagle is an cheap pub .",  # article
    "the eagle is an pub .", "the eagle is a pub italian .",  # order inside the noun phrase
    "the eagle is near the bakers . it is near the bakers .",  # attribute twice
    "the eagle is near the bakers and is close to burger king .",  # contradiction
    "the eagle is near the eagle .",  # a name is not a landmark
    "the eagle is a pub . they serve italian food . it is cheap .",  # pronouns disagree
    "the eagle is a pub . it serve italian food .",  # agreement
    "the eagle is a pub and is an italian place .",  # two noun phrases
    "zizzi is a pub . zizzi serves italian food .",  # a one-word name is not repeated
    "the eagle is a pub , serves italian food .",  # list punctuation
    "the eagle , a pub , serves italian food and is cheap .",  # apposition takes one predicate
    "the eagle is a pub . . it is cheap .", "the eagle is a pub . it is cheap . .",
    "The eagle is a pub .", "the eagle is a pub xyzzy .",
    "the eagle is a pub . it is cheap . it is near the bakers . it serves italian food .",  # 4 sentences
])
def test_known_bad_descriptions(text):
    assert parse(text) is None
    assert not is_valid(text)


def multiword_spans(tokens, record):
    """Token positions of every multi-word attribute value occurring in the text."""
    spans = []
    for value in record.attributes().values():
        words = value.split()
        if len(words) < 2:
            continue
        for i in range(len(tokens) - len(words) + 1):
            if tokens[i:i + len(words)] == words:
                spans.append(range(i, i + len(words)))
    return spans


def test_dropping_a_word_of_a_multiword_value_is_always_rejected(sample):
    checked = 0
    for text, record in sample[:2000]:
        tokens = tokens_of(text)
        for span in multiword_spans(tokens, record):
            for i in span:
                assert parse(join(tokens[:i] + tokens[i + 1:])) is None, (text, i)
                checked += 1
    assert checked > 5000


def test_single_token_edits_never_keep_the_record(sample):
    """A dropped, swapped, substituted or inserted token is rejected or names another record."""
    rng = random.Random(0)
    vocab = vocabulary()
    outcome = {kind: [0, 0] for kind in ("drop", "swap", "substitute", "insert")}  # [rejected, tried]
    for text, record in sample[:300]:
        tokens = tokens_of(text)
        edits = [("drop", tokens[:i] + tokens[i + 1:]) for i in range(len(tokens))]
        edits += [("swap", tokens[:i] + [tokens[i + 1], tokens[i]] + tokens[i + 2:])
                  for i in range(len(tokens) - 1) if tokens[i] != tokens[i + 1]]
        for _ in range(30):
            i, w = rng.randrange(len(tokens)), rng.choice(vocab)
            if w != tokens[i]:
                edits.append(("substitute", tokens[:i] + [w] + tokens[i + 1:]))
            i = rng.randrange(len(tokens) + 1)
            edits.append(("insert", tokens[:i] + [rng.choice(vocab)] + tokens[i:]))
        for kind, edited in edits:
            got = parse(join(edited))
            assert got != record, (kind, text, join(edited))
            outcome[kind][0] += got is None
            outcome[kind][1] += 1
    rate = {kind: rejected / tried for kind, (rejected, tried) in outcome.items()}
    assert rate["swap"] == 1.0, rate  # word order inside phrases is fixed
    assert rate["substitute"] > 0.99, rate  # the rest name a different value ("italian" -> "french")
    assert rate["insert"] > 0.99, rate
    assert rate["drop"] > 0.95, rate  # e.g. dropping "not" or "cheap" in "serves cheap italian food"


def test_truncation(sample):
    for text, record in sample[:500]:
        tokens = tokens_of(text)
        for i in range(1, len(tokens)):
            got = parse(join(tokens[:i]))
            if tokens[i - 1] != ".":
                assert got is None, join(tokens[:i])
            else:  # whole sentences: a description of part of the record
                assert got is not None and got != record
                assert got.attributes().items() < record.attributes().items()


def test_missing_final_period_or_name(sample):
    for text, record in sample[:1000]:
        tokens = tokens_of(text)
        assert parse(join(tokens[:-1])) is None
        assert parse(join(tokens[:-1] + [","])) is None
        name = record.name.split()
        i = next(i for i in range(len(tokens)) if tokens[i:i + len(name)] == name)
        assert parse(join(tokens[:i] + tokens[i + len(name):])) is None, text


def test_stray_tokens(sample):
    for text, _ in sample[:500]:
        assert parse(text + " it") is None
        assert parse(text + " .") is None
        assert parse(". " + text) is None
        assert parse("the " + text) is None
        tokens = tokens_of(text)
        i = len(tokens) // 2
        assert parse(join(tokens[:i] + ["xyzzy"] + tokens[i:])) is None
    rng = random.Random(1)
    vocab = vocabulary()
    assert not any(is_valid(" ".join(rng.choices(vocab, k=15)) + " .") for _ in range(500))


# An extra sentence stating one attribute (any value): a duplicate or a contradiction when
# the record already has that attribute, a valid extension when it does not.
EXTRA = {
    "food": "serves italian food", "price_range": "costs less than 20 pounds",
    "customer_rating": "is rated 5 out of 5", "area": "is in the city centre",
    "family_friendly": "is family friendly", "near": "is near the bakers",
}


def test_duplicate_or_contradictory_attribute_is_rejected(sample):
    extended = 0
    for text, record in sample[:2000]:
        if text.count(".") == 3 or "they" in text.split():
            continue
        for attr, phrase in EXTRA.items():
            got = parse(f"{text} it {phrase} .")
            if getattr(record, attr) is not None:
                assert got is None, f"{text} it {phrase} ."
            else:
                assert got == Record(**{**record.attributes(), **parse(f"{record.name} {phrase} .").attributes()})
                extended += 1
    assert extended > 1000


def test_phrasings_of_one_fact_differ_by_at_least_two_edits():
    """The design rule that makes single-token edits detectable (see the module docstring)."""

    def distance(a, b):  # Damerau-Levenshtein (optimal string alignment) over tokens
        d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
                if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
        return d[-1][-1]

    tables = [*corpus._VP_BY.values(), corpus._PRE_BY, corpus._HEAD_BY, corpus._POST_BY,
              corpus._FRONT_BY, corpus._STANDALONE_BY]
    for table in tables:
        for assign, phrases in table.items():
            for i, p in enumerate(phrases):
                for q in phrases[i + 1:]:
                    assert distance(p.tokens, q.tokens) >= 2, (assign, p.tokens, q.tokens)
    for sing, plur in zip(corpus._VP_PHRASES["sing"], corpus._VP_PHRASES["plur"]):
        assert sing.tokens != plur.tokens  # "it" -> "they" alone never stays valid


def test_validity():
    good = corpus_texts(10, seed=0)
    assert validity(good) == 1.0
    assert validity(good + ["the eagle is near the ."] * 10) == 0.5
    with pytest.raises(ValueError):
        validity([])
    with pytest.raises(TypeError):
        parse(None)


# ------------------------------------------------------------------------- records


def test_values_and_names():
    assert ATTRIBUTES == ("name", "eat_type", "food", "price_range", "customer_rating", "area",
                          "family_friendly", "near")
    assert not set(NAMES) & set(LANDMARKS)
    assert 20 <= len(NAMES) and 15 <= len(LANDMARKS)
    assert {1, 2, 3} == {len(n.split()) for n in NAMES}
    assert set(VALUES) == set(ATTRIBUTES)


def test_mr_round_trip(sample):
    for _, record in sample[:2000]:
        assert Record.from_mr(record.to_mr()) == record
    record = Record(name="the eagle", eat_type="pub", near="the bakers")
    assert record.to_mr() == "name[the eagle], eatType[pub], near[the bakers]"
    assert record.attributes() == {"name": "the eagle", "eat_type": "pub", "near": "the bakers"}


def test_from_mr_reads_e2e_spelling():
    mr = ("name[The Eagle], eatType[coffee shop], food[Japanese], priceRange[less than £20], "
          "customer rating[low], area[riverside], familyFriendly[yes], near[Burger King]")
    assert Record.from_mr(mr) == Record(
        name="the eagle", eat_type="coffee shop", food="japanese", price_range="less than 20 pounds",
        customer_rating="low", area="riverside", family_friendly="yes", near="burger king")


@pytest.mark.parametrize("mr, names", [
    ("name[the eagle], food[pizza]", "pizza"),
    ("name[the eagle], colour[red]", "colour"),
    ("food[italian]", "no name"),
    ("name[the eagle] food[italian]", "food[italian]"),
    ("name[the eagle],", "trailing"),
    ("name[the eagle], name[the mill]", "twice"),
    ("name[nowhere]", "nowhere"),
])
def test_from_mr_names_the_bad_piece(mr, names):
    with pytest.raises(ValueError, match=re.escape(names)):
        Record.from_mr(mr)


def test_record_rejects_unknown_values():
    with pytest.raises(ValueError, match="pizza"):
        Record(name="the eagle", food="pizza")
    with pytest.raises(ValueError, match="nowhere"):
        Record(name="nowhere")
    with pytest.raises(ValueError):
        random_record(random.Random(0), min_attributes=0)
