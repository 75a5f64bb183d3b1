"""MaskedDiffusionLM: masked (absorbing-state) diffusion, MDLM / LLaDA style, on the shared backbone.

The forward process replaces each token independently by a mask token, with probability
1 - α_t at time t; the network predicts the clean token at every masked position from the rest
(SUBS: never the mask itself, and unmasked positions are carried over, so only masked positions
carry loss). Training minimises the continuous-time NELBO, a weighted masked-LM loss; sampling
unmasks from all-mask (`cdlm.sampling.masked`).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from cdlm.control.request import Request
from cdlm.models.absorbing import alpha, nelbo_weight
from cdlm.models.base import DiffusionBase, NoiseCurve
from cdlm.models.config import ConditioningConfig, MaskedTraining, OptimConfig
from cdlm.networks import MaskedNetwork, NetworkConfig, check_hparams
from cdlm.registry import register
from cdlm.sampling.masked import generate
from cdlm.sampling.plan import Guidance, Plan
from cdlm.sampling.settings import MaskedSamplerConfig

# Training times are drawn from [EPS, 1]: the 1/t weight of a masked token makes the loss's
# variance diverge as t → 0 (MDLM's and LLaDA's ε alike).
EPS = 1e-3


@register
class MaskedDiffusionLM(DiffusionBase):
    """A masked diffusion language model.

    Args:
        tokenizer_json: the tokenizer as a JSON string (filled in from the data module by the CLI).
        seq_len: sequence length (must equal the data module's).
        network: the bidirectional transformer's shape (`cdlm.networks.NetworkConfig`: width,
            depth, heads, dropout, loops, positions), as DiffusionLM's; no time input (the
            continuous model's embedding and output fields are not read).
        training: the absorbing process and the NELBO estimator (`cdlm.models.config.MaskedTraining`).
            `schedule` is α_t, the probability a token is unmasked at time t
            (`cdlm.models.absorbing`): "mask_linear" (1 - t) or "mask_cosine" (cos(πt/2)); the old
            names "log_linear" and "cosine" are accepted. It shapes the mdlm objective's time
            distribution and the ancestral sampler's steps; the NELBO itself does not depend on
            it. `objective` "mdlm": t ~ U(ε, 1) stratified over the batch, tokens masked with
            probability 1 - α_t, masked cross-entropies weighted by -α'_t / (1 - α_t);
            "llada": a masking ratio t ~ U(ε, 1) per sequence, cross-entropies divided by t.
            Both estimate the same NELBO per token, and coincide for mask_linear but for the
            stratification.
        optim: the optimizer and its schedule (`cdlm.models.config.OptimConfig`), as DiffusionLM's.
        ema_decay: decay of the EMA weights used for sampling (warmed up as (1+n)/(10+n)).
        sampler: the default sampler settings (`cdlm.sampling.settings.MaskedSamplerConfig`:
            method, steps, temperature, block_length, threshold) of `generate`, validation
            samples and `cdlm sample`/`eval`; a mapping of its fields works too.
        val_samples: samples generated and logged at each validation (0 disables).
        attribute_names: the data's attribute vocabulary (filled in by the CLI from a data module
            with `condition_column`): the network is then conditioned on each text's attributes.
        conditioning: how attributes are learnt and guided (`cdlm.models.config.ConditioningConfig`).
        length_counts: how many training texts have 0..seq_len tokens, filled in from the data
            module when training starts; `generate(length="data")` draws lengths from it.
        compile: run the network and its EMA under torch.compile (measured slower on CPU; see
            benchmarks/bench_throughput.py).

    Shared arguments have DiffusionLM's defaults. A change of class on the command line
    (`--model cdlm.MaskedDiffusionLM` after a continuous config) carries the plain arguments and
    the groups both classes type alike (`network`, `optim`, `conditioning`); `training` is another
    type here and starts from its defaults.
    """

    GROUPS = {"network": NetworkConfig, "training": MaskedTraining, "optim": OptimConfig,
              "conditioning": ConditioningConfig}
    kind = "masked"  # what the model is, for callers that treat the three alike (`LanguageModel.kind`)

    def __init__(
        self,
        tokenizer_json: str | None = None,
        seq_len: int = 40,
        network: NetworkConfig | None = None,
        training: MaskedTraining | None = None,
        optim: OptimConfig | None = None,
        ema_decay: float = 0.999,
        sampler: MaskedSamplerConfig | None = None,
        val_samples: int = 64,
        attribute_names: list[str] | None = None,
        conditioning: ConditioningConfig | None = None,
        length_counts: list[int] | None = None,
        compile: bool = False,
    ):
        super().__init__(tokenizer_json, attribute_names, optim, conditioning)
        self.network = NetworkConfig.of(network)
        self.training_config = MaskedTraining.of(training)
        check_hparams(seq_len=seq_len, ema_decay=ema_decay)  # the network's config checked its own fields
        self.sampler = MaskedSamplerConfig.of(sampler)
        self.save_hyperparameters()
        self.store_groups(network=self.network, training=self.training_config, sampler=self.sampler,
                          conditioning=self.conditioning)
        self.net = MaskedNetwork(self.tokenizer.get_vocab_size(), seq_len, self.network,
                                 num_attributes=len(self.attribute_vocab) if self.attribute_vocab else 0)
        self.mask_id = self.net.mask_id
        self.init_ema()

    # ---------------------------------------------------------------- training
    def masking(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(masking probability [B], weight of a masked token's cross-entropy [B]) of a training batch."""
        if self.training_config.objective == "llada":
            t = EPS + (1 - EPS) * torch.rand(batch, device=self.device, dtype=torch.float64)
            return t, 1 / t
        # one draw per stratum: same marginal, lower-variance batch loss
        u = (torch.rand((), device=self.device, dtype=torch.float64) + torch.arange(batch, device=self.device)) / batch
        t = EPS + (1 - EPS) * u[torch.randperm(batch, device=self.device)]
        schedule = self.training_config.schedule
        return 1 - alpha(schedule, t), nelbo_weight(schedule, t)

    def masked_nll(self, net: MaskedNetwork, ids: torch.Tensor, masked: torch.Tensor,
                   attribute_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy [B, L] of the tokens at `masked` positions given the rest (0 elsewhere)."""
        logits = net(ids.masked_fill(masked, self.mask_id), attribute_rows)
        return F.cross_entropy(logits.transpose(1, 2), ids, reduction="none") * masked

    def nelbo_terms(self, net: MaskedNetwork, ids: torch.Tensor, attribute_rows: torch.Tensor | None = None) -> torch.Tensor:
        """One-time Monte Carlo estimate [B] of each sequence's NELBO, by the `objective`."""
        rate, weight = self.masking(ids.shape[0])
        masked = torch.rand(ids.shape, device=ids.device) < rate[:, None].to(torch.float32)
        return weight.to(torch.float32) * self.masked_nll(net, ids, masked, attribute_rows).sum(1)

    def _loss(self, batch, stage: str):
        ids = batch[0]
        attribute_rows = batch[2] if len(batch) > 2 and self.net.attribute is not None else None
        if attribute_rows is not None and stage == "train":
            attribute_rows = self.drop_attribute_rows(attribute_rows)
        loss = self.nelbo_terms(self.net, ids, attribute_rows).mean() / ids.shape[1]  # nats per token
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=stage != "train", sync_dist=stage != "train")
        return loss

    @torch.no_grad()
    def nll_bound(self, ids: torch.Tensor, num_times: int = 16, use_ema: bool = True) -> torch.Tensor:
        """An upper bound on -log p(ids) in nats per sequence [B]: the continuous-time NELBO.

        NELBO = ∫ -α'_t/(1-α_t) E[Σ_masked -log p(w_i | z_t)] dt. The network sees no time, so
        the integral over t given l masked positions can be done exactly (∫₀¹ (1/r) P(l | r) dr
        = 1/l with r = 1 - α_t): NELBO = E_{l ~ U{1..L}} E_{|S| = l} [L/l Σ_{i∈S} -log p(w_i | w
        with S masked)], the same for every schedule. `num_times` draws of l, stratified, each
        with its own random set S; no t → 0 truncation, and finite variance. Every position counts,
        padding included (it encodes the length).
        """
        net = self.ema if use_ema else self.net
        B, L = ids.shape
        total = torch.zeros(B, dtype=torch.float64, device=ids.device)
        for k in range(num_times):
            u = (k + torch.rand(B, dtype=torch.float64, device=ids.device)) / num_times
            count = (u * L).long().clamp(max=L - 1) + 1  # uniform on 1..L over the strata
            rank = torch.rand(B, L, device=ids.device).argsort(1).argsort(1)
            nll = self.masked_nll(net, ids, rank < count[:, None]).sum(1).double()
            total += (L / count) * nll / num_times
        return total

    def sequence_nll(self, ids: torch.Tensor) -> torch.Tensor:
        return self.nll_bound(ids)

    # ---------------------------------------------------------------- sampling
    def sampler_report(self, **settings) -> dict:
        """The settings `eval` reports beside its metrics."""
        s = self.sampler.replace(**settings)
        return {name: getattr(s, name) for name in s.used()}

    @torch.no_grad()
    def loss_by_noise_level(self, ids: torch.Tensor, num_levels: int) -> NoiseCurve:
        rates = torch.linspace(0.05, 1.0, num_levels)
        loss = []
        for r in rates.tolist():
            masked = torch.rand(ids.shape, device=ids.device) < r
            masked[:, 0] |= ~masked.any(1)  # at least one masked position per text
            loss.append(float(self.masked_nll(self.net, ids, masked).sum() / masked.sum()))
        return NoiseCurve(rates.tolist(), loss, "mask rate", "cross-entropy per masked token, nats")

    def calls_per_chunk(self, settings: dict, prefix: str | None) -> int:
        return self.sampler.replace(**settings).steps  # at most one call a step

    def sample_ids(self, num_samples: int = 16, seed: int | None = None, use_ema: bool = True,
                   request: Request | None = None, batch_size: int = 256, **options):
        """Token ids [N, L] and the NFE (network calls) for a `request`
        (`cdlm.control.request.Request`), whose fields may also be given as keywords, with the
        model's sampler settings unless overridden: the other keywords are fields of
        `MaskedSamplerConfig` (method, steps, temperature, block_length, threshold); one its
        method does not read is an error, as is any other option.

        Control as DiffusionLM's (`cdlm.control.constraints`): `anchors`, `template`, `prefix`,
        `suffix` and `length` (an int, or "data": each sample's drawn from the training texts')
        fix tokens that are never masked, and ban padding before the length. `attributes` (models
        trained with a `condition_column`): one request for all samples or a list of N;
        `guidance_scale` overrides the classifier-free scale (two network calls a step unless 1).
        """
        request, settings = Request.split(request, options)
        given = {k: v for k, v in settings.items() if v is not None}
        foreign = sorted(set(given) - set(MaskedSamplerConfig.names()))
        if foreign:
            raise ValueError(f"a masked diffusion model cannot take {', '.join(foreign)}; "
                             f"its sampler settings are {', '.join(MaskedSamplerConfig.names())}")
        sampler = self.sampler.replace(**given)
        unread = [k for k in given if k not in sampler.used()]
        if unread:
            raise ValueError(f"method {sampler.method!r} does not use {', '.join(unread)}")
        if request.classifier is not None:
            raise ValueError("a masked diffusion model cannot take classifier")
        plan = self.sampling_plan(request, num_samples, seed)
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        was_training = self.training
        self.eval()
        try:
            return generate(self.ema if use_ema else self.net, partial(alpha, self.training_config.schedule), sampler, plan, generator,
                            batch_size)
        finally:
            self.train(was_training)

    def sampling_plan(self, request: Request, num_samples: int, seed: int | None = None) -> Plan:
        """The `Plan` of `num_samples` samples for `request`: its known tokens and banned ones,
        each sample's length ("data": drawn with `seed`), its attribute rows and guidance."""
        guidance = Guidance()
        if request.attributes is not None:
            scale = self.conditioning.guidance_scale if request.guidance_scale is None else request.guidance_scale
            guidance = Guidance(self.attribute_rows(request.attributes, num_samples), scale)
        elif request.guidance_scale is not None:
            raise ValueError("guidance_scale guides towards attributes: give attributes too")
        lengths = self.data_lengths(num_samples, seed) if request.length == "data" else None
        c = request.constraints(self.tokenizer, self.hparams.seq_len)
        return Plan.build(num_samples, self.hparams.seq_len, None if c is None else c.known_ids,
                          None if c is None else c.logit_bias, lengths, self.pad_id, guidance)
