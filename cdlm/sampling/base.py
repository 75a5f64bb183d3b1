"""What every sampler shares: its output, and the choice of the surest positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Generation:
    ids: torch.Tensor  # [B, L]
    nfe: int  # network calls per sample batch (denoiser calls for diffusion, the final rounding call included)


def most_confident(confidence: torch.Tensor, free: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mask [B, L] of each row's `count` [B] free positions of highest `confidence` [B, L]."""
    rank = confidence.masked_fill(~free, -1.0).argsort(1, descending=True).argsort(1)
    return (rank < count[:, None]) & free
