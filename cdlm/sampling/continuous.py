"""Generation: solve from noise with the continuous model's denoiser (`cdlm.sampling.denoiser`),
round to ids, and restart: re-noise the rounded result and solve again.
"""

from __future__ import annotations

import torch

import solvers
from cdlm.networks import ScoreNetwork
from cdlm.sampling.base import Generation, in_chunks
from cdlm.sampling.denoiser import Denoiser, KnownTokens, SolverDenoiser
from cdlm.sampling.plan import Plan
from cdlm.sampling.settings import SamplerConfig


def clamp_hook(net: ScoreNetwork, sde, below_t: float):
    """x0 hook snapping the estimate to the nearest token embedding once t < below_t."""

    def hook(x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if float(t.max()) >= below_t:
            return x0
        return net.embedding(net.embedding.nearest(x0)).to(x0.dtype)

    return hook


@torch.no_grad()
def restart_levels(sampler: SamplerConfig) -> torch.Tensor:
    """The log-SNR [restarts] each restart re-noises to: linear from `restart_log_snr` (the first)
    to `restart_log_snr_end` (the last; None: the same level)."""
    end = sampler.restart_log_snr if sampler.restart_log_snr_end is None else sampler.restart_log_snr_end
    return torch.linspace(sampler.restart_log_snr, end, sampler.restarts, dtype=torch.float64)


def generate(net: ScoreNetwork, sde, sampler: SamplerConfig, plan: Plan, generator: torch.Generator | None = None,
             batch_size: int = 256, solver_options: dict | None = None) -> Generation:
    """Sample the `plan`'s samples (`cdlm.sampling.plan.Plan`: known tokens, banned tokens,
    lengths, guidance) from noise, as `sampler` says (`SamplerConfig`: method, steps,
    score temperature, clamping, rounding, restarts, commitment), in chunks of `batch_size`;
    `solver_options` go to `solvers.sample` (`t_end`, rtol for adaptive methods, ...).

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
    device = next(net.parameters()).device
    classifier = plan.guidance.classifier
    if classifier is not None and not torch.allclose(classifier.embedding.to(device), net.embedding.table().float(), atol=1e-5):
        raise ValueError("the classifier was trained on another model's embeddings; train it on this checkpoint")
    d = net.embedding.weight.shape[1]
    options = dict(solver_options or {})
    t_end = options.pop("t_end", None)
    t_end = float(sde.t_min_default if t_end is None else t_end)
    t_restarts = [float(t) for t in sde.t_from_log_snr(restart_levels(sampler))]
    x0_hook = clamp_hook(net, sde, sampler.clamp_below_t) if sampler.clamp_below_t > 0 else None

    def sample_chunk(rows: Plan) -> tuple[torch.Tensor, int]:
        n, seq_len = rows.known_ids.shape
        # the state that outlives a solver pass: the known tokens and the last estimate
        known = KnownTokens(rows.known_ids, rows.clean, rows.pad_id, generator)
        denoiser = Denoiser(net, sde, sampler, rows, known)
        solver_denoiser = SolverDenoiser(denoiser)
        x = sde.prior_sample((n, seq_len, d), generator=generator, device=device)
        ids = final = None
        for k in range(sampler.restarts + 1):
            t_from, pass_steps = (1.0, sampler.steps) if k == 0 else (t_restarts[k - 1], sampler.restart_steps)
            if k:
                if sampler.restart_keep > 0:
                    known.keep_surest(final.logits, ids, sampler.restart_keep * k / sampler.restarts)
                noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
                x = sde.perturb(net.embedding(ids).to(x.dtype), torch.full((n,), t_from, device=device), noise)
            result = solvers.sample(
                solver_denoiser, sde, x, method=sampler.method, steps=pass_steps, t_start=t_from, t_end=t_end,
                generator=generator, x0_hook=x0_hook, **options,
            )
            # rounding "last" reads the solver's last estimate; the others make one more call at the end time
            final = solver_denoiser.last if sampler.rounding == "last" else \
                solver_denoiser.output(result.x, torch.full((n,), t_end, device=device))
            ids = net.embedding.nearest(final.x0) if sampler.rounding == "nearest" else final.logits.argmax(-1)
        return ids, denoiser.network.calls

    return in_chunks(plan, batch_size, sampler.group_lengths, device, sample_chunk)
