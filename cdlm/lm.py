"""LanguageModel: what the diffusion and autoregressive models share — the tokenizer carried in
their hyperparameters, AdamW with warm-up and cosine decay over the run, decoding, and text
samples (with validity on the embedded corpus) logged at every validation."""

from __future__ import annotations

import math
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from cdlm import corpus
from cdlm.attributes import AttributeVocab
from cdlm.tokenizer import PAD, decode, load_tokenizer


def training_progress(trainer) -> float:
    """Fraction of the run done, by steps or by wall time (max_time), whichever is further."""
    fractions = []
    if trainer.max_steps and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and callback.time_remaining("train") is not None:
            elapsed = callback.time_elapsed("train")
            fractions.append(elapsed / max(elapsed + callback.time_remaining("train"), 1e-9))
    return min(1.0, max(fractions)) if fractions else 0.0


class StepModule(L.LightningModule):
    """What every cdlm Lightning module shares: each step is `_loss(batch, stage)`, validation and
    test draw fixed randomness per batch index (losses comparable across validations), and
    checkpoints name their class (for `cdlm.evaluate.load_checkpoint`)."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["class_path"] = f"{type(self).__module__}.{type(self).__name__}"

    def training_step(self, batch, batch_idx):
        return self._loss(batch, "train")

    def validation_step(self, batch, batch_idx):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_idx)
            return self._loss(batch, "val")

    def test_step(self, batch, batch_idx):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_idx)
            return self._loss(batch, "test")


class LanguageModel(StepModule):
    """Base class; subclasses build `self.net` and implement `_loss(batch, stage)`,
    `sample_ids(num_samples, seed=..., ...) -> Generation` and `sequence_nll(ids) -> [B] nats`."""

    def __init__(self, tokenizer_json: str | None, attributes: list[str] | None = None):
        super().__init__()
        if tokenizer_json is None:
            raise ValueError(f"{type(self).__name__} needs a tokenizer (JSON string); the CLI takes it from the data module")
        self.tokenizer = load_tokenizer(tokenizer_json)
        self.pad_id = self.tokenizer.token_to_id(PAD)
        self.attribute_vocab = AttributeVocab(attributes) if attributes else None

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.net.parameters())}]

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.AdamW(self.param_groups(), lr=h.lr, weight_decay=h.weight_decay, betas=(0.9, 0.99))

        def factor(step: int) -> float:
            if step < h.warmup_steps:
                return (step + 1) / h.warmup_steps
            progress = training_progress(self.trainer)
            return h.min_lr_ratio + (1 - h.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [decode(self.tokenizer, row.tolist()) for row in ids]

    def generate(self, num_samples: int = 16, **options) -> list[str]:
        """Sample `num_samples` texts; options as in `sample_ids`."""
        return self.decode(self.sample_ids(num_samples, **options).ids)

    def on_validation_epoch_end(self):
        n = self.hparams.val_samples
        if n <= 0 or self.trainer.sanity_checking:
            return
        start = time.perf_counter()
        texts = self.generate(n, seed=0)
        self.log("val/sample_seconds", time.perf_counter() - start, sync_dist=True)
        if getattr(self.trainer.datamodule, "is_embedded", False):
            self.log("val/validity", corpus.validity(texts), prog_bar=True, sync_dist=True)
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            body = "\n\n".join(f"    {t}" for t in texts[:16])  # indented: a Markdown code block
            experiment.add_text("samples", body, self.global_step)
