import json

import lightning as L
import pytest
import torch

from cdlm import MaskedDiffusionLM, TextDataModule
from cdlm.checkpoints import load_checkpoint
from cdlm.cli import main
from cdlm.control.constraints import build_constraints
from cdlm.sampling.settings import MASKED_METHODS as METHODS
from tests.cdlm.conftest import fails


@pytest.fixture(scope="module")
def dm():
    return TextDataModule(num_examples=64, batch_size=8)


def tiny_model(dm, **kw):
    args = dict(network={"width": 32, "depth": 1, "heads": 2}, optim={"warmup_steps": 5}, val_samples=0, sampler={"steps": 10})
    args.update(kw)
    return MaskedDiffusionLM(tokenizer_json=dm.tokenizer_json(), seq_len=dm.hparams.seq_len, **args)


class Factorised(torch.nn.Module):
    """Predicts the target's own p_i [L, V] at every position whatever it sees: for a target whose
    positions are independent, the exact model, for which the NELBO is tight."""

    def __init__(self, log_p: torch.Tensor):
        super().__init__()
        self.log_p = torch.nn.Parameter(log_p, requires_grad=False)

    def forward(self, z, attribute_rows=None):
        return self.log_p.expand(z.shape[0], -1, -1)


class AllEqual(torch.nn.Module):
    """The exact model of "every position holds the same token, `a` or `b` with even odds": a
    masked position predicts the token already decided, or either at even odds if none is."""

    def __init__(self, mask_id: int, vocab_size: int, a: int, b: int):
        super().__init__()
        self.mask_id, self.vocab_size, self.a, self.b = mask_id, vocab_size, a, b
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # where the samplers find the device

    def forward(self, z, attribute_rows=None):
        logits = torch.full((*z.shape, self.vocab_size), float("-inf"))
        decided = (z != self.mask_id).any(1)
        first = z.gather(1, (z != self.mask_id).long().argmax(1, keepdim=True))[:, 0]  # a decided token
        for token in (self.a, self.b):
            logits[..., token] = torch.where(decided[:, None] & (first[:, None] != token), float("-inf"), 0.0)
        return logits


def calls_of(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("objective, schedule", [("mdlm", "log_linear"), ("mdlm", "cosine"), ("llada", "log_linear")])
def test_nelbo_is_exact_for_an_exact_model_of_a_factorised_target(dm, objective, schedule):
    torch.manual_seed(0)
    model = tiny_model(dm, training={"objective": objective, "schedule": schedule})
    V, L = model.tokenizer.get_vocab_size(), model.hparams.seq_len
    log_p = (2 * torch.randn(L, V)).log_softmax(-1)
    model.net = model.ema = Factorised(log_p)
    ids = torch.distributions.Categorical(logits=log_p).sample((256,))  # [256, L]
    exact = -log_p.gather(1, ids.T).sum(0).double()  # Σ_i -log p_i(w_i) per sequence

    def close(estimate):  # the mean difference within 4 standard errors
        diff = estimate.double() - exact
        assert abs(diff.mean()) < 4 * diff.std() / len(diff) ** 0.5, (diff.mean(), diff.std())

    close(model.nll_bound(ids, num_times=8))
    # the training objective estimates the same NELBO, whatever the schedule's weights
    close(torch.stack([model.nelbo_terms(model.net, ids) for _ in range(8)]).mean(0))


@pytest.mark.slow
def test_samplers_decide_each_token_given_those_decided_before(dm):
    model = tiny_model(dm)
    a, b = (model.tokenizer.token_to_id(w) for w in ("pub", "cafe"))
    model.ema = AllEqual(model.mask_id, model.tokenizer.get_vocab_size(), a, b)
    for method, steps in (("ancestral", 4000), ("low_confidence", 40), ("semi_ar", 40), ("threshold", 40)):
        ids = model.sample_ids(32, seed=0, method=method, steps=steps).ids
        assert (ids == ids[:, :1]).all(), method  # one token throughout: never two decided independently
        assert set(ids[:, 0].tolist()) == {a, b}, method  # and both, at the model's odds


def test_network_sees_both_ways_and_never_predicts_the_mask(dm):
    model = tiny_model(dm)
    V = model.tokenizer.get_vocab_size()
    z = torch.full((1, 40), model.mask_id)
    changed = z.clone()
    changed[0, -1] = 5
    out = model.net(z)
    assert model.mask_id == V and out.shape == (1, 40, V)  # logits over the vocabulary only (SUBS)
    assert not torch.allclose(out[0, 0], model.net(changed)[0, 0])  # the last position reaches the first


def test_nfe_is_the_number_of_network_calls_and_ancestral_caching_saves_calls(dm):
    model = tiny_model(dm)
    calls = calls_of(model.ema)
    for method in METHODS:
        for steps in (5, 40):
            calls.clear()
            gen = model.sample_ids(3, seed=0, method=method, steps=steps)
            assert gen.nfe == len(calls) > 0, (method, steps)
    # a step that unmasks nothing reuses the last call: one sequence of 40 tokens makes at most 40
    calls.clear()
    gen = model.sample_ids(1, seed=0, method="ancestral", steps=500)
    assert gen.nfe == len(calls) <= 40
    # threshold 0 keeps every prediction at once: one call a block
    assert model.sample_ids(2, seed=0, method="threshold", threshold=0.0, block_length=40).nfe == 1
    calls.clear()
    assert model.sample_ids(2, seed=0, method="low_confidence", steps=10).nfe == 10 == len(calls)


def test_guidance_costs_two_calls_a_step(dm):
    model = tiny_model(dm, attribute_names=["food=french", "area=riverside"])
    calls = calls_of(model.ema)
    one = model.sample_ids(2, seed=0, method="low_confidence", steps=6, attributes={"food": "french"})
    assert one.nfe == len(calls) == 6
    calls.clear()
    two = model.sample_ids(2, seed=0, method="low_confidence", steps=6, attributes={"food": "french"}, guidance_scale=3.0)
    assert two.nfe == len(calls) == 12
    ids, mask = torch.randint(0, 100, (4, 40)), torch.ones(4, 40, dtype=torch.bool)
    loss = model._loss((ids, mask, torch.tensor([[1.0, 0.0]] * 4)), "train")  # a conditioned batch trains
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("method", METHODS)
def test_control_holds_on_every_sampler(dm, method):
    model = tiny_model(dm, length_counts=dm.length_counts())
    tok, pad = model.tokenizer, model.pad_id
    for temperature in (1.0, 0.0):
        for control in ({"anchors": {0: "the", 5: "pub"}}, {"template": "the ___ is a ___ pub ."},
                        {"prefix": "the eagle", "suffix": ".", "length": 12}):
            ids = model.sample_ids(16, seed=1, method=method, temperature=temperature, **control).ids
            c = build_constraints(tok, 40, control.get("anchors"), control.get("prefix"), control.get("suffix"),
                                  control.get("template"), control.get("length"))
            assert c.satisfied(ids).all(), (method, control)
        ids = model.sample_ids(16, seed=2, method=method, temperature=temperature, length="data", anchors={0: "the"}).ids
        lengths = model.data_lengths(16, seed=2)
        assert torch.equal((ids != pad).sum(1), lengths) and (ids[:, 0] == tok.token_to_id("the")).all()
        assert all((row[n:] == pad).all() for row, n in zip(ids, lengths.tolist()))  # text, then only padding


def test_same_seed_same_samples(dm):
    model = tiny_model(dm)
    for method in METHODS:
        a = model.sample_ids(4, seed=3, method=method)
        assert torch.equal(a.ids, model.sample_ids(4, seed=3, method=method).ids)
        assert not torch.equal(a.ids, model.sample_ids(4, seed=4, method=method).ids)
        chunked = model.sample_ids(4, seed=3, method=method, batch_size=4)
        assert torch.equal(a.ids, chunked.ids)


def test_bad_options_are_one_line_errors(dm):
    model = tiny_model(dm)
    bad = [
        (dict(method="nope"), "unknown method 'nope'; available: ancestral, low_confidence, semi_ar, threshold"),
        (dict(restarts=2), "cannot take restarts"),
        (dict(method="ancestral", block_length=4), "'ancestral' does not use block_length"),
        (dict(method="low_confidence", threshold=0.5), "does not use threshold"),
        (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
        (dict(method="semi_ar", steps=2), "steps=2 cannot cover 5 blocks"),
        (dict(attributes={"food": "french"}), "trained without attributes"),
        (dict(guidance_scale=2.0), "give attributes too"),
        (dict(length="long"), "neither a number of tokens"),
        (dict(length="data"), "no length distribution"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message) as err:
            model.sample_ids(2, **options)
        assert "\n" not in str(err.value)
    for kw, message in ((dict(training={"schedule": "zigzag"}), "unknown schedule 'zigzag'"),
                        (dict(training={"objective": "sedd"}), "unknown objective 'sedd'"),
                        (dict(sampler={"method": "ddim"}), "unknown method 'ddim'"),
                        (dict(sampler={"steps": 0}), "steps must be a positive integer")):
        with pytest.raises(ValueError, match=message):
            tiny_model(dm, **kw)


@pytest.mark.slow
def test_training_lowers_the_bound(tmp_path):
    L.seed_everything(0)
    data = TextDataModule(num_examples=256, batch_size=32)
    model = tiny_model(data, optim={"warmup_steps": 5, "lr": 3e-3})
    data.setup("fit")
    ids = next(iter(data.train_dataloader()))[0]

    def bound(use_ema):
        torch.manual_seed(0)
        return model.nll_bound(ids, num_times=4, use_ema=use_ema).mean().item()

    before = bound(True)
    L.Trainer(max_steps=60, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path).fit(model, data)
    assert 0 < bound(False) < 0.7 * before, (before, bound(False))


@pytest.fixture(scope="module")
def masked_ckpt(tmp_path_factory):
    """A checkpoint from a 30-step `cdlm fit --model cdlm.MaskedDiffusionLM`."""
    tmp = tmp_path_factory.mktemp("fit_masked")
    main([
        "fit", "--model=cdlm.MaskedDiffusionLM", "--data.num_examples=400", "--data.batch_size=16",
        "--model.network.width=32", "--model.network.depth=1", "--model.network.heads=2", "--model.optim.warmup_steps=5", "--model.val_samples=4",
        "--model.sampler.steps=10", "--trainer.max_steps=30", "--trainer.val_check_interval=15",
        "--trainer.check_val_every_n_epoch=null", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={tmp}/ckpt", "--trainer.callbacks.save_last=true",
    ])
    return tmp / "ckpt" / "last.ckpt"


def test_fit_writes_a_checkpoint_that_reloads_and_samples(masked_ckpt, tmp_path):
    model, data_hparams = load_checkpoint(str(masked_ckpt))
    assert type(model).__name__ == "MaskedDiffusionLM" and data_hparams["dataset"] == "embedded"
    assert model.hparams.length_counts and model.hparams.sampler["steps"] == 10
    state = torch.load(masked_ckpt, weights_only=True)["state_dict"]
    assert not torch.equal(state["ema.embedding.weight"], state["net.embedding.weight"])  # EMA travels, and moved
    again = MaskedDiffusionLM.load_from_checkpoint(str(masked_ckpt))
    for method in METHODS:
        assert torch.equal(model.sample_ids(3, seed=0, method=method).ids, again.sample_ids(3, seed=0, method=method).ids)
    main(["export", "--ckpt_path", str(masked_ckpt), "--out", str(tmp_path / "exported")])
    exported = MaskedDiffusionLM.from_pretrained(str(tmp_path / "exported"))
    assert torch.equal(exported.sample_ids(3, seed=0).ids, model.sample_ids(3, seed=0).ids)
    texts = model.generate(3, seed=0, length="data")
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    data = TextDataModule(**data_hparams)
    data.setup("fit")
    nll = model.sequence_nll(next(iter(data.val_dataloader()))[0])
    assert nll.shape == (16,) and torch.isfinite(nll).all() and (nll > 0).all()


def test_sample_and_eval_commands(masked_ckpt, capsys):
    main(["sample", "--ckpt_path", str(masked_ckpt), "--num_samples", "3", "--method", "semi_ar", "--steps", "5",
          "--block_length", "10", "--template", "the ___ is a ___ ."])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("the ") for line in lines)
    main(["eval", "--ckpt_path", str(masked_ckpt), "--num_samples", "8", "--method", "low_confidence", "--steps", "8",
          "--nll_batches", "1"])
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "low_confidence" and result["nfe"] == 8 and result["nll_bits_per_token"] > 0
    main(["eval", "--ckpt_path", str(masked_ckpt), "--num_samples", "8", "--method", "threshold", "--threshold", "0.5",
          "--nll_batches", "0", "--length", "data"])
    result = json.loads(capsys.readouterr().out)
    assert result["threshold"] == 0.5 and result["block_length"] == 8 and 5 <= result["nfe"] <= 40
    assert "restarts" in fails(capsys, "sample", "--ckpt_path", str(masked_ckpt), "--restarts", "2")
    assert "does not use block_length" in fails(capsys, "sample", "--ckpt_path", str(masked_ckpt), "--block_length", "4")
