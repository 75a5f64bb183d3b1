"""What every sampler shares: its output, its random stream, the choice of the surest positions,
and the loop over chunks of samples."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Generation:
    ids: torch.Tensor  # [B, L]
    nfe: int  # network calls per sample batch (denoiser calls for diffusion, the final rounding call included)


# mixed into every sampling seed (`noise_generator`); any constant other than 0 does
_SAMPLING_STREAM = 0x5EED_CD17


def noise_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of a sampler's random draws for `seed`, from a stream of its own. Seeded with
    `seed` itself it would replay the global stream that `seed_everything(seed)` gave the model's
    initialisation: the continuous model's first Gaussian draws are its initial embedding table,
    so sample 0's starting noise at position p would point at token p's embedding, and that
    sample would open with every token once, in id order."""
    import numpy as np

    mixed = int(np.random.SeedSequence([int(seed), _SAMPLING_STREAM]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(mixed)


def most_confident(confidence: torch.Tensor, free: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mask [B, L] of each row's `count` [B] free positions of highest `confidence` [B, L]."""
    rank = confidence.masked_fill(~free, -1.0).argsort(1, descending=True).argsort(1)
    return (rank < count[:, None]) & free


def content_lengths(known: torch.Tensor, pad_id: int) -> torch.Tensor:
    """[B]: each row of known ids [B, L] (-1 free) less its trailing run of known padding: the
    positions its sampler decides or that carry imposed tokens."""
    tail = (known == pad_id).flip(1).long().cumprod(1).sum(1)
    return known.shape[1] - tail


def network_length(known: torch.Tensor | None, pad_id: int) -> int | None:
    """How many leading positions the network must see for a batch with known ids [B, L] when
    trimming padding: the longest row's content (at least 1); None when nothing can be cut."""
    if known is None:
        return None
    keep = max(1, int(content_lengths(known, pad_id).max()))
    return keep if keep < known.shape[1] else None


def in_chunks(plan, batch_size: int, group_lengths: bool, device, sample_chunk) -> Generation:
    """The samples of `plan` (`cdlm.sampling.plan.Plan`) in chunks of `batch_size`:
    `sample_chunk(rows)` samples the plan of one chunk, moved to `device`, and returns its ids
    [n, L] and network calls. With `group_lengths` the samples are first sorted by content
    length, so that chunks hold samples of similar length (the ids come back in the order
    asked); nfe is the most calls any chunk made."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = plan.length_order() if group_lengths else None
    if order is not None:
        plan = plan.rows(order)
    chunks, nfe = [], 0
    for start in range(0, plan.num_samples, batch_size):
        ids, calls = sample_chunk(plan.rows(slice(start, start + batch_size), device))
        chunks.append(ids)
        nfe = max(nfe, calls)
    ids = torch.cat(chunks)
    return Generation(ids if order is None else ids[torch.argsort(order).to(ids.device)], nfe)
