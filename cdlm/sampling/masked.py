"""Masked (absorbing-state) diffusion sampling: from all-mask to tokens, known tokens never masked.

Every sampler starts from the mask token at each free position and only ever replaces a mask
by a token (SUBS: a decided token is carried over unchanged to the end):

- `ancestral` (MDLM): the reverse process over `steps` times t: 1 → 0; a masked position is
  unmasked between t and s with probability (α_s - α_t) / (1 - α_t). The network sees no time,
  so a step that unmasks nothing leaves its input, and so its output, unchanged: the next step
  reuses it (caching) and makes no call.
- `low_confidence` (LLaDA): each step predicts every masked token and keeps the most confident
  ones, as many as a linear schedule gives that step; the rest stay masked ("remasked").
- `semi_ar` (LLaDA): blocks of `block_length` positions, left to right, low-confidence inside each.
- `threshold` (Fast-dLLM parallel decoding): within blocks as semi_ar, each call keeps every
  prediction whose confidence exceeds `threshold` (at least the schedule's count), so the number
  of calls adapts to how sure the model is; `steps` bounds it.

`nfe` is exactly the number of network calls (classifier-free guidance makes two per step).
The settings are `cdlm.sampling.settings.MaskedSamplerConfig`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cdlm.sampling.base import Generation, in_chunks, most_confident, network_length
from cdlm.sampling.plan import Plan, guide
from cdlm.sampling.settings import MaskedSamplerConfig


# ------------------------------------------------------------------ one network evaluation
class MaskedDenoiser:
    """`denoiser(z) -> log p [B, L, V]` of the clean token at every position of z [B, L] for the
    samples of `plan` (one chunk's rows), counting network calls in `calls`.

    With the plan's attribute rows [B, A] (multi-hot) the network is conditioned on them; a
    guidance scale s other than 1 also runs it unconditioned (a second call) and guides: log p_u + s (log p_c - log p_u),
    renormalised. Then the plan's banned tokens apply (logit bias, padding before a length).

    With `network_len` the network sees only the first that many positions, the rest being
    known padding in every row (never unmasked, so their log p is never read; zeros there):
    an approximation, as the network was trained to attend to all of them.
    """

    def __init__(self, net, plan: Plan, network_len: int | None = None):
        self.net, self.plan, self.network_len = net, plan, network_len
        self.calls = 0

    def _log_p(self, z: torch.Tensor, attribute_rows: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        full, keep = z.shape[1], self.network_len
        if keep is None or keep >= full:
            return self.net(z, attribute_rows=attribute_rows).float().log_softmax(-1)
        log_p = self.net(z[:, :keep], attribute_rows=attribute_rows).float().log_softmax(-1)
        return torch.cat([log_p, log_p.new_zeros(log_p.shape[0], full - keep, log_p.shape[2])], 1)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        a, s = self.plan.guidance.attribute_rows, self.plan.guidance.scale
        if a is None or s == 1.0:
            log_p = self._log_p(z, a)
        elif s == 0.0:  # the unconditional model alone: one call
            log_p = self._log_p(z, torch.zeros_like(a))
        else:
            log_p = guide(self._log_p(z, a), self._log_p(z, torch.zeros_like(a)), s)
        return self.plan.restrict(log_p).log_softmax(-1)


def sample_tokens(log_p: torch.Tensor, temperature: float, generator: torch.Generator | None = None):
    """(tokens [B, L] drawn from softmax(log_p / temperature), the most probable at 0, and each
    one's probability under log_p: its confidence). Gumbel-max in float64: float32 noise is
    truncated, which lowers the effective temperature (Zheng et al. 2024)."""
    if temperature == 0:
        tokens = log_p.argmax(-1)
    else:
        u = torch.rand(log_p.shape, generator=generator, device=log_p.device, dtype=torch.float64)
        tokens = (log_p.double() / temperature - torch.log(-torch.log(u))).argmax(-1)
    return tokens, log_p.gather(-1, tokens[..., None]).squeeze(-1).exp()


# ------------------------------------------------------------------ the samplers
def ancestral(denoiser: MaskedDenoiser, z: torch.Tensor, mask_id: int, steps: int, alpha: Callable,
              temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """MDLM's ancestral sampler with caching (see the module); z [B, L] holds `mask_id` where free;
    `alpha(t)` is the process's probability that a token is still unmasked at time t."""
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    unmask_p = (alpha(times[1:]) - alpha(times[:-1])) / (1 - alpha(times[:-1]))
    log_p = None
    for p in unmask_p.tolist():  # the last step (s = 0) unmasks everything left: p = 1
        masked = z == mask_id
        if not masked.any():
            break
        if log_p is None:  # z changed since the last call (or there was none)
            log_p = denoiser(z)
        unmask = masked & (torch.rand(z.shape, generator=generator, device=z.device) < p)
        if unmask.any():
            tokens, _ = sample_tokens(log_p, temperature, generator)
            z = torch.where(unmask, tokens, z)
            log_p = None
    return z


def decode_blocks(denoiser: MaskedDenoiser, z: torch.Tensor, mask_id: int, steps: int, block_length: int,
                  temperature: float, generator: torch.Generator | None = None,
                  threshold: float | None = None) -> torch.Tensor:
    """Confidence-ordered decoding of z [B, L] (`mask_id` where free), block by block.

    The `steps` are shared out over the blocks (the first ones get the remainder); within a
    block each step keeps, per row, its most confident predictions: ceil(masked / steps left)
    of them (LLaDA's linear schedule: the same number each step, every one decided by the end),
    or with a `threshold` every one whose confidence exceeds it, if that is more. A step with
    nothing left to decide makes no call.
    """
    L = z.shape[1]
    starts = range(0, L, block_length)
    if steps < len(starts):
        raise ValueError(f"steps={steps} cannot cover {len(starts)} blocks of block_length={block_length}: "
                         "give at least one step per block")
    positions = torch.arange(L, device=z.device)
    for b, start in enumerate(starts):
        block_steps = steps // len(starts) + (b < steps % len(starts))
        in_block = (positions >= start) & (positions < start + block_length)
        for step in range(block_steps):
            free = (z == mask_id) & in_block
            left = free.sum(1)
            if not left.any():
                break
            count = (left + block_steps - step - 1) // (block_steps - step)
            tokens, confidence = sample_tokens(denoiser(z), temperature, generator)
            if threshold is not None:
                count = torch.maximum(count, (free & (confidence > threshold)).sum(1))
            z = torch.where(most_confident(confidence, free, count), tokens, z)
    return z


@torch.no_grad()
def generate(net, alpha: Callable, sampler: MaskedSamplerConfig, plan: Plan, generator: torch.Generator | None = None,
             batch_size: int = 256) -> Generation:
    """Sample the `plan`'s samples (`cdlm.sampling.plan.Plan`: known tokens, never masked;
    banned tokens; guidance by attributes) with a `MaskedNetwork` `net`, as `sampler` says, in
    chunks of `batch_size`. `alpha(t)` is the process's α_t, which the ancestral sampler steps through.

    The settings `trim_padding` and `group_lengths` cut cost as in `cdlm.sampling.continuous.generate`
    (off by default; trimming is an approximation, grouping changes which draws a sample gets).
    The random draws keep the full length, so a seed's samples differ under trimming only where
    the network's view of them does.
    """
    s = sampler

    def sample_chunk(rows: Plan) -> tuple[torch.Tensor, int]:
        known = rows.known_ids
        denoiser = MaskedDenoiser(net, rows, network_length(known, rows.pad_id) if s.trim_padding else None)
        z = torch.where(known >= 0, known, torch.full_like(known, net.mask_id))
        if s.method == "ancestral":
            z = ancestral(denoiser, z, net.mask_id, s.steps, alpha, s.temperature, generator)
        else:
            block = rows.seq_len if s.method == "low_confidence" else s.block_length
            z = decode_blocks(denoiser, z, net.mask_id, s.steps, block, s.temperature, generator,
                              s.threshold if s.method == "threshold" else None)
        return z, denoiser.calls

    return in_chunks(plan, batch_size, s.group_lengths, next(net.parameters()).device, sample_chunk)
