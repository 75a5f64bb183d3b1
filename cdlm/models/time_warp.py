"""Loss-warped time sampling (CDCD, Dieleman et al. 2022): spend training time where the loss
changes with the noise level.

The loss as a function of t rises from ~0 (the noisy vector names its token) to the unigram
entropy (pure noise). Where it is flat, training teaches little: the task is trivial or
hopeless. CDCD treats the monotone loss curve as an unnormalised CDF and samples t from it, so
the density of training times follows the slope of the loss.
"""

from __future__ import annotations

import torch
from torch import nn


class LossWarp(nn.Module):
    """A running loss curve over `bins` equal bins of t ∈ [0, 1] and sampling from its slope.

    Until a bin has been seen the curve is linear in t (uniform sampling); `uniform_mix` of the
    density stays uniform so that no noise level is ever abandoned. Buffers travel in checkpoints.
    """

    def __init__(self, bins: int = 64, momentum: float = 0.98, uniform_mix: float = 0.2):
        super().__init__()
        if bins < 2 or not 0 <= momentum < 1 or not 0 < uniform_mix <= 1:
            raise ValueError(f"need bins >= 2, momentum in [0, 1), uniform_mix in (0, 1]; got {bins}, {momentum}, {uniform_mix}")
        self.bins, self.momentum, self.uniform_mix = bins, momentum, uniform_mix
        self.register_buffer("curve", torch.linspace(0.0, 1.0, bins, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(bins, dtype=torch.bool))

    @torch.no_grad()
    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """Fold per-sample losses [B] at times t [B] into the curve (EMA per bin)."""
        idx = (t.double() * self.bins).long().clamp(0, self.bins - 1)
        sums = torch.zeros_like(self.curve).index_add_(0, idx, loss.double())
        counts = torch.zeros_like(self.curve).index_add_(0, idx, torch.ones_like(sums[idx]))
        hit = counts > 0
        mean = sums[hit] / counts[hit]
        old = self.curve[hit]
        self.curve[hit] = torch.where(self.seen[hit], self.momentum * old + (1 - self.momentum) * mean, mean)
        self.seen |= hit

    def probabilities(self) -> torch.Tensor:
        """Probability of each bin: the slope of the monotone loss curve, mixed with uniform."""
        monotone = torch.cummax(self.curve, 0).values
        slope = torch.gradient(monotone)[0].clamp(min=0)
        warped = slope / slope.sum() if slope.sum() > 0 else torch.full_like(slope, 1 / self.bins)
        return (1 - self.uniform_mix) * warped + self.uniform_mix / self.bins

    def warp(self, u: torch.Tensor) -> torch.Tensor:
        """Map u ∈ [0, 1) (uniform, or stratified) to times t by the inverse CDF."""
        probs = self.probabilities().to(u.device)
        cdf = torch.cumsum(probs, 0)
        k = torch.searchsorted(cdf, u.double().contiguous(), right=True).clamp(max=self.bins - 1)
        before = cdf[k] - probs[k]
        return ((k + ((u.double() - before) / probs[k]).clamp(0, 1)) / self.bins).to(u.dtype)
