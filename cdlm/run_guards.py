"""What `cdlm fit` adds to a Lightning run so that training loses nothing, silently or otherwise.

- `ExactResume`: every RNG stream travels in the checkpoint and is restored just before the
  first batch after a resume, so a killed-and-resumed run takes the same steps as one that
  was never stopped (the data order is the data module's `ResumableLoader`).
- `SaveOnStop`: whenever training stops, at max_steps, max_time, Ctrl-C or SIGTERM, `last.ckpt`
  holds the final step; a signal stops the run after the step in flight and exits 128 + signal.
- `RunFolderGuard`: a run refuses to write into a folder holding another run's checkpoints.
- `LossGuard`: a non-finite or diverging loss stops the run with one line, before any
  checkpoint of it is written.
- `EndWithinBudget`: with `max_time`, training stops early enough that the validation Lightning
  runs at the stop fits in the budget too: `max_time` bounds the whole fit.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Timer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cdlm.private_api import save_last_checkpoint_now


class TrainingFault(RuntimeError):
    """The run cannot usefully go on (a non-finite or diverged loss)."""


class ExactResume(Callback):
    """Saves the torch (CPU and CUDA), numpy and Python RNG states with each checkpoint and
    restores them before the first training batch after a resume: between the save and that
    batch, the uninterrupted run draws nothing (validation forks its RNG)."""

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        numpy_state = np.random.get_state(legacy=False)
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "python": random.getstate(),
            # weights_only loading takes tensors and plain values, not numpy arrays
            "numpy": {"pos": int(numpy_state["state"]["pos"]), "key": torch.from_numpy(numpy_state["state"]["key"].copy()),
                      "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        random.setstate(_tuples(state["python"]))
        n = state["numpy"]
        np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy(), "pos": n["pos"]},
                             "has_gauss": n["has_gauss"], "gauss": n["gauss"]})


def _tuples(value):
    """random.setstate wants the tuples that a checkpoint may have turned into lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class SaveOnStop(Callback):
    """`last.ckpt` holds the final step whenever training stops.

    During training, SIGINT (Ctrl-C) and SIGTERM only raise a flag: the step in flight finishes,
    `last.ckpt` is written, and the process exits with 128 + the signal's number (130, 143), so
    schedulers and `&&` chains see a stopped job. A second Ctrl-C stops at once, saving nothing.
    Every checkpoint callback with `save_last` unset is given `save_last=True`.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        for callback in trainer.checkpoint_callbacks:
            if callback.save_last is None:
                callback.save_last = True
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        previous = self._previous.get(signum)
        if signum == signal.SIGTERM and callable(previous):
            previous(signum, frame)  # Lightning's own: it stops subprocess launchers and other ranks
        print(f"\ncdlm: {signal.Signals(signum).name} received: stopping after this step and saving last.ckpt"
              " (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.received is not None:
            self._stop(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        # Lightning's own SIGTERM stop can come first (during validation, or at the end of a batch,
        # when the step is complete); `cdlm.cli.main` gives its SIGTERMException the exit status 143
        if isinstance(exception, SIGTERMException) or self.received is not None and not isinstance(exception, KeyboardInterrupt):
            self.received = self.received or signal.SIGTERM
            self._save_last(trainer)
            self._report(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save_last(trainer)
        self._restore_handlers()

    def teardown(self, trainer, pl_module, stage) -> None:
        self._restore_handlers()

    def _stop(self, trainer) -> None:
        self._save_last(trainer)
        self._restore_handlers()
        self._report(trainer)
        signum, self.received = self.received, None  # handled: on_exception has nothing left to do
        raise SystemExit(128 + signum)

    def _report(self, trainer) -> None:
        name = signal.Signals(self.received).name
        print(f"cdlm: stopped by {name} at step {trainer.global_step}; last.ckpt holds it", file=sys.stderr, flush=True)

    @staticmethod
    def _save_last(trainer) -> None:
        for callback in trainer.checkpoint_callbacks:  # ModelCheckpoint saves last only at its own intervals
            save_last_checkpoint_now(callback, trainer)

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class RunFolderGuard(Callback):
    """Refuses to start a run in a checkpoint folder that holds another run's checkpoints (a rerun
    would replace its last.ckpt and mix its step files), unless resuming from that folder or
    `overwrite` is set, which deletes them first. `resume_from` is the checkpoint being resumed
    (Lightning tells callbacks only after their setup)."""

    def __init__(self, overwrite: bool = False, resume_from: str | None = None):
        self.overwrite, self.resume_from = overwrite, resume_from

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        problem = self._check(trainer) if trainer.is_global_zero else None
        problem = trainer.strategy.broadcast(problem)  # every rank stops, not only the one that looked
        if problem:
            raise ValueError(problem)

    def _check(self, trainer) -> str | None:
        resuming = Path(self.resume_from).resolve().parent if self.resume_from else None
        for callback in trainer.checkpoint_callbacks:
            folder = Path(callback.dirpath) if callback.dirpath else None
            if folder is None or not folder.is_dir() or folder.resolve() == resuming:
                continue
            found = sorted(folder.glob("*.ckpt"))
            if not found:
                continue
            if not self.overwrite:
                names = ", ".join(p.name for p in found[:3]) + (", …" if len(found) > 3 else "")
                return (f"{folder} already holds another run's checkpoints ({names}): resume it with "
                        f"--ckpt_path {folder / 'last.ckpt'}, give the run another folder, or pass --overwrite to delete them")
            for path in found:
                path.unlink()
            rank_zero_warn(f"--overwrite: deleted {len(found)} checkpoints of an earlier run in {folder}")
        return None


class EndWithinBudget(Callback):
    """Lightning's `max_time` stops training when the budget is spent, then validates once more
    (with samples and figures) and ends the run: the budget is overrun by a validation. This stops
    training when the time left is `margin` times what the last validation took, so that the last
    validation ends near the budget instead of after it. No effect without `max_time`."""

    def __init__(self, margin: float = 1.25):
        self.margin = margin
        self.last_validation_s = 0.0
        self._started: float | None = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._started = None if trainer.sanity_checking else time.monotonic()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._started is not None:
            self.last_validation_s = time.monotonic() - self._started

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        left = None if timer is None else timer.time_remaining()
        if left is not None and self.last_validation_s and left <= self.margin * self.last_validation_s:
            trainer.should_stop = True


class LossGuard(Callback):
    """Stops training when the loss is not finite, or when its running average climbs to
    `factor` times its running minimum (after `warmup` steps): one line naming the step.
    It runs before the checkpoint callbacks (Lightning orders those last), so the faulty step
    is never saved."""

    def __init__(self, factor: float = 100.0, smoothing: float = 0.9, warmup: int = 20):
        self.factor, self.smoothing, self.warmup = factor, smoothing, warmup
        self.average: float | None = None
        self.minimum = math.inf
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value, step = float(loss.detach()), trainer.global_step
        if not math.isfinite(value):
            raise TrainingFault(f"the training loss is {value} at step {step}; stopped without saving this step "
                                "(the checkpoints hold earlier ones). A lower --model.optim.lr may help")
        self.average = value if self.average is None else self.smoothing * self.average + (1 - self.smoothing) * value
        self.seen += 1
        if self.seen <= self.warmup:
            return
        self.minimum = min(self.minimum, self.average)
        if self.average > self.factor * self.minimum:
            raise TrainingFault(f"the training loss diverged at step {step}: its running average {self.average:.4g} is "
                                f"{self.average / self.minimum:.0f}× its minimum {self.minimum:.4g}; stopped without "
                                "saving this step. A lower --model.optim.lr may help")

    def reset(self) -> None:
        """Forget the losses seen: the model's objective changed scale (a distillation round)."""
        self.average, self.minimum, self.seen = None, math.inf, 0

    def state_dict(self) -> dict:
        return {"average": self.average, "minimum": self.minimum, "seen": self.seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.average, self.minimum, self.seen = state_dict["average"], state_dict["minimum"], state_dict["seen"]


class SaveConfigBesideRun(SaveConfigCallback):
    """The resolved config goes beside the run: into the logger's version folder, or with no logger
    into the checkpoint folder (Lightning's default would be the working directory, where the
    user's own config.yaml may be). It never replaces a config the run was started from."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        folder = trainer.log_dir if trainer.logger is not None else None  # log_dir broadcasts: every rank asks
        if trainer.is_global_zero:
            if folder is None:
                dirs = [c.dirpath for c in trainer.checkpoint_callbacks if c.dirpath]
                folder = dirs[0] if dirs else str(Path(trainer.default_root_dir) / "checkpoints")
            target = Path(folder) / self.config_filename
            inputs = {Path(str(p)).resolve() for p in (self.config.get("config") or [])}
            if target.resolve() in inputs:
                target = target.with_name("resolved_" + self.config_filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(target), skip_none=False, overwrite=True, multifile=self.multifile)
        self.already_saved = trainer.strategy.broadcast(True)
