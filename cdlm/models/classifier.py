"""AttributeClassifier: p(attributes | x_t) on the noisy embeddings of a trained DiffusionLM,
for plug-and-play classifier guidance (Diffusion-LM): at sampling its gradient joins the score
of a diffusion model that was never trained with attributes.

    cdlm fit --model cdlm.AttributeClassifier --model.diffusion_ckpt runs/quickstart/checkpoints/last.ckpt \\
        --data.condition_column mr --trainer.max_steps 1000
    cdlm sample --ckpt_path runs/quickstart/checkpoints/last.ckpt --classifier_ckpt CLASSIFIER --attribute food=french
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cdlm.checkpoints import model_name, read_checkpoint
from cdlm.control.attributes import AttributeVocab
from cdlm.data.tokenizer import load_tokenizer
from cdlm.models.base import StepModule
from cdlm.models.config import DiffusionTraining, make_sde
from cdlm.models.diffusion import DiffusionLM
from cdlm.networks import NoisyAttributeClassifier, ScoreNetworkConfig
from cdlm.registry import register


def _vocab(tokenizer_json: str) -> dict[str, int]:
    return load_tokenizer(tokenizer_json).get_vocab()


@register
class AttributeClassifier(StepModule):
    """Independent yes/no logits for every attribute of the data, from x_t at any noise level.

    Args:
        diffusion_ckpt: the DiffusionLM checkpoint whose (EMA) embeddings and noise schedule the
            classifier sees; they are copied in, so the classifier's own checkpoint stands alone.
        tokenizer_json, seq_len, attributes: filled in from the data module by the CLI (the
            data needs a `condition_column`); the tokenizer must be the diffusion model's.
        width, depth, heads: the classifier transformer.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up.
        diffusion: what was read from `diffusion_ckpt` (embedding shape, schedule); leave it
            unset, a reloaded classifier carries it.

    The defaults of width, depth and heads equal those of DiffusionLM's network.
    """

    kind = "classifier"

    def __init__(
        self,
        diffusion_ckpt: str | None = None,
        tokenizer_json: str | None = None,
        seq_len: int = 40,
        attributes: list[str] | None = None,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        diffusion: dict | None = None,
    ):
        super().__init__()
        if not attributes:
            raise ValueError("AttributeClassifier needs attributes: fit it with --data.condition_column")
        table = None
        if diffusion is None:  # first construction; a reload has this in its hparams and the table in its state
            if diffusion_ckpt is None:
                raise ValueError("AttributeClassifier needs --model.diffusion_ckpt (a trained DiffusionLM checkpoint)")
            ckpt = read_checkpoint(diffusion_ckpt)
            if model_name(ckpt, diffusion_ckpt) != "DiffusionLM":
                raise ValueError(f"checkpoint {diffusion_ckpt!r} is not a DiffusionLM checkpoint")
            h = DiffusionLM.upgrade_hparams(ckpt["hyper_parameters"])
            if tokenizer_json is not None and _vocab(tokenizer_json) != _vocab(h["tokenizer_json"]):
                raise ValueError(f"the data's tokenizer differs from the one in {diffusion_ckpt!r}; use the same data settings")
            if h["seq_len"] != seq_len:
                raise ValueError(f"seq_len={seq_len} but {diffusion_ckpt!r} was trained with seq_len={h['seq_len']}")
            table = self._embedding_table(ckpt["state_dict"], ScoreNetworkConfig.of(h.get("network")))
            t = DiffusionTraining.of(h.get("training"))
            diffusion = {"num_embeddings": table.shape[0], "embed_dim": table.shape[1], "schedule": t.schedule,
                         "log_snr_min": t.log_snr_min, "log_snr_max": t.log_snr_max, "noise_scale": t.noise_scale}
        self.save_hyperparameters()
        self.hparams.diffusion = diffusion
        self.attribute_vocab = AttributeVocab(attributes)
        self.sde = make_sde(diffusion["schedule"], diffusion["log_snr_min"], diffusion["log_snr_max"],
                            diffusion.get("noise_scale", 1.0))
        shape = (diffusion["num_embeddings"], diffusion["embed_dim"])
        self.register_buffer("embedding", table if table is not None else torch.zeros(shape))
        self.net = NoisyAttributeClassifier(diffusion["embed_dim"], len(attributes), width, depth, heads, seq_len)

    @staticmethod
    def _embedding_table(state: dict, network: ScoreNetworkConfig) -> torch.Tensor:
        """The EMA network's embedding table, normalised as the diffusion model uses it."""
        weight = state["ema.embedding.weight"].float()
        if network.normalize_embeddings:
            weight = F.normalize(weight, dim=-1) * math.sqrt(weight.shape[1])
        return weight

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
