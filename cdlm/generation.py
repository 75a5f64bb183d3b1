"""Generation: wrap a trained score network as a `solvers` denoiser, solve from noise, round to ids.

The denoiser carries the sampling-time state the solvers need not know about:
self-conditioning on the previous x0 estimate, score temperature, and the x0 hooks
(clamping to the nearest embedding late in sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import solvers
from cdlm.model import ScoreNetwork

ROUNDINGS = ("logits", "nearest")


@dataclass
class Generation:
    ids: torch.Tensor  # [B, L]
    nfe: int  # denoiser calls per sample batch, including the final rounding call


class Denoiser:
    """`denoiser(x_t, t) -> x0_hat` over a ScoreNetwork, remembering its last estimate and logits."""

    def __init__(self, net: ScoreNetwork, sde, temperature: float = 1.0, self_condition: bool = True):
        self.net, self.sde, self.temperature = net, sde, temperature
        self.self_condition = self_condition and net.self_condition
        self.x0_prev: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        log_snr = self.sde.log_snr(t).to(x_t.dtype)
        prev = self.x0_prev if self.self_condition and self.x0_prev is not None else None
        if prev is not None and prev.shape != x_t.shape:  # adaptive integrators may change batch views
            prev = None
        self.logits, x0 = self.net(x_t, log_snr, prev, temperature=self.temperature)
        self.x0_prev = x0
        return x0


def clamp_hook(net: ScoreNetwork, sde, below_t: float):
    """x0 hook snapping the estimate to the nearest token embedding once t < below_t."""

    def hook(x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if float(t.max()) >= below_t:
            return x0
        return net.embedding(net.embedding.nearest(x0)).to(x0.dtype)

    return hook


@torch.no_grad()
def generate_ids(
    net: ScoreNetwork,
    sde,
    num_samples: int,
    seq_len: int,
    method: str = "ddim",
    steps: int = 50,
    temperature: float = 1.0,
    clamp_below_t: float = 0.0,
    rounding: str = "logits",
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    **solver_options,
) -> Generation:
    """Sample `num_samples` id sequences of length `seq_len` from noise."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    device = next(net.parameters()).device
    d = net.embedding.weight.shape[1]
    chunks, nfe = [], 0
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        denoiser = Denoiser(net, sde, temperature)
        x_T = sde.prior_sample((n, seq_len, d), generator=generator, device=device)
        x0_hook = clamp_hook(net, sde, clamp_below_t) if clamp_below_t > 0 else None
        result = solvers.sample(
            denoiser, sde, x_T, method=method, steps=steps, generator=generator, x0_hook=x0_hook, **solver_options
        )
        t_end = torch.full((n,), float(solver_options.get("t_end") or sde.t_min_default), device=device)
        x0 = denoiser(result.x, t_end)  # one last call: logits at the end time for rounding
        ids = denoiser.logits.argmax(-1) if rounding == "logits" else net.embedding.nearest(x0)
        chunks.append(ids)
        nfe = max(nfe, result.nfe + 1)
    return Generation(torch.cat(chunks), nfe)
