"""Training to a criterion instead of a fixed number of steps: `StopWhenLearned` checks, every
`every` steps, the exact match of the model's answers to a file of questions (the facts it trains
on), records the curve, and stops the run when the score reaches `target`. The lab's `--until`
adds it to every run of `reversal` and `loops`, so that each model is judged once it has learned
what the claim presupposes; the steps it took are themselves a data-efficiency figure."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class StopWhenLearned(Callback):
    """Args:
        questions_file: a JSON list of [prompt, answer] pairs, answered by `cdlm.lab.runs.complete`.
        target: the exact match at which training stops.
        every: steps between checks.
        log_file: where each check is appended as a JSON line {"step", "score"} (default: beside
            the questions, named after the run's logger).
    """

    def __init__(self, questions_file: str, target: float = 0.9, every: int = 500, log_file: str | None = None):
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target must be in (0, 1], got {target}")
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.questions = [tuple(q) for q in json.loads(Path(questions_file).read_text())]
        self.target, self.every, self.log_file = target, every, log_file
        self.history: list[dict] = []

    def score(self, model) -> float:
        from cdlm.lab.runs import complete

        hits = [complete(model, prompt, len(answer.split()), seed=i) == answer
                for i, (prompt, answer) in enumerate(self.questions)]
        return sum(hits) / len(hits)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or any(h["step"] == step for h in self.history):
            return
        was_training = pl_module.training
        # the check draws no random number the run would see (exact resume holds)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            value = self.score(pl_module)
        pl_module.train(was_training)
        self.history.append({"step": step, "score": value})
        pl_module.log("criterion/score", value, on_step=True, on_epoch=False)
        if self.log_file:
            with open(self.log_file, "a") as f:
                f.write(json.dumps({"step": step, "score": value}) + "\n")
        if value >= self.target:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))


def learned_at(history: list[dict], target: float) -> int | None:
    """The first checked step whose score reached `target`, or None."""
    return next((h["step"] for h in history if h["score"] >= target), None)
