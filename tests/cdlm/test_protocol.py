"""The three language models keep one protocol: what the CLI, `evaluate` and the benchmarks rely on."""

import pytest
import torch

from cdlm import AutoregressiveLM, DiffusionLM, MaskedDiffusionLM, TextDataModule
from cdlm.control.constraints import build_constraints
from cdlm.control.request import Request
from cdlm.evaluation import evaluate

SIZES = dict(network={"width": 32, "depth": 1, "heads": 2}, optim={"warmup_steps": 5}, val_samples=0)
MODELS = {
    "continuous": lambda tok: DiffusionLM(tokenizer_json=tok, sampler={"steps": 4}, **{**SIZES, "network": {**SIZES["network"], "embed_dim": 8}}),
    "masked": lambda tok: MaskedDiffusionLM(tokenizer_json=tok, sampler={"steps": 8}, **SIZES),
    "autoregressive": lambda tok: AutoregressiveLM(tokenizer_json=tok, **SIZES),
}


@pytest.fixture(scope="module")
def data():
    dm = TextDataModule(num_examples=64, batch_size=8)
    dm.setup()
    return dm


@pytest.fixture(params=sorted(MODELS))
def model(request, data):
    torch.manual_seed(0)
    return MODELS[request.param](data.tokenizer_json()).eval()


def test_samples_are_ids_with_their_nfe_and_reproducible(model):
    a, b = model.sample_ids(3, seed=1), model.sample_ids(3, seed=1)
    assert a.ids.shape == (3, model.hparams.seq_len) and a.ids.dtype == torch.long
    assert torch.equal(a.ids, b.ids) and a.nfe >= 1
    assert len(model.generate(2, seed=0)) == 2


def test_sequence_nll_is_finite_and_positive(model, data):
    ids = next(iter(data.train_dataloader()))[0]
    nll = model.sequence_nll(ids)
    assert nll.shape == (len(ids),) and bool(torch.isfinite(nll).all()) and bool((nll > 0).all())


def test_the_report_names_the_sampler(model):
    report = model.sampler_report()
    assert {"method", "steps"} <= report.keys()
    assert model.left_to_right == isinstance(model, AutoregressiveLM)


def test_an_option_the_model_does_not_take_is_an_error(model):
    with pytest.raises(ValueError):
        model.sample_ids(2, seed=0, no_such_option=1)


def test_anchors_hold_or_the_model_says_it_cannot(model):
    anchors = {2: "pub", 5: "the"}
    if model.left_to_right:
        with pytest.raises(ValueError, match="cannot take anchors"):
            model.sample_ids(2, seed=0, anchors=anchors)
        return
    gen = model.sample_ids(4, seed=0, anchors=anchors, length=10)
    assert bool(build_constraints(model.tokenizer, model.hparams.seq_len, anchors, length=10).satisfied(gen.ids).all())


def test_evaluate_reports_the_same_keys(model, data):
    result = evaluate(model, Request(), num_samples=4, data=data, nll_batches=1)
    assert {"method", "nfe", "validity", "unique", "novel", "nll_bits_per_token", "nll_bits_per_char"} <= result.keys()
