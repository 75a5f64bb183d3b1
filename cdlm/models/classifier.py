"""AttributeClassifier: p(attributes | x_t) on the noisy embeddings of a trained DiffusionLM,
for plug-and-play classifier guidance (Diffusion-LM): at sampling its gradient joins the score
of a diffusion model that was never trained with attributes.

    cdlm fit --model cdlm.AttributeClassifier --model.diffusion_ckpt runs/quickstart/checkpoints/last.ckpt \\
        --data.condition_column mr --trainer.max_steps 1000
    cdlm sample --ckpt_path runs/quickstart/checkpoints/last.ckpt --classifier_ckpt CLASSIFIER --attribute food=french
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from cdlm.control.attributes import AttributeVocab
from cdlm.models.base import StepModule
from cdlm.models.config import make_sde
from cdlm.models.diffusion import DiffusionLM, check_same_data, read_diffusion_model
from cdlm.networks import NoisyAttributeClassifier
from cdlm.registry import register


@register
class AttributeClassifier(StepModule):
    """Independent yes/no logits for every attribute of the data, from x_t at any noise level.

    Args:
        diffusion: the embedding shape and noise schedule of the DiffusionLM whose (EMA) embeddings
            the classifier sees. `from_diffusion` (in Python) and `cdlm fit --model.diffusion_ckpt`
            read them, and copy its embedding table in (`start_from`), so the classifier's own
            checkpoint stands alone; a reloaded classifier carries both.
        tokenizer_json, seq_len, attribute_names: filled in from the data module by the CLI (the
            data needs a `condition_column`); the tokenizer must be the diffusion model's.
        width, depth, heads: the classifier transformer.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up.
        diffusion_ckpt: the DiffusionLM checkpoint `cdlm fit` reads (`arguments_from_checkpoints`,
            before the classifier is built); recorded, never read by the constructor.

    The defaults of width, depth and heads equal those of DiffusionLM's network.
    """

    kind = "classifier"

    def __init__(
        self,
        diffusion: dict | None = None,
        tokenizer_json: str | None = None,
        seq_len: int = 40,
        attribute_names: list[str] | None = None,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        diffusion_ckpt: str | None = None,
    ):
        super().__init__()
        if not attribute_names:
            raise ValueError("AttributeClassifier needs attributes: fit it with --data.condition_column")
        if diffusion is None:
            raise ValueError("AttributeClassifier needs --model.diffusion_ckpt (a trained DiffusionLM checkpoint); "
                             "in Python, AttributeClassifier.from_diffusion(model_or_checkpoint, ...)")
        self.save_hyperparameters()
        self.attribute_vocab = AttributeVocab(attribute_names)
        self.sde = make_sde(diffusion["schedule"], diffusion["log_snr_min"], diffusion["log_snr_max"],
                            diffusion.get("noise_scale", 1.0))
        # the diffusion model's table: `start_from` copies it in, a reload has it in its state
        self.register_buffer("embedding", torch.zeros(diffusion["num_embeddings"], diffusion["embed_dim"]))
        self.net = NoisyAttributeClassifier(diffusion["embed_dim"], len(attribute_names), width, depth, heads, seq_len)

    @classmethod
    def from_diffusion(cls, diffusion: DiffusionLM | str, **settings) -> AttributeClassifier:
        """A classifier on the embeddings and noise schedule of `diffusion` (a DiffusionLM, or the
        path of its checkpoint); `settings` are the constructor's other arguments (tokenizer_json
        and seq_len default to the diffusion model's, and must match it when given)."""
        source = diffusion if isinstance(diffusion, str) else "the diffusion model"
        model = read_diffusion_model(diffusion, "diffusion_ckpt") if isinstance(diffusion, str) else diffusion
        given = {"tokenizer_json": model.hparams.tokenizer_json, "seq_len": model.hparams.seq_len,
                 "diffusion_ckpt": diffusion if isinstance(diffusion, str) else None,
                 **{k: v for k, v in settings.items() if v is not None}}
        classifier = cls(diffusion=diffusion_summary(model), **given)
        classifier.start_from(model, source)
        return classifier

    @classmethod
    def arguments_from_checkpoints(cls, arguments: dict) -> tuple[dict, Callable | None]:
        """For `cdlm fit`: the diffusion model's embedding shape and schedule read from
        `diffusion_ckpt`, and the classifier's start from its embeddings (`start_from`)."""
        path = arguments.get("diffusion_ckpt")
        if arguments.get("diffusion") is not None or path is None:
            return {}, None
        model = read_diffusion_model(path, "diffusion_ckpt")
        return {"diffusion": diffusion_summary(model)}, partial(cls.start_from, diffusion=model, source=path)

    @torch.no_grad()
    def start_from(self, diffusion: DiffusionLM, source: str = "the diffusion model") -> None:
        """Copy in the diffusion model's (EMA) embedding table, as it uses it; its tokenizer and
        sequence length must be this classifier's."""
        check_same_data(diffusion, source, self.hparams.tokenizer_json, self.hparams.seq_len)
        self.embedding.copy_(diffusion.ema.embedding.table().float())

    def forward(self, x_t: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        return self.net(x_t, log_snr)

    def log_prob(self, x_t: torch.Tensor, log_snr: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(requested attributes | x_t) [B]: the sum over the attributes set in `targets` [B, A]."""
        return (F.logsigmoid(self(x_t, log_snr)) * targets).sum(-1)

    def encode(self, requests) -> torch.Tensor:
        return self.attribute_vocab.encode(requests).to(self.embedding.device)

    def _loss(self, batch, stage: str):
        if len(batch) < 3:
            raise ValueError("AttributeClassifier needs attributes in the data: fit it with --data.condition_column")
        ids, _mask, targets = batch
        t = torch.rand(ids.shape[0], dtype=torch.float64, device=ids.device)
        t = self.sde.t_min_default + (1 - self.sde.t_min_default) * t
        x_t = self.sde.perturb(F.embedding(ids, self.embedding), t)
        logits = self(x_t, self.sde.log_snr(t).float())
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        # a record counts as recognised when every attribute is decided right
        exact = ((logits > 0) == (targets > 0.5)).all(-1).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step)
        self.log(f"{stage}/record_accuracy", exact, prog_bar=True, on_step=on_step, on_epoch=not on_step)
        return loss

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.AdamW(self.net.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / h.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def diffusion_summary(model: DiffusionLM) -> dict:
    """What a classifier keeps of its diffusion model: the embedding shape and the noise schedule."""
    t = model.training_config
    table = model.ema.embedding.weight
    return {"num_embeddings": table.shape[0], "embed_dim": table.shape[1], "schedule": t.schedule,
            "log_snr_min": t.log_snr_min, "log_snr_max": t.log_snr_max, "noise_scale": t.noise_scale}
