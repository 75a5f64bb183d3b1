"""DiffusionLM: the Lightning module that trains the score network on embedded text under a VP SDE,
keeps EMA weights, and generates text from checkpoints with nothing else on disk."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

import solvers
from cdlm.checkpoints import build, model_name, read_checkpoint
from cdlm.control.request import Request
from cdlm.data.tokenizer import load_tokenizer
from cdlm.models.base import DiffusionBase, NoiseCurve
from cdlm.models.config import ConditioningConfig, DiffusionTraining, OptimConfig, make_sde, upgrade_flat_hparams
from cdlm.models.time_warp import LossWarp
from cdlm.networks import CLEAN_LOG_SNR, NetworkConfig, ScoreNetwork, check_hparams
from cdlm.registry import register
from cdlm.sampling.base import noise_generator
from cdlm.sampling.continuous import generate, restart_levels
from cdlm.sampling.plan import Guidance, Plan
from cdlm.sampling.settings import LEGACY_NAMES, SamplerConfig
from solvers import NoiseScaledVPSDE

# NoiseScaledVPSDE (now in solvers) and make_sde (now in cdlm.models.config) stay importable from here
__all__ = ["DiffusionLM", "NoiseScaledVPSDE", "check_same_data", "make_sde", "read_diffusion_model"]


@register
class DiffusionLM(DiffusionBase):
    """A continuous embedding-space diffusion language model.

    Args:
        tokenizer_json: the tokenizer as a JSON string (filled in from the data module by the CLI).
        seq_len: sequence length (must equal the data module's).
        network: the score network's shape (`cdlm.networks.NetworkConfig`): width, depth,
            heads, dropout, loops (blocks run again with tied weights), positions (learned,
            alibi, learned_alibi, rotary), the embedding dimension d and its normalisation,
            score interpolation (x0 = softmax(logits)·E) or a direct x0 head, the closed-form
            skip logits' weight `output_prior` (Plaid, LangFlow: with equal-norm embeddings
            their softmax is the exact posterior p(token | x_t), so the network only learns
            what context adds; sampling and the bound use the full weight, training may ramp
            it in: `training.output_prior_ramp_steps`), and `posterior_input` (BFN's input).
        training: how the model is trained (`cdlm.models.config.DiffusionTraining`): the noise
            schedule, the time proposal, clean tokens, self-conditioning, the loss.
        optim: the optimizer and its schedule (`cdlm.models.config.OptimConfig`).
        ema_decay: decay of the EMA weights used for sampling (warmed up as (1+n)/(10+n)).
        sampler: the default sampler settings (`cdlm.sampling.settings.SamplerConfig`) of
            `generate`, validation samples and `cdlm sample`/`eval`.
        val_samples: samples generated and logged at each validation (0 disables).
        attribute_names: the data's attribute vocabulary (filled in by the CLI from a data module
            with `condition_column`): the network is then conditioned on each text's attributes.
        conditioning: how attributes are learnt and guided (`cdlm.models.config.ConditioningConfig`).
        length_counts: how many training texts have 0..seq_len tokens, filled in from the data
            module when training starts; `generate(length="data")` draws lengths from it.
        compile: run the network and its EMA under torch.compile (measured slower on CPU; see
            benchmarks/bench_throughput.py).

    Each group (`network`, `training`, `optim`, `sampler`, `conditioning`) takes its config object or a
    mapping of its fields, and is stored in `hparams` as plain values.
    """

    GROUPS = {"network": NetworkConfig, "training": DiffusionTraining, "optim": OptimConfig,
              "conditioning": ConditioningConfig}
    kind = "continuous"  # what the model is, for callers that treat the three alike (`LanguageModel.kind`)

    def __init__(
        self,
        tokenizer_json: str | None = None,
        seq_len: int = 40,
        network: NetworkConfig | None = None,
        training: DiffusionTraining | None = None,
        optim: OptimConfig | None = None,
        ema_decay: float = 0.999,
        sampler: SamplerConfig | None = None,
        val_samples: int = 64,
        attribute_names: list[str] | None = None,
        conditioning: ConditioningConfig | None = None,
        length_counts: list[int] | None = None,
        compile: bool = False,
    ):
        super().__init__(tokenizer_json, attribute_names, optim, conditioning)
        self.network = NetworkConfig.of(network)
        self.sampler = SamplerConfig.of(sampler)
        self.training_config = t = DiffusionTraining.of(training)
        check_hparams(seq_len=seq_len, ema_decay=ema_decay)  # the network's config checked its own fields
        self.save_hyperparameters()
        self.store_groups(network=self.network, training=t, sampler=self.sampler, conditioning=self.conditioning)
        self.sde = make_sde(t.schedule, t.log_snr_min, t.log_snr_max, t.noise_scale)
        self.net = ScoreNetwork(self.tokenizer.get_vocab_size(), seq_len, self.network,
                                self_condition=t.self_condition > 0,
                                num_attributes=len(self.attribute_vocab) if self.attribute_vocab else 0)
        self.net.embedding.weight.requires_grad_(t.learn_embeddings)
        self.init_ema()
        self.time_warp = LossWarp() if t.time_sampling == "warped" else None

    @staticmethod
    def upgrade_hparams(hparams: dict) -> dict:
        """Hyperparameters of checkpoints from before the groups: flat names fold into `sampler`,
        `training`, `optim` and `conditioning`."""
        legacy = {LEGACY_NAMES[k]: v for k, v in hparams.items() if k in LEGACY_NAMES}
        if legacy:
            rest = {k: v for k, v in hparams.items() if k not in LEGACY_NAMES}
            hparams = {**rest, "sampler": {**legacy, **(hparams.get("sampler") or {})}}
        return upgrade_flat_hparams(hparams, DiffusionLM.GROUPS)

    # ---------------------------------------------------------------- training
    def sample_times(self, batch: int, warped: bool = True) -> torch.Tensor:
        """Training times [B]; `warped=False` skips the proposal (loss warp, logit-normal):
        validation compares variants at the same times."""
        if self.training_config.time_sampling == "uniform":
            return torch.rand(batch, device=self.device, dtype=torch.float64)
        # one draw per stratum: same marginal, lower-variance batch loss
        u = (torch.rand((), device=self.device, dtype=torch.float64) + torch.arange(batch, device=self.device)) / batch
        u = u[torch.randperm(batch, device=self.device)]
        return self.propose(u) if warped else u

    def propose(self, u: torch.Tensor) -> torch.Tensor:
        """Uniform u in [0, 1) (any shape) → training times from the time proposal."""
        h = self.training_config
        if self.time_warp is not None:
            return self.time_warp.warp(u)
        if h.time_sampling == "logit_normal":
            z = torch.special.ndtri(u.double().clamp(1e-12, 1 - 1e-12))  # the normal quantile keeps strata
            return torch.sigmoid(h.time_mean + h.time_std * z).to(u.dtype)
        return u

    def prior_weight(self, step: int | None = None) -> float:
        """The output prior's training weight at `step` (default: the current one): `output_prior`
        ramped linearly from 0 over `output_prior_ramp_steps`."""
        ramp = self.training_config.output_prior_ramp_steps
        step = self.global_step if step is None else step
        return self.network.output_prior * (min(1.0, step / ramp) if ramp else 1.0)

    def hybrid_corrupt(self, ids: torch.Tensor, t: torch.Tensor, known: torch.Tensor | None):
        """CANDI-style corruption: per-token times [B, L] and clean positions [B, L], where each
        sequence with probability `hybrid_corruption` keeps a uniform-random fraction of its tokens
        clean and noises the others each at its own time from the proposal; the other sequences
        keep their t [B] and `known`. Also returns which sequences [B] were so corrupted."""
        B, L = ids.shape
        rows = torch.rand(B, device=ids.device) < self.training_config.hybrid_corruption
        own = self.propose(torch.rand(B, L, device=ids.device, dtype=torch.float64))
        times = torch.where(rows[:, None], own, t[:, None])
        clean = rows[:, None] & (torch.rand(B, L, device=ids.device) < torch.rand(B, 1, device=ids.device))
        return times, clean if known is None else known | clean, rows

    def diffusion_loss(self, net: ScoreNetwork, ids: torch.Tensor, t: torch.Tensor, self_condition: bool,
                       known: torch.Tensor | None = None, attribute_rows: torch.Tensor | None = None,
                       prior_weight: float | None = None):
        """Cross-entropy of the tokens (and x0 regression) from x_t at times t [B] (or per token,
        [B, L]), per sequence.

        `known` [B, L] marks positions given clean (at CLEAN_LOG_SNR); they carry no loss.
        `attribute_rows` [B, A] are the multi-hot conditions (None: unconditional). `prior_weight`
        overrides the network's output-prior weight (the training ramp; None: the full weight).
        """
        x0 = net.embedding(ids)
        x_t = self.sde.perturb(x0, t)
        log_snr = self.sde.log_snr(t).to(x_t.dtype)
        weight = torch.ones_like(ids, dtype=x_t.dtype)
        if known is not None:
            x_t = torch.where(known[..., None], x0, x_t)
            log_snr = torch.where(known, torch.full_like(weight, CLEAN_LOG_SNR), log_snr if log_snr.ndim == 2 else log_snr[:, None])
            weight = (~known).to(x_t.dtype)
        if prior_weight is not None:
            prior_weight = torch.tensor(prior_weight, device=x_t.device)  # a tensor: no recompilation as it ramps
        x0_prev = None
        if self_condition:
            with torch.no_grad():
                x0_prev = net(x_t, log_snr, attribute_rows=attribute_rows, prior_weight=prior_weight)[1].detach()
        logits, x0_hat = net(x_t, log_snr, x0_prev, attribute_rows=attribute_rows, prior_weight=prior_weight)
        norm = weight.sum(1).clamp(min=1)
        ce = (F.cross_entropy(logits.transpose(1, 2), ids, reduction="none") * weight).sum(1) / norm  # [B]
        mse = (((x0_hat - x0) ** 2).mean(-1) * weight).sum(1) / norm
        return ce, mse

    def sample_known(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Positions [B, L] to give clean in a training batch, or None: with probability
        `clean_context` a uniform-random fraction of each sequence's tokens, and with
        probability `clean_padding` its padding."""
        h, known = self.training_config, None
        if h.clean_context > 0 and torch.rand(()) < h.clean_context:
            known = torch.rand(ids.shape, device=ids.device) < torch.rand(ids.shape[0], 1, device=ids.device)
        if h.clean_padding > 0 and torch.rand(()) < h.clean_padding:
            pads = ids == self.pad_id
            known = pads if known is None else known | pads
        return known

    @torch.no_grad()
    def nll_bound(self, ids: torch.Tensor, num_times: int = 16, use_ema: bool = True,
                  net: torch.nn.Module | None = None) -> torch.Tensor:
        """An upper bound on -log p(ids) in nats per sequence [B] (variational, continuous time),
        of this model's network (EMA unless `use_ema=False`) or of another denoiser `net` with its
        call signature (`cdlm.networks.PosteriorNetwork`: the bound without context).

        -log p(w) <= E[-log p(w | z_0)] + ½ ∫ -λ'(t) e^λ(t) E||x0 - x̂0(z_t)||² dt + KL(q(z_1|w) || N(0, I)):
        the rounding term at t = 0 read from the logits, the diffusion term by `num_times`
        stratified times per sequence, and the prior term in closed form. Self-conditioning
        is off: its input would make the integrand depend on another model call.
        """
        net = net if net is not None else self.ema if use_ema else self.net
        x0 = net.embedding(ids)
        B, sde = ids.shape[0], self.sde
        t0 = float(sde.t_min_default)  # where the schedule's log-SNR is still finite

        def times(value) -> torch.Tensor:
            return torch.as_tensor(value, dtype=torch.float64, device=ids.device).expand(B)

        # rounding term: q(z_t0 | w) is Gaussian around the embeddings
        logits, _ = net(sde.perturb(x0, times(t0)), sde.log_snr(times(t0)).to(x0.dtype))
        recon = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none").sum(1).double()
        # diffusion term over [t0, 1], Monte Carlo over stratified t
        diff = torch.zeros(B, dtype=torch.float64, device=ids.device)
        for k in range(num_times):
            t = t0 + (1 - t0) * (k + torch.rand(B, dtype=torch.float64, device=ids.device)) / num_times
            lam = sde.log_snr(t)
            _, x0_hat = net(sde.perturb(x0, t), lam.to(x0.dtype))
            err = ((x0_hat - x0).double() ** 2).sum((1, 2))
            diff += 0.5 * (1 - t0) * (-sde.d_log_snr(t)) * lam.exp() * err / num_times
        # prior term: KL(N(α₁x0, σ₁²) || N(0, 1)) per coordinate
        a1, s1 = sde.alpha(times(1.0))[:, None, None], sde.sigma(times(1.0))[:, None, None]
        prior = 0.5 * (a1**2 * x0.double() ** 2 + s1**2 - 1 - torch.log(s1**2)).sum((1, 2))
        return recon + diff + prior

    def sequence_nll(self, ids: torch.Tensor) -> torch.Tensor:
        return self.nll_bound(ids)

    def ode_nll(self, ids: torch.Tensor, use_ema: bool = True, rtol: float = 1e-5, atol: float = 1e-5,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """-log p(ids) in nats per sequence [B] from the probability-flow ODE, dequantised:

        -log p(w) <= E_q[-log p(w | z)] - H(q) - E_q[log p_ODE(z)],  q(z | w) = N(alpha_t0 e(w), sigma_t0^2 I):
        the same rounding term and t0 as `nll_bound`, the Gaussian's entropy in closed form, and
        the model's continuous density at t0 by `solvers.log_likelihood` (one z and one Hutchinson
        probe per sequence, so this is a one-sample estimate of a bound). Self-conditioning is off.
        """

        net = self.ema if use_ema else self.net
        sde, B = self.sde, ids.shape[0]
        t0 = float(sde.t_min_default)
        tv = torch.full((B,), t0, dtype=torch.float64, device=ids.device)
        with torch.no_grad():
            x0 = net.embedding(ids)
            z = sde.perturb(x0, tv)
            logits, _ = net(z, sde.log_snr(tv).to(x0.dtype))
            recon = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none").sum(1).double()
        s0 = float(sde.sigma(t0))
        entropy = 0.5 * z[0].numel() * (1.0 + math.log(2 * math.pi * s0 ** 2))

        def denoiser(x, t):
            return net(x, sde.log_snr(t).to(x.dtype))[1]

        log_p = solvers.log_likelihood(denoiser, sde, z, t_end=t0, rtol=rtol, atol=atol, generator=generator)
        return recon - entropy - log_p.double()

    def _loss(self, batch, stage: str):
        ids = batch[0]
        attribute_rows = batch[2] if len(batch) > 2 and self.net.attribute is not None else None
        if attribute_rows is not None and stage == "train":
            attribute_rows = self.drop_attribute_rows(attribute_rows)
        t = self.sample_times(ids.shape[0], warped=stage == "train")
        use_sc = stage == "train" and self.net.self_condition and torch.rand(()) < self.training_config.self_condition
        context = known = self.sample_known(ids) if stage == "train" else None
        times, hybrid = t, None
        if stage == "train" and self.training_config.hybrid_corruption > 0:
            times, known, hybrid = self.hybrid_corrupt(ids, t, known)
        prior_weight = self.prior_weight() if self.training_config.output_prior_ramp_steps else None
        ce, mse = self.diffusion_loss(self.net, ids, times, use_sc, known, attribute_rows, prior_weight)
        if self.time_warp is not None and stage == "train" and context is None:
            plain = slice(None) if hybrid is None else ~hybrid  # the sequences at one time each
            self.time_warp.update(t[plain], ce.detach()[plain])
        loss = ce.mean() + self.training_config.mse_weight * mse.mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=stage != "train", sync_dist=stage != "train")
        self.log(f"{stage}/ce", ce.mean(), on_step=stage == "train", on_epoch=stage != "train", sync_dist=stage != "train")
        return loss

    def param_groups(self) -> list[dict]:
        h = self.training_config
        rest = [p for n, p in self.net.named_parameters() if not n.startswith("embedding.")]
        emb = {"params": [self.net.embedding.weight], "lr": h.embedding_lr or self.optim.lr, "weight_decay": 0.0}
        return [{"params": rest}, emb] if h.learn_embeddings else [{"params": rest}]

    # ---------------------------------------------------------------- sampling
    def sampler_report(self, **settings) -> dict:
        """The settings `eval` reports beside its metrics."""
        s = self.sampler.replace(**settings)
        return {"method": s.method, "steps": s.steps, "restarts": s.restarts, "self_condition_scale": s.self_condition_scale}

    @torch.no_grad()
    def loss_by_noise_level(self, ids: torch.Tensor, num_levels: int) -> NoiseCurve:
        """Evenly spaced in log-SNR, from the end time of sampling to pure noise."""
        ends = self.sde.log_snr(torch.tensor([float(self.sde.t_min_default), 1.0], dtype=torch.float64))
        levels = torch.linspace(float(ends[1]), float(ends[0]), num_levels, dtype=torch.float64)
        t = self.sde.t_from_log_snr(levels).clamp(float(self.sde.t_min_default), 1.0).double()
        loss = [float(self.diffusion_loss(self.net, ids, ti.expand(len(ids)).to(self.device), False)[0].mean())
                for ti in t]
        return NoiseCurve(self.sde.log_snr(t).tolist(), loss, "log-SNR  (noisier ←)", "cross-entropy, nats/token")

    def calls_per_chunk(self, settings: dict, prefix: str | None) -> int | None:
        """Exact for the fixed-grid solvers: each pass's calls are counted by running the solver on
        a zero denoiser (which costs nothing), plus the restarts and the rounding calls."""
        s = self.sampler.replace(**settings)
        first = self._pass_calls(s.method, s.steps, 1.0)
        if first is None:
            return None
        per_chunk = first + (s.rounding != "last")
        for t in self.sde.t_from_log_snr(restart_levels(s)).tolist():
            per_chunk += self._pass_calls(s.method, s.restart_steps, t) + (s.rounding != "last")
        if s.self_condition_scale != 1 and self.net.self_condition:
            per_chunk = 2 * per_chunk - 1  # two calls a step, but one at the first (no estimate yet)
        return per_chunk

    def _pass_calls(self, method: str, steps: int, t_start: float) -> int | None:
        """Denoiser calls of one `solvers.sample` pass, or None for an adaptive method."""
        if solvers.method_info(method)["adaptive"]:
            return None
        x = torch.zeros(1, 1, 1, dtype=torch.float64)
        return solvers.sample(lambda x_t, t: torch.zeros_like(x_t), self.sde, x, method=method, steps=steps,
                              t_start=t_start, generator=torch.Generator().manual_seed(0)).nfe

    def nll_calls(self, batches: int, num_times: int = 16) -> int:
        return batches * (num_times + 1)  # + the rounding term

    def sample_ids(self, num_samples: int = 16, seed: int | None = None, use_ema: bool = True,
                   request: Request | None = None, clean_known: bool | None = None, clean_pad: bool | None = None,
                   batch_size: int = 256, solver_options: dict | None = None, **options):
        """Token ids [N, L] and the NFE for a `request` (`cdlm.control.request.Request`), whose
        fields may also be given as keywords, with the model's sampler settings unless
        overridden: the other keywords are fields of `SamplerConfig` (method, steps, score_temperature,
        restarts, ...).

        Control (see `cdlm.control.constraints`): `anchors={5: "quantum"}` fixes tokens at positions,
        `template="the ___ serves ___ food ."` fixes all but the blanks, `prefix`/`suffix` fix
        the ends, `length` the number of tokens ("data": each sample's drawn from the training
        texts' lengths). They hold at every solver step, for every method.

        `attributes` (models trained with a `condition_column`): one request for all samples,
        as {"food": "french"}, "food[french], area[riverside]" or ["food=french"], or a list of
        N such requests, one per sample; `guidance_scale` overrides the classifier-free scale.
        With a `classifier` (`cdlm.AttributeClassifier` trained on this model) the request also
        guides by its gradient, weighted by `classifier_scale`; this works for unconditional models.
        The gradient moves x0, so the tokens are then read off x0 (rounding "nearest") when the
        model's default is "last". `clean_known`/`clean_pad` override whether known tokens and
        padding are shown clean (by default, as the model was trained); `solver_options` go to
        `solvers.sample` (e.g. rtol for adaptive methods). `trim_padding`/`group_lengths`: cost
        cuts of `cdlm.sampling.continuous.generate` (off: they change samples).
        """
        request, settings = Request.split(request, options)
        sampler = self.sampler.replace(**settings)
        if request.classifier is not None and request.attributes is not None and sampler.rounding == "last":
            # the classifier moves x0; rounding "last" reads only the network's logits
            if settings.get("rounding") == "last":
                raise ValueError("classifier guidance moves x0, which rounding='last' never reads; "
                                 "use rounding 'nearest' or 'logits'")
            sampler = sampler.replace(rounding="nearest")
        plan = self.sampling_plan(request, num_samples, seed, self.shown_clean(clean_known, clean_pad))
        generator = None if seed is None else noise_generator(seed, self.device)
        was_training = self.training
        self.eval()
        try:
            return generate(self.ema if use_ema else self.net, self.sde, sampler, plan, generator, batch_size,
                            solver_options)
        finally:
            self.train(was_training)

    def shown_clean(self, clean_known: bool | None = None, clean_pad: bool | None = None) -> str:
        """Which known tokens the network sees clean (`Plan.clean`): by default, as the model was
        trained (clean context or hybrid corruption: all; clean padding: padding)."""
        t = self.training_config
        clean_known = (t.clean_context > 0 or t.hybrid_corruption > 0) if clean_known is None else clean_known
        clean_pad = t.clean_padding > 0 if clean_pad is None else clean_pad
        return "all" if clean_known else "padding" if clean_pad else "none"

    def sampling_plan(self, request: Request, num_samples: int, seed: int | None = None, clean: str = "none") -> Plan:
        """The `Plan` of `num_samples` samples for `request`: its known tokens and banned ones,
        each sample's length ("data": drawn with `seed`), its attribute rows and guidance."""
        guidance = Guidance()
        if request.attributes is not None:
            requests = self.attribute_requests(request.attributes, num_samples)
            classifier = request.classifier
            if self.attribute_vocab is None and classifier is None:
                raise ValueError("this model was trained without attributes (fit with --data.condition_column) "
                                 "and no attribute classifier was given")
            if self.attribute_vocab is not None:
                scale = self.conditioning.guidance_scale if request.guidance_scale is None else request.guidance_scale
                guidance = Guidance(self.attribute_vocab.encode(requests).to(self.device), scale)
            if classifier is not None:
                classifier = classifier.to(self.device).eval()
                guidance = dataclasses.replace(guidance, classifier=classifier, targets=classifier.encode(requests),
                                               classifier_scale=request.classifier_scale)
        lengths = self.data_lengths(num_samples, seed) if request.length == "data" else None
        c = request.constraints(self.tokenizer, self.hparams.seq_len)
        return Plan.build(num_samples, self.hparams.seq_len, None if c is None else c.known_ids,
                          None if c is None else c.logit_bias, lengths, self.pad_id, guidance, clean)
def read_diffusion_model(path: str, flag: str) -> DiffusionLM:
    """The DiffusionLM (not a student of one) in the checkpoint `path`, which `flag` gave; checked
    as every checkpoint is (`cdlm.checkpoints`)."""
    ckpt = read_checkpoint(path)
    name = model_name(ckpt, path)
    if name != "DiffusionLM":
        raise ValueError(f"{flag} {path!r} is not a DiffusionLM checkpoint (its model: {name})")
    return build(name, ckpt["hyper_parameters"], ckpt["state_dict"], path)


def check_same_data(model: DiffusionLM, source: str, tokenizer_json: str | None, seq_len: int) -> None:
    """ValueError unless data tokenized by `tokenizer_json` into `seq_len` tokens is the data
    `model` (read from `source`) was trained on: what a student or a classifier built on it needs."""
    h = model.hparams
    if tokenizer_json is not None and tokenizer_json != h.tokenizer_json \
            and load_tokenizer(tokenizer_json).get_vocab() != load_tokenizer(h.tokenizer_json).get_vocab():
        raise ValueError(f"the data's tokenizer differs from the one in {source!r}; use the data settings it was trained with")
    if seq_len != h.seq_len:
        raise ValueError(f"seq_len={seq_len} but {source!r} was trained with seq_len={h.seq_len}")
