import pytest

from cdlm.data.tokenizer import PAD, decode, encode, load_tokenizer, train_tokenizer

TEXTS = ["the eagle is a pub near the bakers .", "blue spice serves cheap french food .", "hello, world!\nsecond line"]


@pytest.mark.parametrize("kind", ["word", "bpe", "char"])
def test_round_trip(kind):
    tok = train_tokenizer(TEXTS, kind=kind, vocab_size=300)
    assert tok.token_to_id(PAD) == 0
    for text in TEXTS[:2] if kind == "word" else TEXTS:
        assert decode(tok, encode(tok, text)) == text


def test_json_round_trip_and_pad_cut(tmp_path):
    tok = train_tokenizer(TEXTS, kind="word")
    again = load_tokenizer(tok.to_str())
    ids = encode(again, TEXTS[0])
    assert ids == encode(tok, TEXTS[0])
    assert decode(again, ids + [0, 0, 5]) == TEXTS[0]  # generation ends at the first pad
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    assert encode(load_tokenizer(str(path)), TEXTS[1]) == encode(tok, TEXTS[1])


def test_bad_tokenizer_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer kind 'sentencepiece'"):
        train_tokenizer(TEXTS, kind="sentencepiece")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(str(bad))
