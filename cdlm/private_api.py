"""Every reach of cdlm into Lightning's private API, in one place.

Lightning gives no public way to save `last.ckpt` at a step of our choosing (a stop by signal,
the end of a time budget) or to turn off the `hp_metric` placeholder of a TensorBoard logger it
already built. tests/cdlm/test_private_api.py pins each reach, so a Lightning release that
moves one fails there by name.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

__all__ = ["save_last_checkpoint_now", "drop_hp_metric_placeholder"]


def save_last_checkpoint_now(callback: ModelCheckpoint, trainer) -> None:
    """Write `callback`'s last.ckpt for the trainer's current step, unless it already holds it
    (ModelCheckpoint saves last only at its own intervals) or the callback keeps no last."""
    if callback.save_last and callback._last_global_step_saved != trainer.global_step:
        callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def drop_hp_metric_placeholder(logger: TensorBoardLogger) -> None:
    """Log hyperparameters without the -1 `hp_metric` placeholder (the constructor's
    `default_hp_metric=False`, for a logger built elsewhere)."""
    logger._default_hp_metric = False
