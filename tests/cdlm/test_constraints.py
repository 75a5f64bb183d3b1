import pytest
import torch

from cdlm.control.constraints import build_constraints, parse_anchor
from cdlm.data.tokenizer import train_tokenizer

TOK = train_tokenizer(["the eagle is a pub near the bakers .", "quantum entanglement is strange ."], kind="word")


def ids_of(*words):
    return [TOK.token_to_id(w) for w in words]


def test_anchors_template_prefix_suffix_length():
    c = build_constraints(TOK, 12, anchors={5: "quantum", 8: "entanglement"})
    assert c.known_ids[5] == TOK.token_to_id("quantum") and c.known_ids[8] == TOK.token_to_id("entanglement")
    assert (c.known_ids >= 0).sum() == 2 and c.logit_bias is None
    c = build_constraints(TOK, 12, template="the ___ is a ___ .")
    assert c.known_ids[:6].tolist() == [ids_of("the")[0], -1, *ids_of("is", "a"), -1, ids_of(".")[0]]
    assert (c.known_ids[6:] == 0).all()  # exactly the template's length: padding after
    assert torch.isinf(c.logit_bias[:6, 0]).all() and not torch.isinf(c.logit_bias[6:]).any()
    c = build_constraints(TOK, 12, prefix="the eagle", suffix="bakers .", length=9)
    assert c.known_ids[:2].tolist() == ids_of("the", "eagle") and c.known_ids[7:9].tolist() == ids_of("bakers", ".")
    ids = torch.where(c.known_ids >= 0, c.known_ids, TOK.token_to_id("pub"))[None]
    assert c.satisfied(ids).all() and not c.satisfied(torch.zeros_like(ids)).any()
    early_end = ids.clone()
    early_end[0, 4] = 0  # a pad before the length ends the text early: banned
    assert not c.satisfied(early_end).any()


def test_bad_constraints_are_named():
    with pytest.raises(ValueError, match="does not fit in the sequence length 12"):
        build_constraints(TOK, 12, anchors={12: "pub"})
    with pytest.raises(ValueError, match="'zyzzyva' cannot be produced"):
        build_constraints(TOK, 12, anchors={1: "zyzzyva"})
    with pytest.raises(ValueError, match="two anchors on position 3"):
        build_constraints(TOK, 12, anchors=[(3, "pub"), (3, "the")])
    with pytest.raises(ValueError, match="has no blank"):
        build_constraints(TOK, 12, template="the eagle is a pub .")
    with pytest.raises(ValueError, match="beyond the length 4"):
        build_constraints(TOK, 12, anchors={6: "pub"}, length=4)
    with pytest.raises(ValueError, match="both claim position 0"):
        build_constraints(TOK, 12, prefix="the", anchors={0: "pub"})
    with pytest.raises(ValueError, match="is not POSITION=WORD"):
        parse_anchor("quantum")
    assert parse_anchor("5=quantum") == (5, "quantum")
