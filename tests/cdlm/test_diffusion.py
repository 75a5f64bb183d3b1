import math

import lightning as L
import pytest
import torch

from cdlm import DiffusionLM, TextDataModule
from cdlm.checkpoints import load_checkpoint


def tiny_model(dm, **kw):
    args = dict(network={"width": 32, "depth": 1, "heads": 2, "embed_dim": 8}, optim={"warmup_steps": 5}, val_samples=0, sampler={"steps": 4})
    args.update(kw)
    return DiffusionLM(tokenizer_json=dm.tokenizer_json(), seq_len=dm.hparams.seq_len, **args)


@pytest.mark.slow
def test_loss_falls_on_a_tiny_run(tmp_path):
    L.seed_everything(0)
    dm = TextDataModule(num_examples=256, batch_size=32, seq_len=40)
    model = tiny_model(dm, optim={"warmup_steps": 5, "lr": 3e-3})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    t = torch.linspace(0.05, 0.95, 32, dtype=torch.float64)

    def loss():
        with torch.no_grad():
            return model.diffusion_loss(model.net, batch[0], t, self_condition=False)[0].mean().item()

    before, bound_before = loss(), model.nll_bound(batch[0], num_times=4).mean().item()
    trainer = L.Trainer(max_steps=60, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    after, bound_after = loss(), model.nll_bound(batch[0], num_times=4, use_ema=False).mean().item()
    assert after < 0.6 * before, (before, after)
    assert 0 < bound_after < bound_before, (bound_before, bound_after)


def test_ema_warms_up_and_tracks_weights():
    dm = TextDataModule(num_examples=64, batch_size=8)
    model = tiny_model(dm, ema_decay=0.999)
    assert all(torch.equal(a, b) for a, b in zip(model.ema.parameters(), model.net.parameters()))
    before = model.ema.head.bias.detach().clone()
    with torch.no_grad():
        model.net.head.bias.add_(1.0)
    model.update_ema(0)  # decay warms up: (1+0)/(10+0) = 0.1, not 0.999
    assert torch.allclose(model.ema.head.bias, before + 0.9, atol=1e-6)


def test_generate_shapes_and_seed_reproducible():
    dm = TextDataModule(num_examples=64, batch_size=8)
    model = tiny_model(dm)
    a = model.sample_ids(3, seed=1)
    b = model.sample_ids(3, seed=1)
    assert a.ids.shape == (3, 40) and torch.equal(a.ids, b.ids)
    assert a.nfe == 4 + 1  # 4 DDIM steps + the final rounding call
    texts = model.generate(2, method="euler_maruyama", steps=3, seed=0)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_bad_model_arguments():
    dm = TextDataModule(num_examples=64)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        tiny_model(dm, sampler={"method": "nope"})
    with pytest.raises(ValueError, match="unknown schedule 'zigzag'"):
        tiny_model(dm, training={"schedule": "zigzag"})


def test_checkpoint_round_trip(tiny_ckpt):
    model, data_hparams = load_checkpoint(str(tiny_ckpt))
    assert data_hparams["dataset"] == "embedded"
    again = DiffusionLM.load_from_checkpoint(str(tiny_ckpt), map_location="cpu")
    assert torch.equal(model.sample_ids(4, seed=3).ids, again.sample_ids(4, seed=3).ids)
    # the EMA weights travel in the checkpoint and differ from the raw weights after training
    state = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("ema.") for k in state)
    assert not torch.equal(state["ema.head.weight"], state["net.head.weight"])


@pytest.mark.parametrize("method", ["ddim", "dpmpp_2m", "euler_maruyama", "torchdiffeq:rk4", "dpm_adaptive"])
def test_anchors_and_length_hold_for_every_kind_of_solver(method):
    dm = TextDataModule(num_examples=64, batch_size=8)
    model = tiny_model(dm)
    ids = model.sample_ids(4, method=method, steps=4, seed=0, anchors={2: "pub", 7: "bakers"}, length=10).ids
    assert (ids[:, 2] == model.tokenizer.token_to_id("pub")).all()
    assert (ids[:, 7] == model.tokenizer.token_to_id("bakers")).all()
    assert (ids[:, :10] != model.pad_id).all() and (ids[:, 10:] == model.pad_id).all()  # exactly 10 tokens


def test_clean_context_training_and_commitment():
    L.seed_everything(0)
    dm = TextDataModule(num_examples=64, batch_size=8)
    model = tiny_model(dm, training={"clean_context": 1.0}, sampler={"steps": 4, "commit": True})
    dm.setup("fit")
    ids = next(iter(dm.train_dataloader()))[0]
    known = model.sample_known(ids)
    assert known is not None and known.shape == ids.shape
    t = torch.full((8,), 0.5, dtype=torch.float64)
    all_but_first = torch.ones_like(known)
    all_but_first[:, 0] = False  # only position 0 is unknown: the loss covers it alone
    torch.manual_seed(1)
    ce_one, _ = model.diffusion_loss(model.net, ids, t, False, all_but_first)
    torch.manual_seed(1)
    ce_all, _ = model.diffusion_loss(model.net, ids, t, False, None)
    assert ce_one.shape == (8,) and torch.isfinite(ce_one).all()
    assert not torch.allclose(ce_one, ce_all)  # same noise: only the known mask differs
    # with commitment on, anchors still hold in the output
    gen = model.sample_ids(3, seed=0, anchors={1: "pub"})
    assert (gen.ids[:, 1] == model.tokenizer.token_to_id("pub")).all()


def test_clean_padding_trains_on_the_text_and_samples_with_clean_padding():
    from cdlm.networks import CLEAN_LOG_SNR

    dm = TextDataModule(num_examples=64, batch_size=8)
    model = tiny_model(dm, training={"clean_padding": 1.0})
    dm.setup("fit")
    ids = next(iter(dm.train_dataloader()))[0]
    assert torch.equal(model.sample_known(ids), ids == model.pad_id)
    seen, forward = [], model.ema.forward
    model.ema.forward = lambda x, lam, *a, **k: (seen.append((x, lam)), forward(x, lam, *a, **k))[1]
    model.sample_ids(2, steps=2, length=10, seed=0)
    x, lam = seen[0]  # the first call, at t = 1: only the padding is informative
    assert (lam[:, 10:] == CLEAN_LOG_SNR).all() and (lam[:, :10] < 0).all()
    assert torch.allclose(x[:, 10:], model.ema.embedding(torch.full((2, 30), model.pad_id)))
    seen.clear()
    model.sample_ids(2, steps=2, length=10, seed=0, clean_pad=False)  # noised like any known token
    assert not (seen[0][1] == CLEAN_LOG_SNR).any()


def test_commitment_schedule_decides_a_fraction_one_minus_t():
    from cdlm.sampling.denoiser import Denoiser, KnownTokens
    from cdlm.sampling.plan import Plan
    from cdlm.sampling.settings import SamplerConfig

    dm = TextDataModule(num_examples=64, batch_size=8)
    model = tiny_model(dm, training={"clean_context": 1.0})
    plan = Plan.build(2, 40, clean="all")
    known = KnownTokens(plan.known_ids, plan.clean)
    den = Denoiser(model.ema, model.sde, SamplerConfig(score_temperature=1.0, commit=True), plan, known)
    x = torch.randn(2, 40, 8)
    out = den(x, torch.full((2,), 0.75))
    assert ((known.ids >= 0).sum(1) == 10).all()
    first = known.ids.clone()
    out = den(x, torch.full((2,), 0.0), out.x0)
    assert (known.ids >= 0).all()
    assert torch.equal(known.ids[first >= 0], first[first >= 0])  # decisions are never revised
    assert torch.equal(out.logits.argmax(-1), known.ids)


@pytest.mark.parametrize("schedule", ["log_linear", "linear", "cosine", "sqrt"])
def test_nll_bound_is_finite_for_every_schedule(schedule):
    dm = TextDataModule(num_examples=64, batch_size=4)
    model = tiny_model(dm, training={"schedule": schedule})
    dm.setup("fit")
    bound = model.nll_bound(next(iter(dm.train_dataloader()))[0], num_times=2)
    assert bound.shape == (4,) and torch.isfinite(bound).all() and (bound > 0).all()


def test_lengths_drawn_from_the_training_data(tmp_path):
    dm = TextDataModule(num_examples=200, batch_size=16)
    counts = dm.length_counts()
    lengths = (dm.train_set.tensors[1].sum(1)).tolist()
    assert sum(counts) == len(lengths) and counts[max(lengths)] > 0 and len(counts) == 41
    model = tiny_model(dm)
    with pytest.raises(ValueError, match="no length distribution"):
        model.sample_ids(2, length="data")
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path).fit(model, dm)
    assert model.hparams.length_counts == counts  # recorded when training starts, saved with the checkpoint
    gen = model.sample_ids(64, seed=0, length="data", anchors={0: "the"})
    got = (gen.ids != model.pad_id).sum(1)
    assert torch.equal(got, model.data_lengths(64, seed=0))  # exactly the drawn lengths, anchors kept
    assert (gen.ids[:, 0] == model.tokenizer.token_to_id("the")).all()
    assert set(got.tolist()) <= {n for n, c in enumerate(counts) if c}


def test_keep_confident_keeps_the_surest_free_positions():
    from cdlm.sampling.denoiser import keep_confident

    ids = torch.tensor([[0, 1, 2, 3]])
    probs = torch.tensor([[[0.9, 0.1, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.2, 0.8], [0, 0, 0.3, 0.7]]])
    known = torch.tensor([[-1, -1, -1, 3]])  # position 3 is an anchor
    kept = keep_confident(probs.log(), ids, known, 2 / 3)  # 2 of the 3 free positions
    assert kept.tolist() == [[0, 1, -1, 3]]  # confidences 0.9, 0.5, 0.2: the last is re-noised
    assert keep_confident(probs.log(), ids, None, 0.0).tolist() == [[-1] * 4]


def test_restart_keeping_every_token_changes_nothing():
    dm = TextDataModule(num_examples=64, batch_size=8)
    model = tiny_model(dm, training={"clean_context": 1.0})
    first = model.sample_ids(3, steps=3, seed=0, restarts=0).ids
    kept = model.sample_ids(3, steps=3, seed=0, restarts=1, restart_steps=2, restart_keep=1.0)
    assert torch.equal(kept.ids, first) and kept.nfe == 4 + 3
    with pytest.raises(ValueError, match="restart_keep"):
        model.sample_ids(1, restart_keep=1.5)


def test_ode_likelihood_stands_beside_the_bound(tiny_ckpt):
    from cdlm.evaluation import evaluate, heldout_data

    model, data_hparams = load_checkpoint(str(tiny_ckpt))
    data, _ = heldout_data(model, data_hparams)
    result = evaluate(model, num_samples=2, data=data, nll_batches=1, ode_nll=True)
    assert math.isfinite(result["ode_nll_bits_per_token"]) and result["ode_nll_bits_per_token"] > 0
    assert math.isfinite(result["nll_bits_per_token"])
