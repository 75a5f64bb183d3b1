"""Progress of `cdlm sample` and `cdlm eval`: a tqdm bar over network calls, on a terminal only.

The bar counts forward calls of the model's networks (forward hooks, so no sampler needs to
know about it). Its total is the number of calls the run will make where that is known in
advance: exact for the continuous model's fixed-grid solvers (counted by running the solver on
a zero denoiser, which costs nothing), an upper bound for the masked samplers (ancestral
sampling skips calls when nothing changed) and for autoregressive sampling (it stops once every
row has ended); none for adaptive solvers. The bar appears only when stderr is a terminal, and
only after a second: short runs and redirected output show nothing.
"""

from __future__ import annotations

import contextlib
import math
import sys

import torch

SHOW_AFTER_SECONDS = 1.0


def enabled(stream=None) -> bool:
    """Whether a bar would be shown on `stream` (stderr by default): a terminal only."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def _networks(model) -> list[torch.nn.Module]:
    """The networks whose calls the bar counts: the EMA copy and the trained one (sampling and
    scoring use one of them each)."""
    return [m for m in (getattr(model, "ema", None), getattr(model, "net", None)) if isinstance(m, torch.nn.Module)]


def _pass_calls(model, method: str, steps: int, t_start: float) -> int | None:
    """Denoiser calls of one `solvers.sample` pass, or None for an adaptive method."""
    import solvers

    if solvers.method_info(method)["adaptive"]:
        return None
    x = torch.zeros(1, 1, 1, dtype=torch.float64)
    return solvers.sample(lambda x_t, t: torch.zeros_like(x_t), model.sde, x, method=method, steps=steps,
                          t_start=t_start, generator=torch.Generator().manual_seed(0)).nfe


def sampling_calls(model, num_samples: int, batch_size: int, settings: dict | None = None,
                   prefix: str | None = None) -> int | None:
    """Network calls that `model.sample_ids(num_samples, batch_size=..., prefix=prefix, **settings)`
    makes at most (exactly, for the continuous model's fixed-grid solvers), or None when unknown."""
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    chunks = math.ceil(num_samples / max(batch_size, 1))
    try:
        if model.kind == "autoregressive":  # one call a token after the prefix
            from cdlm.data.tokenizer import encode

            prefix_tokens = len(encode(model.tokenizer, prefix)) if prefix else 0
            return chunks * max(model.hparams.seq_len - prefix_tokens, 0)
        sampler = model.sampler.replace(**settings)
        if model.kind == "continuous":  # solver passes, restarts, rounding calls
            first = _pass_calls(model, sampler.method, sampler.steps, 1.0)
            if first is None:
                return None
            per_chunk = first + (sampler.rounding != "last")
            if sampler.restarts:  # the levels as `generate_ids` spaces them
                end = sampler.restart_log_snr if sampler.restart_log_snr_end is None else sampler.restart_log_snr_end
                levels = torch.linspace(sampler.restart_log_snr, end, sampler.restarts, dtype=torch.float64)
                for t in model.sde.t_from_log_snr(levels).tolist():
                    per_chunk += _pass_calls(model, sampler.method, sampler.restart_steps, t) + (sampler.rounding != "last")
            if sampler.self_condition_scale != 1 and model.net.self_condition:
                per_chunk = 2 * per_chunk - 1  # two calls a step, but one at the first (no estimate yet)
            return chunks * per_chunk
        return chunks * sampler.steps  # the masked samplers make at most one call a step
    except Exception:  # an invalid setting: sampling itself will say so in one line
        return None


def nll_calls(model, batches: int, num_times: int = 16) -> int:
    """Network calls of `sequence_nll` over `batches` held-out batches."""
    if model.kind == "autoregressive":
        return batches
    return batches * (num_times + (1 if model.kind == "continuous" else 0))  # + the continuous rounding term


def eval_calls(model, request, settings: dict, num_samples: int, batch_size: int, data, reference,
               nll_batches: int, ode_nll: bool) -> int | None:
    """Network calls of `cdlm.evaluation.evaluate` with these arguments, or None when unknown."""
    if model.left_to_right and request.beyond_prefix() or ode_nll:
        return None  # rejection sampling runs for a time budget; the ODE solver is adaptive
    total = sampling_calls(model, num_samples, batch_size, settings, request.prefix)
    if total is None:
        return None
    total += reference is not None  # gen_ppl: one call of the reference
    if data is not None and nll_batches > 0:
        total += nll_calls(model, min(nll_batches, len(data.val_dataloader())))
    return total


@contextlib.contextmanager
def network_calls(model, desc: str, total: int | None = None, extra_models=(), stream=None,
                  delay: float = SHOW_AFTER_SECONDS, **bar_options):
    """Show a bar of `model`'s (and `extra_models`') network calls while the block runs, when
    `stream` (stderr) is a terminal, after `delay` seconds; yields the bar (None when hidden).
    `bar_options` go to tqdm."""
    if not enabled(stream):
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="call", delay=delay, file=stream or sys.stderr,
               dynamic_ncols=True, leave=False, **bar_options)

    def count(module, args, output) -> None:  # returns None: a forward hook's result would replace the output
        bar.update(1)

    handles = [net.register_forward_hook(count) for m in (model, *extra_models) if m is not None for net in _networks(m)]
    try:
        yield bar
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
