"""Generation: wrap a trained score network as a `solvers` denoiser, solve from noise, round to ids.

The denoiser carries the sampling-time state the solvers need not know about:
self-conditioning on the previous x0 estimate, score temperature, known tokens (anchors,
templates, prefixes; see `cdlm.control.constraints`), confidence-ordered commitment, and the x0 hook
that clamps to the nearest embedding late in sampling. Restart passes re-noise the rounded
result and solve again.
"""

from __future__ import annotations

import torch

import solvers
from cdlm.networks import CLEAN_LOG_SNR, ScoreNetwork
from cdlm.sampling.base import Generation, in_order, length_order, most_confident, network_length, original_order
from cdlm.sampling.settings import SamplerConfig


class Denoiser:
    """`denoiser(x_t, t) -> x0_hat` over a ScoreNetwork, remembering its last estimate and logits.

    Known tokens (`known_ids` [B, L], -1 where free) are imposed at every call: their x0 is
    their embedding and their logits allow only them. The network sees them either clean at
    CLEAN_LOG_SNR (`clean_known`, for models trained with clean context; `clean_pad` for known
    padding only, for models trained with clean padding) or as a forward-noised copy at the
    current time. With `commit`, after each call the most confident free positions
    become known, so that a fraction 1 - t of the sequence is decided by time t: positions are
    decided one after another, each given the ones before, instead of all independently.

    With `attributes` [B, A] the network is conditioned on them; a `guidance_scale` s other
    than 1 also runs it unconditioned (one doubled batch) and guides the token log-probabilities,
    log p_u + s (log p_c - log p_u) (classifier-free guidance).

    A `self_condition_scale` s other than 1 guides by the self-conditioning input instead (ELF's
    self-conditioning CFG): logits l_0 + s (l_sc - l_0), from the network without its previous
    x0 estimate (zeros, as in training without self-conditioning) and with it; x0 follows from
    the guided logits. It needs a second network call per step, and none at the first step,
    where there is no estimate yet.

    With a `classifier` (`cdlm.models.classifier.AttributeClassifier`) and its `classifier_targets`
    [B, A], the gradient of log p(targets | x_t) joins the score with weight `classifier_scale`:
    as score = (α x0 - x_t) / σ², x0 moves by scale · σ²/α · ∇ log p (classifier guidance).

    With `network_len` the network sees only the first that many positions: the rest must be
    known padding for every row, whose outputs are imposed anyway (`generate_ids(trim_padding=True)`).
    The network was trained on full-length sequences, so this is an approximation, not exact.
    """

    # The network's x0 is skipped when the logits are adjusted (bias, banned padding, guidance)
    # and x0 is derived from them again: exact; False recomputes it, for measuring the saving.
    skip_unused_x0 = True

    def __init__(self, net: ScoreNetwork, sde, temperature: float = 1.0, self_condition: bool = True,
                 known_ids: torch.Tensor | None = None, clean_known: bool = False, commit: bool = False,
                 logit_bias: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 attributes: torch.Tensor | None = None, guidance_scale: float = 1.0,
                 classifier=None, classifier_targets: torch.Tensor | None = None, classifier_scale: float = 1.0,
                 pad_banned: torch.Tensor | None = None, pad_id: int = 0, clean_pad: bool = False,
                 self_condition_scale: float = 1.0, network_len: int | None = None):
        self.net, self.sde, self.temperature = net, sde, temperature
        self.network_len = network_len
        self.self_condition_scale = self_condition_scale
        self.self_condition = self_condition and net.self_condition
        self.known_ids, self.clean_known, self.clean_pad, self.commit = known_ids, clean_known, clean_pad, commit
        self.logit_bias = logit_bias  # [L, V]: -inf bans a token at a position (length control)
        self.pad_banned, self.pad_id = pad_banned, pad_id  # [B, L]: per-sample lengths
        self.generator = generator
        self.attributes, self.guidance_scale = attributes, guidance_scale
        self.classifier, self.classifier_targets, self.classifier_scale = classifier, classifier_targets, classifier_scale
        self.noise: torch.Tensor | None = None  # fixed ε of the forward-noised known tokens
        self.x0_prev: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.network_calls = 0  # the NFE: self-conditioning guidance makes two per step

    def _known(self, x_t: torch.Tensor) -> torch.Tensor:
        if self.known_ids is None:
            self.known_ids = torch.full(x_t.shape[:2], -1, dtype=torch.long, device=x_t.device)
        return self.known_ids

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.denoise(x_t, t)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """`__call__` with gradients left on: distillation trains a student through exactly
        what sampling will run (`cdlm.models.distilled`)."""
        log_snr = self.sde.log_snr(t).to(x_t.dtype)
        prev = self.x0_prev if self.self_condition and self.x0_prev is not None else None
        if prev is not None and prev.shape != x_t.shape:  # adaptive integrators may change batch views
            prev = None
        known_ids = self._known(x_t)
        mask = known_ids >= 0
        x_in, lam = x_t, log_snr
        if mask.any():
            e_known = self.net.embedding(known_ids.clamp(min=0)).to(x_t.dtype)
            if self.clean_known:
                clean = mask
            elif self.clean_pad:
                clean = mask & (known_ids == self.pad_id)
            else:
                clean = torch.zeros_like(mask)
            noised = mask & ~clean
            if noised.any():
                if self.noise is None:
                    self.noise = torch.randn(x_t.shape, generator=self.generator, device=x_t.device, dtype=x_t.dtype)
                x_in = torch.where(noised[..., None], self.sde.perturb(e_known, t, self.noise), x_in)
            if clean.any():
                x_in = torch.where(clean[..., None], e_known, x_in)
                lam = torch.where(clean, torch.full(mask.shape, CLEAN_LOG_SNR, dtype=x_t.dtype, device=x_t.device),
                                  log_snr[:, None])
        adjusted = self.logit_bias is not None or self.pad_banned is not None
        logits, x0 = self._self_guided(x_in, lam, prev, need_x0=not adjusted)
        if adjusted:
            if self.logit_bias is not None:
                logits = logits + self.logit_bias
            if self.pad_banned is not None:
                logits[..., self.pad_id] = logits[..., self.pad_id].masked_fill(self.pad_banned, float("-inf"))
            if self.net.interpolate:
                x0 = (torch.softmax(logits / self.temperature, -1) @ self.net.embedding.table().float()).to(x_in.dtype)
        if self.classifier is not None and self.classifier_scale:
            x0 = x0 + self._classifier_shift(x_in, t, log_snr)
        if mask.any():
            forced = torch.full_like(logits, float("-inf")).scatter_(-1, known_ids.clamp(min=0)[..., None], 0.0)
            logits = torch.where(mask[..., None], forced, logits)
            x0 = torch.where(mask[..., None], e_known, x0)
        if self.commit:
            self._commit(logits, float(t.max()))
        self.logits, self.x0_prev = logits, x0
        return x0

    def _classifier_shift(self, x_t: torch.Tensor, t: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x_t.detach().float().requires_grad_(True)
            log_p = self.classifier.log_prob(x, log_snr.float(), self.classifier_targets).sum()
            (grad,) = torch.autograd.grad(log_p, x)
        alpha, sigma = self.sde.alpha(t), self.sde.sigma(t)
        factor = (sigma**2 / alpha).to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        return (self.classifier_scale * factor * grad).to(x_t.dtype)

    def _self_guided(self, x_in, lam, prev, need_x0: bool = True):
        s = self.self_condition_scale
        if s == 1.0 or prev is None:
            return self._network(x_in, lam, prev, need_x0)
        # with interpolation x0 follows from the guided logits: neither call's own x0 is needed
        with_sc, without = self._network(x_in, lam, prev, False), self._network(x_in, lam, None, False)
        logits = without[0] + s * (with_sc[0] - without[0])
        if self.net.interpolate:
            x0 = torch.softmax(logits / self.temperature, -1) @ self.net.embedding.table().float()
        else:
            x0 = without[1] + s * (with_sc[1] - without[1])
        return logits, x0.to(x_in.dtype)

    def _network(self, x_in, lam, prev, need_x0: bool = True):
        """(logits, x0 or None when not `need_x0` and interpolating) at every position; with
        `network_len` the network runs on that prefix and the rest is zeros, to be imposed."""
        full, keep = x_in.shape[1], self.network_len
        if keep is None or keep >= full:
            return self._forward(x_in, lam, prev, need_x0)
        cut = lambda v: v if v is None or v.ndim < 2 else v[:, :keep]  # noqa: E731  (λ [B] is per sequence)
        logits, x0 = self._forward(cut(x_in), cut(lam), cut(prev), need_x0)
        grow = lambda v: None if v is None else torch.cat([v, v.new_zeros(v.shape[0], full - keep, v.shape[2])], 1)  # noqa: E731
        return grow(logits), grow(x0)

    def _forward(self, x_in, lam, prev, need_x0: bool = True):
        a, s = self.attributes, self.guidance_scale
        # skipping x0 leaves it None, which only callers that rebuild it from the logits ask for
        skip = {} if need_x0 or not self.skip_unused_x0 else {"return_x0": False}
        if a is not None and a.shape[0] != x_in.shape[0]:  # adaptive integrators may change batch views
            raise ValueError(f"attributes for {a.shape[0]} samples but a batch of {x_in.shape[0]}")
        self.network_calls += 1  # classifier-free guidance batches its two passes into one call
        if a is None or s == 1.0:
            return self.net(x_in, lam, prev, temperature=self.temperature, attributes=a, **skip)
        two = lambda v: None if v is None else torch.cat([v, v])  # noqa: E731
        # guided x0 follows from the guided logits when interpolating: the network's is not needed
        skip = {"return_x0": False} if self.net.interpolate and self.skip_unused_x0 else {}
        logits, x0 = self.net(two(x_in), two(lam), two(prev), temperature=self.temperature,
                              attributes=torch.cat([a, torch.zeros_like(a)]), **skip)
        cond, uncond = logits.log_softmax(-1).chunk(2)
        logits = uncond + s * (cond - uncond)
        if self.net.interpolate:
            x0 = torch.softmax(logits / self.temperature, -1) @ self.net.embedding.table().float()
        else:
            x0_c, x0_u = x0.chunk(2)
            x0 = x0_u + s * (x0_c - x0_u)
        return logits, x0.to(x_in.dtype)

    def _commit(self, logits: torch.Tensor, t: float) -> None:
        """Make the most confident free positions known until a fraction 1 - t is known."""
        known = self.known_ids >= 0
        L = known.shape[1]
        target = min(L, int(round((1.0 - t) * L)))
        need = (target - known.sum(1)).clamp(min=0)  # [B]
        if int(need.max()) == 0:
            return
        confidence, best = torch.softmax(logits.float(), -1).max(-1)
        newly = most_confident(confidence, ~known, need)
        self.known_ids = torch.where(newly, best, self.known_ids)


def clamp_hook(net: ScoreNetwork, sde, below_t: float):
    """x0 hook snapping the estimate to the nearest token embedding once t < below_t."""

    def hook(x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if float(t.max()) >= below_t:
            return x0
        return net.embedding(net.embedding.nearest(x0)).to(x0.dtype)

    return hook


def keep_confident(logits: torch.Tensor, ids: torch.Tensor, known: torch.Tensor | None, fraction: float) -> torch.Tensor:
    """Known ids [B, L] (-1 free): `known` plus the `fraction` of each row's free positions
    where `ids` are most probable under `logits`."""
    if known is None:
        known = torch.full_like(ids, -1)
    free = known < 0
    confidence = torch.softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]
    kept = most_confident(confidence, free, (fraction * free.sum(1)).round())
    return torch.where(kept, ids, known)


@torch.no_grad()
def generate_ids(
    net: ScoreNetwork,
    sde,
    num_samples: int,
    seq_len: int,
    sampler: SamplerConfig,
    known_ids: torch.Tensor | None = None,
    clean_known: bool = False,
    clean_pad: bool = False,
    logit_bias: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    attributes: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    classifier=None,
    classifier_targets: torch.Tensor | None = None,
    classifier_scale: float = 1.0,
    lengths: torch.Tensor | None = None,
    pad_id: int = 0,
    **solver_options,
) -> Generation:
    """Sample `num_samples` id sequences of length `seq_len` from noise, as `sampler` says
(`SamplerConfig`: method, steps, temperature, clamping, rounding, restarts, commitment).

    `known_ids` ([L] or [num_samples, L], -1 where free) are tokens imposed at every step
    (anchors, templates, prefixes); `commit` decides the free positions in order of confidence
    (see `Denoiser`); `clean_known` shows known tokens clean (models trained with clean context),
    `clean_pad` only known padding (models trained with clean padding);
    `logit_bias` [L, V] bans tokens where it is -inf (length control); `attributes` [num_samples, A]
    condition each sample, guided with `guidance_scale`; a `classifier` guides towards its
    `classifier_targets` [num_samples, A'] with `classifier_scale` (see `Denoiser`). `lengths`
    [num_samples] gives each sample its number of tokens: `pad_id` after it, none before.

    With `restarts` > 0, the rounded result is re-noised to log-SNR `restart_log_snr` and
    solved again in `restart_steps` steps, that many times (restart sampling, Xu et al. 2023):
    each pass lets every position revise itself given a nearly decided sentence. With
    `restart_log_snr_end`, the level moves linearly from `restart_log_snr` (first restart) to it
    (last): coarse revisions first, fine ones last. With `restart_keep` f > 0, restart k of K
    keeps the f·k/K most confident free positions known (shown clean to models trained with
    clean context) and re-noises only the rest: continuous mask-predict (Ghazvininejad et al.
    2019), each revision made given the surest tokens.

    Cost cuts (`cdlm.sampling.base`; sampler settings, off by default, as neither keeps today's
    samples): `trim_padding` runs the network only over each batch's longest content (positions up to the
    last one that is not known padding), the padding after it imposed as before. Not exact: the
    network was trained to see, and attends to, every position's padding. The random draws are
    unchanged (the solver state keeps its full length), so with an ODE method a seed's samples
    differ only where the network's view does. `group_lengths` sorts the samples by content
    length before they are cut into batches of `batch_size`, so that `trim_padding` cuts more;
    the ids come back in the original order, each sample drawn as before given its length and
    conditions, but with other noise than ungrouped (the noise follows the batch position).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    device = next(net.parameters()).device
    if classifier is not None and not torch.allclose(classifier.embedding.to(device), net.embedding.table().float(), atol=1e-5):
        raise ValueError("the classifier was trained on another model's embeddings; train it on this checkpoint")
    d = net.embedding.weight.shape[1]
    t_end = solver_options.pop("t_end", None)
    t_end = float(sde.t_min_default if t_end is None else t_end)
    end = sampler.restart_log_snr if sampler.restart_log_snr_end is None else sampler.restart_log_snr_end
    levels = torch.linspace(sampler.restart_log_snr, end, max(sampler.restarts, 1), dtype=torch.float64)
    t_restarts = [float(t) for t in sde.t_from_log_snr(levels)]
    x0_hook = clamp_hook(net, sde, sampler.clamp_below_t) if sampler.clamp_below_t > 0 else None
    order = length_order(num_samples, seq_len, known_ids, lengths, pad_id) if sampler.group_lengths else None
    if known_ids is not None and known_ids.ndim == 2 and known_ids.shape[0] == num_samples:  # else shared by all
        known_ids = in_order(order, known_ids)[0]
    lengths, attributes, classifier_targets = in_order(order, lengths, attributes, classifier_targets)
    chunks, nfe = [], 0
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        known, pad_banned = None, None
        if known_ids is not None:
            known = known_ids.to(device).expand(num_samples, seq_len)[start : start + n].clone()
        if lengths is not None:
            if known is None:
                known = torch.full((n, seq_len), -1, dtype=torch.long, device=device)
            after = torch.arange(seq_len, device=device)[None] >= lengths[start : start + n, None].to(device)
            if (known[after] >= 0).any():
                raise ValueError("known tokens lie beyond a sampled length")
            known[after] = pad_id
            pad_banned = ~after
        denoiser = Denoiser(net, sde, sampler.temperature, known_ids=known, clean_known=clean_known, commit=sampler.commit,
                            logit_bias=None if logit_bias is None else logit_bias.to(device), generator=generator,
                            attributes=None if attributes is None else attributes[start : start + n].to(device),
                            guidance_scale=guidance_scale, classifier=classifier,
                            classifier_targets=None if classifier_targets is None else classifier_targets[start : start + n],
                            classifier_scale=classifier_scale, pad_banned=pad_banned, pad_id=pad_id,
                            clean_pad=clean_pad, self_condition_scale=sampler.self_condition_scale,
                            network_len=network_length(known, pad_id) if sampler.trim_padding else None)
        x = sde.prior_sample((n, seq_len, d), generator=generator, device=device)
        ids = None
        for k in range(sampler.restarts + 1):
            t_from, pass_steps = (1.0, sampler.steps) if k == 0 else (t_restarts[k - 1], sampler.restart_steps)
            if k:
                if sampler.restart_keep > 0:  # `known` stays the imposed tokens; the kept ones change per restart
                    denoiser.known_ids = keep_confident(denoiser.logits, ids, known, sampler.restart_keep * k / sampler.restarts)
                noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
                x = sde.perturb(net.embedding(ids).to(x.dtype), torch.full((n,), t_from, device=device), noise)
            result = solvers.sample(
                denoiser, sde, x, method=sampler.method, steps=pass_steps, t_start=t_from, t_end=t_end,
                generator=generator, x0_hook=x0_hook, **solver_options,
            )
            if sampler.rounding != "last":
                denoiser(result.x, torch.full((n,), t_end, device=device))  # logits at the end time
            ids = net.embedding.nearest(denoiser.x0_prev) if sampler.rounding == "nearest" else denoiser.logits.argmax(-1)
        chunks.append(ids)
        nfe = max(nfe, denoiser.network_calls)
    return Generation(original_order(torch.cat(chunks), order), nfe)
