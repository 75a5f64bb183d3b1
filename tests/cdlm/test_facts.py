"""The facts corpus: deterministic, one answer per question, and the held-out facts really held out."""

from cdlm.data import facts


def test_world_is_deterministic_and_true():
    a, b = facts.build_world(seed=3), facts.build_world(seed=3)
    assert a.texts == b.texts and a.texts != facts.build_world(seed=4).texts
    assert all(a.is_true(t) for t in a.texts)
    assert len(set(a.people)) == len(a.people)


def test_questions_have_one_answer_and_reverses_are_held_out():
    w = facts.build_world()
    seen = set(w.texts)
    qs = w.reversal_questions()
    held = [q for q in qs if q.kind == "reverse (held out)"]
    assert len(held) == len(w.reversal["forward_only"]) > 0
    assert all(q.text not in seen for q in held)  # the curse is measurable only if never trained on
    assert all(q.text in seen for q in qs if q.kind != "reverse (held out)")
    for q in held:  # the infilling form states the seen forward fact with the answer blanked
        assert q.template.replace("___ ___", q.answer) in seen
    for q in qs + w.hop_questions(5):
        parsed = facts.parse(q.text)
        assert parsed is not None and w.answer_of(parsed[0], parsed[1]) == q.answer


def test_hop_questions_cover_kinds_and_beyond_training_hops():
    w = facts.build_world(train_hops=2)
    qs = w.hop_questions(4, per_kind=8)
    kinds = {(q.kind, q.hops) for q in qs}
    assert {("forward", 4), ("backward", 4), ("mixed", 4), ("forward", 1)} <= kinds
    train_hops = {len(facts.parse(t)[0]) for t in w.texts}
    assert train_hops == {1, 2}
    assert all(q.text not in set(w.texts) for q in qs if q.hops > 1)  # test chains: no hop statements


def test_checker_rejects_wrong_statements():
    w = facts.build_world()
    t = w.texts[0]
    words, start, end = facts.parse(t)
    other = next(p for p in w.people if p not in (start, end))
    assert not w.is_true(t.replace(end, other))
    assert not w.is_true(facts.statement([facts.REVERSE[words[0]]], start, end))  # the relation turned round
    assert facts.parse("the mentor of ada is omar lindqvist .") is None
    assert facts.parse(facts.statement(["mentor", "child"], start, end)) == (["mentor", "child"], start, end)
