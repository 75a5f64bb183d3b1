"""Progress of `cdlm sample` and `cdlm eval`: a tqdm bar over network calls, on a terminal only.

The bar counts forward calls of the model's networks (forward hooks, so no sampler needs to
know about it). Its total is the number of calls the run will make where that is known in
advance, as the model declares it (`LanguageModel.expected_calls`): exact for the continuous
model's fixed-grid solvers (counted by running the solver on a zero denoiser, which costs
nothing), an upper bound for the masked samplers (ancestral sampling skips calls when nothing
changed) and for autoregressive sampling (it stops once every row has ended); none for
adaptive solvers. The bar appears only when stderr is a terminal, and
only after a second: short runs and redirected output show nothing.
"""

from __future__ import annotations

import contextlib
import sys

SHOW_AFTER_SECONDS = 1.0


def enabled(stream=None) -> bool:
    """Whether a bar would be shown on `stream` (stderr by default): a terminal only."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def sampling_calls(model, num_samples: int, batch_size: int, settings: dict | None = None,
                   prefix: str | None = None) -> int | None:
    """The model's `expected_calls`, or None for settings sampling itself will reject in one line."""
    try:
        return model.expected_calls(num_samples, batch_size, settings, prefix)
    except Exception:  # an invalid setting: sampling itself will say so in one line
        return None


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
        total += model.nll_calls(min(nll_batches, len(data.val_dataloader())))
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

    handles = [net.register_forward_hook(count) for m in (model, *extra_models) if m is not None for net in m.networks()]
    try:
        yield bar
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
