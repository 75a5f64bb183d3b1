"""The continuous model's denoiser: a ScoreNetwork wrapped, layer by layer, into the x0 estimate a
`solvers` method asks for.

Each layer is a small callable `layer(query) -> DenoiserOutput` around the one inside it, and
`Denoiser` composes those a call needs in one order, from the network out:

    network → classifier-free guidance → trimmed padding → self-conditioning guidance
            → bias (banned tokens) → classifier shift → known tokens (shown, imposed, committed)

Guidance by attributes sits inside self-conditioning guidance, so each of the two
self-conditioning calls is already attribute-guided; the known tokens are outermost, as they
change what the network sees (the input) as well as what comes out. The state that lives
between calls is outside the layers: the previous estimate (`SolverDenoiser.last`) and the
known tokens (`KnownTokens`), both held by the loop that samples.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cdlm.networks import CLEAN_LOG_SNR, ScoreNetwork
from cdlm.sampling.base import most_confident, network_length
from cdlm.sampling.plan import Guidance, Plan, guide
from cdlm.sampling.settings import SamplerConfig


class DenoiserOutput(NamedTuple):
    x0: torch.Tensor | None  # [B, L, d]; None only between layers, where the caller did not need it
    logits: torch.Tensor  # [B, L, V]


class Query(NamedTuple):
    """What one layer asks of the layer inside it."""

    x: torch.Tensor  # the network's input [B, L, d]
    lam: torch.Tensor  # its log-SNR: [B], or [B, L] where known tokens are shown clean
    t: torch.Tensor  # the solver's time [B]
    prev: torch.Tensor | None = None  # the previous x0 estimate (self-conditioning)
    attribute_rows: torch.Tensor | None = None  # [B, A]: the multi-hot attributes the network is conditioned on
    need_x0: bool = True  # False: the caller derives x0 from the logits, so an interpolating network may skip its own


def x0_from_logits(net: ScoreNetwork, logits: torch.Tensor, score_temperature: float, dtype: torch.dtype) -> torch.Tensor:
    """The interpolated x0 = softmax(logits / score_temperature) · E of adjusted logits."""
    return (torch.softmax(logits / score_temperature, -1) @ net.embedding.table().float()).to(dtype)


class NetworkCall:
    """The network itself, counting its calls (the NFE)."""

    # The network's x0 is skipped when the logits are adjusted (bias, banned padding, guidance)
    # and x0 is derived from them again: exact; False recomputes it, for measuring the saving.
    skip_unused_x0 = True

    def __init__(self, net: ScoreNetwork, score_temperature: float):
        self.net, self.score_temperature, self.calls = net, score_temperature, 0

    def __call__(self, q: Query) -> DenoiserOutput:
        self.calls += 1
        skip = {} if q.need_x0 or not self.skip_unused_x0 else {"return_x0": False}
        logits, x0 = self.net(q.x, q.lam, q.prev, temperature=self.score_temperature, attribute_rows=q.attribute_rows,
                              **skip)
        return DenoiserOutput(x0, logits)


class Guided:
    """Conditioned on the multi-hot attribute rows [B, A]; a scale s other than 1 also runs the network
    unconditioned, in one doubled batch, and guides the token log-probabilities:
    log p_u + s (log p_c - log p_u) (classifier-free guidance)."""

    def __init__(self, inner, net: ScoreNetwork, score_temperature: float, guidance: Guidance):
        self.inner, self.net, self.score_temperature = inner, net, score_temperature
        self.attribute_rows, self.scale = guidance.attribute_rows, guidance.scale

    def __call__(self, q: Query) -> DenoiserOutput:
        a, s = self.attribute_rows, self.scale
        if a is not None and a.shape[0] != q.x.shape[0]:  # adaptive integrators may change batch views
            raise ValueError(f"attribute rows for {a.shape[0]} samples but a batch of {q.x.shape[0]}")
        if a is None or s == 1.0:
            return self.inner(q._replace(attribute_rows=a))
        two = lambda v: None if v is None else torch.cat([v, v])  # noqa: E731
        # guided x0 follows from the guided logits when interpolating: the network's is not needed
        out = self.inner(Query(two(q.x), two(q.lam), two(q.t), two(q.prev), torch.cat([a, torch.zeros_like(a)]),
                               need_x0=not self.net.interpolate))
        cond, uncond = out.logits.log_softmax(-1).chunk(2)
        logits = guide(cond, uncond, s)
        if self.net.interpolate:
            return DenoiserOutput(x0_from_logits(self.net, logits, self.score_temperature, q.x.dtype), logits)
        x0_c, x0_u = out.x0.chunk(2)
        return DenoiserOutput(guide(x0_c, x0_u, s).to(q.x.dtype), logits)


class Trimmed:
    """The network sees only the first `keep` positions (None: all); the rest must be known
    padding for every row, whose outputs are imposed anyway: zeros there. The network was trained
    on full-length sequences, so this is an approximation (sampler setting `trim_padding`)."""

    def __init__(self, inner, keep: int | None):
        self.inner, self.keep = inner, keep

    def __call__(self, q: Query) -> DenoiserOutput:
        full, keep = q.x.shape[1], self.keep
        if keep is None or keep >= full:
            return self.inner(q)
        cut = lambda v: v if v is None or v.ndim < 2 else v[:, :keep]  # noqa: E731  (λ [B] is per sequence)
        out = self.inner(q._replace(x=cut(q.x), lam=cut(q.lam), prev=cut(q.prev)))
        grow = lambda v: None if v is None else torch.cat([v, v.new_zeros(v.shape[0], full - keep, v.shape[2])], 1)  # noqa: E731
        return DenoiserOutput(grow(out.x0), grow(out.logits))


class SelfGuided:
    """Guided by the self-conditioning input (ELF's self-conditioning CFG): with a scale s other
    than 1, logits l_0 + s (l_sc - l_0), from the network without the previous estimate (zeros,
    as in training without self-conditioning) and with it; x0 follows from the guided logits.
    That is a second network call per step, and none at the first step, where there is no
    estimate yet."""

    def __init__(self, inner, net: ScoreNetwork, score_temperature: float, scale: float):
        self.inner, self.net, self.score_temperature, self.scale = inner, net, score_temperature, scale

    def __call__(self, q: Query) -> DenoiserOutput:
        s = self.scale
        if q.prev is None:
            return self.inner(q)
        # with interpolation x0 follows from the guided logits: neither call's own x0 is needed
        with_sc, without = self.inner(q._replace(need_x0=False)), self.inner(q._replace(prev=None, need_x0=False))
        logits = guide(with_sc.logits, without.logits, s)
        if self.net.interpolate:
            return DenoiserOutput(x0_from_logits(self.net, logits, self.score_temperature, q.x.dtype), logits)
        return DenoiserOutput(guide(with_sc.x0, without.x0, s).to(q.x.dtype), logits)


class Restricted:
    """The plan's banned tokens at -inf (logit bias, padding before a sample's length), x0
    derived again from the restricted logits."""

    def __init__(self, inner, net: ScoreNetwork, score_temperature: float, plan: Plan):
        self.inner, self.net, self.score_temperature, self.plan = inner, net, score_temperature, plan

    def __call__(self, q: Query) -> DenoiserOutput:
        out = self.inner(q._replace(need_x0=False))
        logits = self.plan.restrict(out.logits)
        x0 = x0_from_logits(self.net, logits, self.score_temperature, q.x.dtype) if self.net.interpolate else out.x0
        return DenoiserOutput(x0, logits)


class ClassifierShift:
    """With a classifier and its targets, the gradient of log p(targets | x_t) joins the score
    with weight `classifier_scale`: as score = (α x0 - x_t) / σ², x0 moves by
    scale · σ²/α · ∇ log p (classifier guidance)."""

    def __init__(self, inner, sde, guidance: Guidance):
        self.inner, self.sde, self.guidance = inner, sde, guidance

    def __call__(self, q: Query) -> DenoiserOutput:
        out = self.inner(q)
        g = self.guidance
        log_snr = self.sde.log_snr(q.t).to(q.x.dtype)
        with torch.enable_grad():
            x = q.x.detach().float().requires_grad_(True)
            log_p = g.classifier.log_prob(x, log_snr.float(), g.targets).sum()
            (grad,) = torch.autograd.grad(log_p, x)
        alpha, sigma = self.sde.alpha(q.t), self.sde.sigma(q.t)
        factor = (sigma**2 / alpha).to(q.x.dtype).view(-1, *([1] * (q.x.ndim - 1)))
        return out._replace(x0=out.x0 + (g.classifier_scale * factor * grad).to(q.x.dtype))


class KnownTokens:
    """The tokens imposed on one chunk of samples, held by the loop that samples it across
    solver passes: `ids` [B, L] (-1 where free) start as the plan's `imposed` ones; commitment
    adds the surest free positions during a pass, and restarts may keep the surest ones
    (`keep_surest`). Known tokens the plan does not show clean reach the network noised with
    one fixed ε (`noise`, drawn at the first call that needs it, or given)."""

    def __init__(self, imposed: torch.Tensor, clean: str = "none", pad_id: int = 0,
                 generator: torch.Generator | None = None, noise: torch.Tensor | None = None):
        self.imposed = self.ids = imposed
        self.clean, self.pad_id, self.generator, self.noise = clean, pad_id, generator, noise

    def shown_clean(self, known: torch.Tensor) -> torch.Tensor:
        if self.clean == "all":
            return known
        if self.clean == "padding":
            return known & (self.ids == self.pad_id)
        return torch.zeros_like(known)

    def commit(self, logits: torch.Tensor, t: float) -> None:
        """Make the most confident free positions known until a fraction 1 - t is known: positions
        are decided one after another, each given the ones before."""
        known = self.ids >= 0
        L = known.shape[1]
        target = min(L, int(round((1.0 - t) * L)))
        need = (target - known.sum(1)).clamp(min=0)  # [B]
        if int(need.max()) == 0:
            return
        confidence, best = torch.softmax(logits.float(), -1).max(-1)
        self.ids = torch.where(most_confident(confidence, ~known, need), best, self.ids)

    def keep_surest(self, logits: torch.Tensor, ids: torch.Tensor, fraction: float) -> None:
        """Known again: the imposed tokens plus the `fraction` of the free positions where `ids`
        are most probable under `logits` (a restart's mask-predict)."""
        self.ids = keep_confident(logits, ids, self.imposed, fraction)


class Imposed:
    """Known tokens: the network sees them clean at CLEAN_LOG_SNR or as a forward-noised copy at
    the current time; their x0 is their embedding and their logits allow only them. With
    `commit`, after each call the most confident free positions become known, so that a fraction
    1 - t of the sequence is decided by time t."""

    def __init__(self, inner, net: ScoreNetwork, sde, known: KnownTokens, commit: bool):
        self.inner, self.net, self.sde, self.known, self.commit = inner, net, sde, known, commit

    def __call__(self, q: Query) -> DenoiserOutput:
        known_ids = self.known.ids
        mask = known_ids >= 0
        if mask.any():
            e_known = self.net.embedding(known_ids.clamp(min=0)).to(q.x.dtype)
            clean = self.known.shown_clean(mask)
            noised, x_in, lam = mask & ~clean, q.x, q.lam
            if noised.any():
                if self.known.noise is None:
                    self.known.noise = torch.randn(q.x.shape, generator=self.known.generator, device=q.x.device,
                                                   dtype=q.x.dtype)
                x_in = torch.where(noised[..., None], self.sde.perturb(e_known, q.t, self.known.noise), x_in)
            if clean.any():
                x_in = torch.where(clean[..., None], e_known, x_in)
                lam = torch.where(clean, torch.full(mask.shape, CLEAN_LOG_SNR, dtype=q.x.dtype, device=q.x.device),
                                  lam[:, None])
            out = self.inner(q._replace(x=x_in, lam=lam))
            forced = torch.full_like(out.logits, float("-inf")).scatter_(-1, known_ids.clamp(min=0)[..., None], 0.0)
            out = DenoiserOutput(torch.where(mask[..., None], e_known, out.x0),
                                 torch.where(mask[..., None], forced, out.logits))
        else:
            out = self.inner(q)
        if self.commit:
            self.known.commit(out.logits, float(q.t.max()))
        return out


class Denoiser:
    """`denoiser(x_t, t, prev) -> DenoiserOutput(x0, logits)` over a ScoreNetwork: the layers of
    this module that the samples of `plan` (one chunk's rows) need, in their order, as `sampler`
    says (score temperature, self-conditioning guidance, trimmed padding, commitment). `prev` is the
    previous x0 estimate, read by networks trained with self-conditioning; `known` the chunk's
    known tokens (default: the plan's, noise drawn from the global stream). Gradients stay on:
    distillation trains a student through exactly what sampling runs (`cdlm.models.distilled`);
    `network.calls` counts the network calls."""

    def __init__(self, net: ScoreNetwork, sde, sampler: SamplerConfig, plan: Plan, known: KnownTokens | None = None):
        t, g = sampler.score_temperature, plan.guidance
        self.net, self.sde = net, sde
        self.network = layer = NetworkCall(net, t)
        if g.attribute_rows is not None:
            layer = Guided(layer, net, t, g)
        keep = network_length(plan.known_ids, plan.pad_id) if sampler.trim_padding else None
        if keep is not None:
            layer = Trimmed(layer, keep)
        if sampler.self_condition_scale != 1.0 and net.self_condition:
            layer = SelfGuided(layer, net, t, sampler.self_condition_scale)
        if plan.restricts:
            layer = Restricted(layer, net, t, plan)
        if g.classifier is not None and g.classifier_scale:
            layer = ClassifierShift(layer, sde, g)
        self.known = KnownTokens(plan.known_ids, plan.clean, plan.pad_id) if known is None else known
        self.layers = Imposed(layer, net, sde, self.known, sampler.commit)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, prev: torch.Tensor | None = None) -> DenoiserOutput:
        if not self.net.self_condition or (prev is not None and prev.shape != x_t.shape):
            prev = None  # (adaptive integrators may change batch views)
        return self.layers(Query(x_t, self.sde.log_snr(t).to(x_t.dtype), t, prev))


class SolverDenoiser:
    """The denoiser as a `solvers` method calls it, `(x_t, t) -> x0`, without gradients, each call
    self-conditioned on the estimate of the call before: `last`, kept across the solver passes
    of one chunk (restarts) by the loop that owns this object."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser, self.last = denoiser, None

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.last = self.denoiser(x_t, t, None if self.last is None else self.last.x0)
        return self.last.x0

    def output(self, x_t: torch.Tensor, t: torch.Tensor) -> DenoiserOutput:
        """The whole output of one more call (the rounding call at the end time)."""
        self(x_t, t)
        return self.last


def keep_confident(logits: torch.Tensor, ids: torch.Tensor, known: torch.Tensor | None, fraction: float) -> torch.Tensor:
    """Known ids [B, L] (-1 free): `known` plus the `fraction` of each row's free positions
    where `ids` are most probable under `logits`."""
    if known is None:
        known = torch.full_like(ids, -1)
    free = known < 0
    confidence = torch.softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]
    kept = most_confident(confidence, free, (fraction * free.sum(1)).round())
    return torch.where(kept, ids, known)
