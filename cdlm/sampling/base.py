"""What every sampler shares: its output, and the choice of the surest positions."""

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


def length_order(num_samples: int, seq_len: int, known_ids: torch.Tensor | None, lengths: torch.Tensor | None,
                 pad_id: int) -> torch.Tensor | None:
    """A stable order [num_samples] of the samples by content length (shortest first), so that
    batches hold samples of similar length; None when every sample has the same."""
    known = torch.full((num_samples, seq_len), -1, dtype=torch.long)
    if known_ids is not None:
        known = known_ids.cpu().expand(num_samples, seq_len).clone()
    if lengths is not None:
        known[torch.arange(seq_len)[None] >= lengths.cpu()[:, None]] = pad_id
    content = content_lengths(known, pad_id)
    if bool((content == content[0]).all()):
        return None
    return torch.sort(content, stable=True).indices


def in_order(order: torch.Tensor | None, *rows: torch.Tensor | None) -> list:
    """Per-sample inputs (rows [num_samples, ...], or None) moved into the samples' places in
    `order` (None: as they are)."""
    return [v if order is None or v is None else v[order.to(v.device)] for v in rows]


def original_order(ids: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """Rows sampled in `order` back in the order they were asked for."""
    return ids if order is None else ids[torch.argsort(order).to(ids.device)]
