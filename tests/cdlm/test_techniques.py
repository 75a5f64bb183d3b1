"""The training and sampling switches, each off by default: the output prior (skip
logits), logit-normal time, noise scale, CANDI-style hybrid corruption, self-conditioning
guidance, Muon and length bucketing. Where there is math, it is checked against exact values."""

import copy
import math

import lightning as L
import pytest
import torch

import solvers
from cdlm import AutoregressiveLM, DiffusionLM, MaskedDiffusionLM, TextDataModule
from cdlm.models.base import MuonAdamW, muon_parameters
from cdlm.models.config import make_sde
from cdlm.networks import CLEAN_LOG_SNR
from cdlm.sampling.denoiser import Denoiser
from cdlm.sampling.plan import Plan
from cdlm.sampling.settings import SamplerConfig
from solvers import NoiseScaledVPSDE


@pytest.fixture(scope="module")
def dm():
    dm = TextDataModule(num_examples=64, batch_size=8)
    dm.setup("fit")
    return dm


def tiny(dm, cls=DiffusionLM, network=None, **kw):
    args = dict(network={"width": 32, "depth": 1, "heads": 2, **(network or {})}, optim={"warmup_steps": 5},
                val_samples=0)
    if cls is DiffusionLM:
        args.update(sampler={"steps": 4})
        args["network"].setdefault("embed_dim", 8)
    args.update(kw)
    return cls(tokenizer_json=dm.tokenizer_json(), seq_len=dm.hparams.seq_len, **args)


def batch_ids(dm):
    return next(iter(dm.train_dataloader()))[0]


# ------------------------------------------------------------------------------ output prior
@pytest.mark.parametrize("schedule", ["log_linear", "sqrt"])
@pytest.mark.parametrize("per_token", [False, True])
def test_output_prior_alone_is_the_exact_gaussian_posterior(dm, schedule, per_token):
    torch.manual_seed(0)
    model = tiny(dm, network={"output_prior": 1.0}, training={"schedule": schedule, "self_condition": 0.0})
    with torch.no_grad():  # the network itself says nothing: its logits are the prior's alone
        model.net.head.weight.zero_()
        model.net.head.bias.zero_()
    E = model.net.embedding.table().double()
    assert torch.allclose(E.norm(dim=-1), torch.full((E.shape[0],), math.sqrt(8.0), dtype=torch.float64))
    ids = batch_ids(dm)[:4]
    t = torch.tensor([0.05, 0.3, 0.6, 0.9], dtype=torch.float64)
    if per_token:
        t = torch.rand(ids.shape, dtype=torch.float64)
    x_t = model.sde.perturb(model.net.embedding(ids), t)
    logits, _ = model.net(x_t, model.sde.log_snr(t).float())
    # p(v | x_t) ∝ N(x_t; α e_v, σ² I), every token equally likely a priori
    alpha, sigma = model.sde.alpha(t), model.sde.sigma(t)
    shape = (4, 1, 1, 1) if not per_token else (*ids.shape, 1, 1)
    alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
    sq = ((x_t.double()[..., None, :] - alpha * E) ** 2).sum(-1)  # [B, L, V]
    exact = torch.softmax(-sq / (2 * sigma[..., 0] ** 2), -1)
    assert torch.allclose(torch.softmax(logits.double(), -1), exact, atol=1e-5)
    assert exact.max(-1).values.min() < 0.99  # not a trivially one-hot case


def test_output_prior_ramps_in_over_training_and_is_full_at_sampling(dm):
    model = tiny(dm, network={"output_prior": 2.0}, training={"output_prior_ramp_steps": 10})
    assert [model.prior_weight(s) for s in (0, 5, 10, 40)] == [0.0, 1.0, 2.0, 2.0]
    assert tiny(dm, network={"output_prior": 2.0}).prior_weight(0) == 2.0  # no ramp: full from the start
    plain = tiny(dm)
    plain.net.load_state_dict(model.net.state_dict())
    ids, t = batch_ids(dm), torch.full((8,), 0.4, dtype=torch.float64)

    def ce(m, **kw):
        torch.manual_seed(3)
        return m.diffusion_loss(m.net, ids, t, False, **kw)[0]

    # at step 0 of the ramp the model is the prior-free one; at full weight it is not
    assert torch.equal(ce(model, prior_weight=model.prior_weight(0)), ce(plain))
    assert torch.equal(ce(model), ce(model, prior_weight=2.0))
    assert not torch.allclose(ce(model), ce(plain))
    # sampling and the bound use the full weight: the network's own
    assert model.ema.output_prior == 2.0 and model.net.output_prior == 2.0


# ------------------------------------------------------------------------------ time proposals
def test_logit_normal_times_have_the_asked_location_and_scale(dm):
    model = tiny(dm, training={"time_sampling": "logit_normal", "time_mean": -0.5, "time_std": 1.5})
    torch.manual_seed(0)
    t = model.sample_times(4096)
    torch.manual_seed(0)
    u = model.sample_times(4096, warped=False)  # validation: the plain strata, as for every proposal
    strata = (torch.arange(4096, dtype=torch.float64) + 0.5) / 4096
    assert torch.allclose(u.sort().values, strata, atol=1 / 4096)
    # each stratum through the normal quantile: logit t = m + s Φ⁻¹(u), exactly
    z = torch.log(t / (1 - t))
    assert torch.allclose(z, -0.5 + 1.5 * torch.special.ndtri(u), atol=1e-9)
    assert abs(z.mean() + 0.5) < 5e-3 and abs(z.std() - 1.5) < 1e-2
    with pytest.raises(ValueError, match="time_std must be a finite number > 0"):
        tiny(dm, training={"time_sampling": "logit_normal", "time_std": 0.0})


def test_the_loss_warp_is_information_uniform(dm):
    """Equal shares of warped times cover equal drops of the loss curve (LangFlow's proposal)."""
    model = tiny(dm, training={"time_sampling": "warped"})
    warp = model.time_warp
    warp.momentum, warp.uniform_mix = 0.0, 1e-6
    centres = (torch.arange(warp.bins, dtype=torch.float64) + 0.5) / warp.bins
    curve = torch.sigmoid((centres - 0.4) * 12)  # a loss that rises mostly around t = 0.4
    warp.update(centres, curve)
    t = model.propose((torch.arange(8, dtype=torch.float64) + 0.5) / 8)  # the 8 octiles
    levels = torch.sigmoid((t - 0.4) * 12)
    drop = (levels - levels[0]) / (curve[-1] - curve[0])
    assert torch.allclose(drop, drop[0] + torch.arange(8, dtype=torch.float64) / 8 * (drop[-1] - drop[0]) / (7 / 8),
                          atol=0.03)


# ------------------------------------------------------------------------------ noise scale
def test_noise_scale_is_a_log_snr_shift_and_elfs_noise_up_to_scale():
    k, t = 2.0, torch.linspace(0, 1, 11, dtype=torch.float64)
    scaled = make_sde("log_linear", -6.0, 2.0, noise_scale=k)
    shifted = solvers.LogLinearVPSDE(-6.0 - 2 * math.log(k), 2.0 - 2 * math.log(k))
    for name in ("alpha", "sigma", "log_snr", "d_log_snr", "g2", "beta"):
        assert torch.allclose(getattr(scaled, name)(t), getattr(shifted, name)(t), atol=1e-12), name
    lam = torch.linspace(-7, 0, 5, dtype=torch.float64)
    assert torch.allclose(scaled.t_from_log_snr(lam), shifted.t_from_log_snr(lam), atol=1e-12)
    # ELF's x_t = α x0 + k σ ε, divided by √(α² + k²σ²), for any base schedule
    base, sde = solvers.VPSqrtSDE(), make_sde("sqrt", -6.0, 2.0, noise_scale=k)
    assert isinstance(sde, NoiseScaledVPSDE) and sde.name == base.name
    a, s = base.alpha(t), base.sigma(t)
    norm = torch.sqrt(a**2 + (k * s) ** 2)
    assert torch.allclose(sde.alpha(t), a / norm, atol=1e-12) and torch.allclose(sde.sigma(t), k * s / norm, atol=1e-12)
    assert make_sde("sqrt", -6.0, 2.0).__class__ is solvers.VPSqrtSDE  # 1: the schedule itself
    with pytest.raises(ValueError, match="noise_scale"):
        make_sde("sqrt", -6.0, 2.0, noise_scale=0.0)


def test_a_noise_scaled_model_bounds_and_samples_on_its_own_sde(dm):
    model = tiny(dm, training={"noise_scale": 2.0})
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(model.sde.log_snr(t), torch.tensor([2.0, -2.0, -6.0], dtype=torch.float64) - 2 * math.log(2))
    assert torch.isfinite(model.nll_bound(batch_ids(dm), num_times=2)).all()
    assert model.sample_ids(2, seed=0).ids.shape == (2, 40)


# ------------------------------------------------------------------------------ hybrid corruption
def test_hybrid_corruption_gives_tokens_their_own_times_and_keeps_some_clean(dm):
    model = tiny(dm, training={"hybrid_corruption": 1.0})
    ids = batch_ids(dm)
    torch.manual_seed(0)
    t = model.sample_times(8)
    times, known, rows = model.hybrid_corrupt(ids, t, None)
    assert rows.all() and times.shape == ids.shape == known.shape
    assert (times.std(1) > 0.1).all()  # each token its own level
    fractions = known.double().mean(1)
    assert fractions.std() > 0.05 and known.any() and (~known).any()  # a random share clean per sequence
    seen, forward = [], model.net.forward
    model.net.forward = lambda x, lam, *a, **k: (seen.append((x, lam)), forward(x, lam, *a, **k))[1]
    ce, _ = model.diffusion_loss(model.net, ids, times, False, known)
    x, lam = seen[-1]
    assert torch.isfinite(ce).all() and lam.shape == ids.shape
    assert (lam[known] == CLEAN_LOG_SNR).all()
    assert torch.allclose(lam[~known], model.sde.log_snr(times).float()[~known])
    assert torch.equal(x[known], model.net.embedding(ids)[known])
    # per-token times that are all equal are one time per sequence: the same loss, noise for noise
    torch.manual_seed(5)
    a = model.diffusion_loss(model.net, ids, t[:, None].expand_as(ids), False)[0]
    torch.manual_seed(5)
    b = model.diffusion_loss(model.net, ids, t, False)[0]
    assert torch.allclose(a, b, atol=1e-6)
    # half the sequences on average; the rest keep their one time and no clean tokens
    half = tiny(dm, training={"hybrid_corruption": 0.5})
    torch.manual_seed(1)
    times, known, rows = half.hybrid_corrupt(ids.repeat(32, 1), t.repeat(32), None)
    assert 0.35 < rows.double().mean() < 0.65
    assert torch.equal(times[~rows], t.repeat(32)[~rows][:, None].expand(-1, 40)) and not known[~rows].any()
    assert half.sample_ids(2, seed=0, anchors={1: "pub"}).ids[:, 1].eq(half.tokenizer.token_to_id("pub")).all()


def test_hybrid_training_runs_and_the_warp_learns_only_from_one_time_sequences(dm, tmp_path):
    L.seed_everything(0)
    model = tiny(dm, training={"hybrid_corruption": 0.5, "time_sampling": "warped"})
    updates, update = [], model.time_warp.update
    model.time_warp.update = lambda t, loss: (updates.append(t.shape[0]), update(t, loss))[1]
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert len(updates) == 6 and all(n < 8 for n in updates) and sum(updates) > 0


# ------------------------------------------------------------------------------ self-conditioning CFG
def test_self_condition_scale_combines_the_two_calls_exactly(dm):
    torch.manual_seed(0)
    model = tiny(dm)
    net = model.net.eval()
    x = torch.randn(2, 40, 8)
    t = torch.full((2,), 0.5, dtype=torch.float64)
    guided = Denoiser(net, model.sde, SamplerConfig(score_temperature=0.7, self_condition_scale=3.0), Plan.build(2, 40))
    plain = Denoiser(net, model.sde, SamplerConfig(score_temperature=0.7), Plan.build(2, 40))
    with torch.no_grad():
        first, plain_first = guided(x, t), plain(x, t)  # no estimate yet: one plain call
    assert torch.equal(first.x0, plain_first.x0) and torch.equal(first.logits, plain_first.logits)
    first = first.x0
    x2 = torch.randn(2, 40, 8)
    with torch.no_grad():
        second = guided(x2, t, first)
    lam = model.sde.log_snr(t).float()
    with torch.no_grad():
        l_sc, _ = net(x2, lam, first, temperature=0.7)
        l_0, _ = net(x2, lam, None, temperature=0.7)
    logits = l_0 + 3.0 * (l_sc - l_0)
    assert torch.allclose(second.logits, logits, atol=1e-5)
    assert torch.allclose(second.x0, torch.softmax(logits / 0.7, -1) @ net.embedding.table(), atol=1e-5)
    with pytest.raises(ValueError, match="self_condition_scale must be a finite number"):
        SamplerConfig(self_condition_scale=float("nan"))


def test_self_condition_scale_one_is_todays_sampler_and_others_change_samples():
    import json
    from pathlib import Path

    from cdlm.checkpoints import load_checkpoint

    data = Path(__file__).resolve().parents[1] / "data"
    golden = json.loads((data / "golden_diffusion.json").read_text())
    model = load_checkpoint(str(data / "golden_diffusion.ckpt"))[0]
    assert model.sampler.self_condition_scale == 1.0  # old checkpoints: off
    for seed, expected in golden["ids"]["default"].items():
        ids = model.sample_ids(3, seed=int(seed), self_condition_scale=1.0).ids
        assert torch.equal(ids, torch.tensor(expected))
    plain, guided = (model.sample_ids(16, seed=0, self_condition_scale=s).ids for s in (1.0, 10.0))
    assert not torch.equal(plain, guided)
    assert model.sampler_report(self_condition_scale=2.0)["self_condition_scale"] == 2.0


def test_nfe_counts_both_calls_of_self_condition_guidance():
    from pathlib import Path

    from cdlm.checkpoints import load_checkpoint

    model = load_checkpoint(str(Path(__file__).resolve().parents[1] / "data" / "golden_diffusion.ckpt"))[0]
    calls = []
    hook = model.ema.register_forward_hook(lambda *_: calls.append(1))
    try:
        plain = model.sample_ids(2, seed=0, steps=4, restarts=0, rounding="logits", self_condition_scale=1.0)
        assert plain.nfe == len(calls) == 4 + 1
        calls.clear()
        guided = model.sample_ids(2, seed=0, steps=4, restarts=0, rounding="logits", self_condition_scale=3.0)
        assert guided.nfe == len(calls) == 1 + 2 * 3 + 2  # the first step has no x0 to guide by
    finally:
        hook.remove()


# ------------------------------------------------------------------------------ Muon
EXPECTED_MUON = {
    DiffusionLM: {"qkv.weight", "proj.weight", "mlp.0.weight", "mlp.2.weight", "modulation.weight"},
    MaskedDiffusionLM: {"qkv.weight", "proj.weight", "mlp.0.weight", "mlp.2.weight"},
    AutoregressiveLM: {"qkv.weight", "proj.weight", "mlp.0.weight", "mlp.2.weight"},
}


@pytest.mark.parametrize("cls", [DiffusionLM, MaskedDiffusionLM, AutoregressiveLM])
def test_muon_takes_the_block_matrices_and_adamw_the_rest(dm, cls):
    kw = {"training": {"embedding_lr": 0.01}} if cls is DiffusionLM else {}
    model = tiny(dm, cls, network={"depth": 2}, optim={"name": "muon"}, **kw)
    opt = model.configure_optimizers()["optimizer"]
    assert isinstance(opt, MuonAdamW)
    names = {id(p): n for n, p in model.net.named_parameters()}
    in_muon = [names[id(p)] for g in opt.muon.param_groups for p in g["params"]]
    in_adamw = [names[id(p)] for g in opt.adamw.param_groups for p in g["params"]]
    assert sorted(in_muon + in_adamw) == sorted(n for n, p in model.net.named_parameters() if p.requires_grad)
    assert {n.split(".", 3)[3] for n in in_muon} == EXPECTED_MUON[cls]
    assert all(n.startswith("backbone.blocks.") for n in in_muon) and len(in_muon) == 2 * len(EXPECTED_MUON[cls])
    assert {id(p) for p in muon_parameters(model.net)} == {id(p) for g in opt.muon.param_groups for p in g["params"]}
    assert all(model.net.get_parameter(n).ndim != 2 or not n.startswith("backbone.blocks.") for n in in_adamw)
    assert opt.param_groups == opt.muon.param_groups + opt.adamw.param_groups
    if cls is DiffusionLM:  # the embedding keeps its own group's learning rate
        (group,) = [g for g in opt.adamw.param_groups if any(p is model.net.embedding.weight for p in g["params"])]
        assert group["initial_lr"] == 0.01 and group["params"] == [model.net.embedding.weight]
    adamw = tiny(dm, cls).configure_optimizers()["optimizer"]
    assert type(adamw) is torch.optim.AdamW  # the default


@pytest.mark.parametrize("cls", [DiffusionLM, AutoregressiveLM])
def test_muon_trains_and_its_state_round_trips(dm, cls):
    torch.manual_seed(0)
    model = tiny(dm, cls, optim={"name": "muon"})
    ids, t = batch_ids(dm), torch.linspace(0.05, 0.6, 8, dtype=torch.float64)

    def loss():
        if cls is AutoregressiveLM:
            return model.token_nll(ids).mean()
        torch.manual_seed(1)
        return model.diffusion_loss(model.net, ids, t, False)[0].mean()

    opt = model.make_optimizer("muon")
    for group in opt.param_groups:
        group["lr"] = 3e-3
    before = loss().item()
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.8 * before, (before, loss().item())
    # one state per parameter, each in its own optimizer, however it is read (Lightning iterates it)
    assert len(dict(opt.state.items())) == sum(p.requires_grad for p in model.net.parameters())
    for inner in (opt.muon, opt.adamw):
        assert {id(p) for p in inner.state} == {id(p) for g in inner.param_groups for p in g["params"]}
    # the state dict restores both optimizers: the next step is the same from either
    again = model.make_optimizer("muon")
    again.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a checkpoint file: no shared tensors
    assert again.param_groups[0] is again.muon.param_groups[0] and len(again.state) == len(opt.state)
    start = [p.detach().clone() for p in model.net.parameters()]
    results = []
    for o in (opt, again):
        with torch.no_grad():
            for p, s in zip(model.net.parameters(), start):
                p.copy_(s)
        o.zero_grad()
        loss().backward()
        o.step()
        results.append([p.detach().clone() for p in model.net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    with pytest.raises(ValueError, match="another optimizer"):
        again.load_state_dict(torch.optim.AdamW(model.net.parameters()).state_dict())


# ------------------------------------------------------------------------------ length bucketing
def test_length_buckets_batch_similar_lengths_cut_the_padding_and_resume_exactly():
    from cdlm.data.loaders import ResumableLoader

    def loader():
        torch.manual_seed(0)  # the epoch order's seed comes from the global RNG
        dm = TextDataModule(num_examples=600, batch_size=8, loading={"bucket_lengths": True})
        dm.setup("fit")
        return dm, dm.train_dataloader()

    dm, first = loader()
    lengths = dm.train_set.tensors[1].sum(1)
    order = list(first.sampler)
    full = len(order) // 8 * 8
    assert sorted(order) == list(range(len(lengths)))  # every text once an epoch
    bucketed = [float(lengths[order[i: i + 8]].float().std()) for i in range(0, full, 8)]
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0))[:full].view(-1, 8)
    assert sum(bucketed) < 0.3 * float(lengths[shuffled].float().std(1).sum())  # similar lengths in a batch
    whole = list(first)
    for ids, mask in whole:  # cut after the longest text and its end pad, and nothing of a text lost
        assert ids.shape[1] == min(dm.hparams.seq_len, int(mask.sum(1).max()) + 1)
        assert torch.equal(mask, ids != dm.tokenizer.token_to_id("[PAD]"))
    assert sum(ids.numel() for ids, _ in whole) < 0.8 * len(whole) * 8 * dm.hparams.seq_len
    _, again = loader()
    it = iter(again)
    seen = [next(it)[0] for _ in range(7)]
    torch.manual_seed(1)
    resumed = TextDataModule(num_examples=600, batch_size=8, loading={"bucket_lengths": True}).train_dataloader()
    resumed.load_state_dict(again.state_dict())  # the seed travels in the state
    rest = [b[0] for b in resumed]
    assert isinstance(resumed, ResumableLoader) and len(seen) + len(rest) == len(whole)
    assert all(torch.equal(a, b) for a, b in zip(seen + rest, [b[0] for b in whole]))
    with pytest.raises(ValueError, match="bucket_lengths=true .* needs packing=false"):
        TextDataModule(dataset="any.txt", packing=True, loading={"bucket_lengths": True})


@pytest.mark.parametrize("cls", [DiffusionLM, MaskedDiffusionLM, AutoregressiveLM])
def test_each_model_trains_on_bucketed_batches(cls, tmp_path):
    L.seed_everything(0)
    dm = TextDataModule(num_examples=64, batch_size=8, loading={"bucket_lengths": True})
    dm.setup("fit")
    widths = []
    model = tiny(dm, cls)
    step = model.training_step
    model.training_step = lambda batch, *args: (widths.append(batch[0].shape[1]), step(batch, *args))[1]
    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert len(widths) == 4 and min(widths) < dm.hparams.seq_len
    assert trainer.callback_metrics["train/loss"].isfinite()


def test_bad_switch_values_are_one_line_errors(dm):
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        tiny(dm, optim={"name": "sgd"})
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        tiny(dm, AutoregressiveLM, optim={"name": "sgd"})
    with pytest.raises(ValueError, match="hybrid_corruption must be a probability"):
        tiny(dm, training={"hybrid_corruption": 1.5})
    with pytest.raises(ValueError, match="output_prior must be a finite number >= 0"):
        tiny(dm, network={"output_prior": -1.0})
    with pytest.raises(ValueError, match="unknown time_sampling 'lognormal'"):
        tiny(dm, training={"time_sampling": "lognormal"})


# ------------------------------------------------------------------------------ the CLI
def test_every_switch_through_the_cli_and_a_muon_run_resumes(tmp_path, fit):
    from cdlm.checkpoints import load_checkpoint

    switches = [
        "--model.init_args.network.output_prior=1.0", "--model.init_args.training.output_prior_ramp_steps=4",
        "--model.init_args.training.time_sampling=logit_normal", "--model.init_args.training.time_mean=-0.4",
        "--model.init_args.training.time_std=1.2", "--model.init_args.training.noise_scale=2.0",
        "--model.init_args.training.hybrid_corruption=0.5", "--model.init_args.optim.name=muon",
        "--model.init_args.sampler.self_condition_scale=1.5",
    ]
    ckpt = fit(tmp_path, *switches, "--trainer.max_steps=6", "--trainer.limit_val_batches=0")
    model, _ = load_checkpoint(str(ckpt))
    t = model.training_config
    assert (model.network.output_prior, t.output_prior_ramp_steps, t.time_sampling, t.time_mean, t.time_std, t.noise_scale,
            t.hybrid_corruption, model.optim.name) == (1.0, 4, "logit_normal", -0.4, 1.2, 2.0, 0.5, "muon")
    assert model.sampler.self_condition_scale == 1.5 and model.ema.output_prior == 1.0
    assert isinstance(model.sde, NoiseScaledVPSDE)
    state = torch.load(ckpt, weights_only=True)["optimizer_states"][0]
    assert set(state) == {"muon", "adamw"}
    ckpt = fit(tmp_path, *switches, "--trainer.max_steps=8", "--trainer.limit_val_batches=0", "--ckpt_path", str(ckpt))
    assert torch.load(ckpt, weights_only=True)["global_step"] == 8


def test_resuming_with_another_optimizer_refuses_in_one_line(tmp_path, tiny_ckpt, capsys):
    from tests.cdlm.conftest import TINY, fails

    message = fails(capsys, "fit", *TINY, f"--trainer.default_root_dir={tmp_path}",
                    "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                    f"--trainer.callbacks.dirpath={tmp_path}/ckpt", "--model.optim.name=muon",
                    "--trainer.max_steps=40", "--ckpt_path", str(tiny_ckpt))
    assert "cannot resume" in message and "optimizer 'adamw'" in message
