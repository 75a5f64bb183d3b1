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
    restarts: int = 0,
    restart_log_snr: float = -1.5,
    restart_steps: int = 10,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    **solver_options,
) -> Generation:
    """Sample `num_samples` id sequences of length `seq_len` from noise.

    With `restarts` > 0, the rounded result is re-noised to log-SNR `restart_log_snr` and
    solved again in `restart_steps` steps, that many times (restart sampling, Xu et al. 2023):
    each pass lets every position revise itself given a nearly decided sentence.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if restarts < 0 or restart_steps < 1:
        raise ValueError(f"restarts must be >= 0 and restart_steps >= 1, got {restarts} and {restart_steps}")
    device = next(net.parameters()).device
    d = net.embedding.weight.shape[1]
    t_end = solver_options.pop("t_end", None)
    t_end = float(sde.t_min_default if t_end is None else t_end)
    t_restart = float(sde.t_from_log_snr(torch.tensor(restart_log_snr, dtype=torch.float64)))
    x0_hook = clamp_hook(net, sde, clamp_below_t) if clamp_below_t > 0 else None
    chunks, nfe = [], 0
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        denoiser = Denoiser(net, sde, temperature)
        x = sde.prior_sample((n, seq_len, d), generator=generator, device=device)
        calls, ids = 0, None
        for k in range(restarts + 1):
            t_from, pass_steps = (1.0, steps) if k == 0 else (t_restart, restart_steps)
            if k:
                noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
                x = sde.perturb(net.embedding(ids).to(x.dtype), torch.full((n,), t_from, device=device), noise)
            result = solvers.sample(
                denoiser, sde, x, method=method, steps=pass_steps, t_start=t_from, t_end=t_end,
                generator=generator, x0_hook=x0_hook, **solver_options,
            )
            denoiser(result.x, torch.full((n,), t_end, device=device))  # logits at the end time
            ids = denoiser.logits.argmax(-1) if rounding == "logits" else net.embedding.nearest(denoiser.x0_prev)
            calls += result.nfe + 1
        chunks.append(ids)
        nfe = max(nfe, calls)
    return Generation(torch.cat(chunks), nfe)
