"""AutoregressiveLM: the left-to-right baseline on the same backbone, tokenizer and data module.

It is both the comparison for DiffusionLM and the reference model that scores samples
(generative perplexity). The pad token doubles as the start token: a sentence is
`[PAD] w1 … wn` → `w1 … wn [PAD]`, and generation stops at the first pad.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cdlm.control.request import Request
from cdlm.data.tokenizer import encode
from cdlm.models.base import LanguageModel
from cdlm.models.config import OptimConfig
from cdlm.networks import CausalLM, NetworkConfig, check_hparams
from cdlm.registry import register
from cdlm.sampling.base import Generation


@register
class AutoregressiveLM(LanguageModel):
    """A causal transformer LM.

    Args:
        tokenizer_json: the tokenizer as a JSON string (filled in from the data module by the CLI).
        seq_len: sequence length (must equal the data module's).
        network: the transformer's shape (`cdlm.networks.NetworkConfig`: width, depth, heads,
            dropout, loops, positions; the continuous model's embedding and output fields are not
            read), the backbone DiffusionLM's shares; the key/value cache is
            exact for every kind of positions.
        optim: the optimizer and its schedule (`cdlm.models.config.OptimConfig`), as DiffusionLM's.
        sample_temperature: softmax temperature of ancestral sampling.
        val_samples: samples generated and logged at each validation (0 disables).
        attribute_names: the data's attribute vocabulary (filled in by the CLI). The baseline is not
            conditioned on it: attribute control for a left-to-right model is rejection sampling.
        compile: run the network under torch.compile (training, validation, recompute sampling;
            KV-cache decoding stays eager: its growing cache would recompile every step).
            Checkpoints load either way. Off by default: on CPU at these sizes it is slower
            (benchmarks/bench_throughput.py) and costs 15-30 s of compilation per run.
    """

    GROUPS = {"network": NetworkConfig, "optim": OptimConfig}
    kind = "autoregressive"  # what the model is, for callers that treat the three alike (`LanguageModel.kind`)

    def __init__(
        self,
        tokenizer_json: str | None = None,
        seq_len: int = 40,
        network: NetworkConfig | None = None,
        optim: OptimConfig | None = None,
        sample_temperature: float = 1.0,
        val_samples: int = 64,
        attribute_names: list[str] | None = None,
        compile: bool = False,
    ):
        super().__init__(tokenizer_json, attribute_names, optim)
        self.network = NetworkConfig.of(network)
        check_hparams(seq_len=seq_len)  # the network's config checked its own fields
        self.save_hyperparameters()
        self.store_groups(network=self.network)
        self.net = CausalLM(self.tokenizer.get_vocab_size(), seq_len, self.network)

    def shifted(self, ids: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(ids[:, :1], self.pad_id)
        return torch.cat([start, ids[:, :-1]], dim=1)

    def token_nll(self, ids: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood [B, L] in nats of each token given the ones before it."""
        logits = self.net(self.shifted(ids))
        return F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")

    def sequence_nll(self, ids: torch.Tensor) -> torch.Tensor:
        """Exact -log p(ids) in nats per sequence [B]."""
        return self.token_nll(ids).sum(1)

    def _loss(self, batch, stage: str):
        ids = batch[0]
        loss = self.token_nll(ids).mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=stage != "train", sync_dist=stage != "train")
        return loss

    left_to_right = True

    def sampler_report(self, **settings) -> dict:
        return {"method": "autoregressive", "steps": self.hparams.seq_len, "restarts": 0}

    def calls_per_chunk(self, settings: dict, prefix: str | None) -> int:
        prefix_tokens = len(encode(self.tokenizer, prefix)) if prefix else 0
        return max(self.hparams.seq_len - prefix_tokens, 0)  # one a token after the prefix

    def nll_calls(self, batches: int, num_times: int = 16) -> int:
        return batches  # one causal pass scores every token

    @torch.no_grad()
    def sample_ids(self, num_samples: int = 16, seed: int | None = None, temperature: float | None = None,
                   prefix: str | None = None, batch_size: int = 256, use_cache: bool = True,
                   request: Request | None = None, **unsupported):
        """Ancestral sampling of [N, seq_len] ids, optionally after a given `prefix` (or a `request`
        (`cdlm.control.request.Request`) that asks for one); stops early once every row has
        emitted a pad. Anything else a diffusion sampler takes is an error.

        With `use_cache` (the default) the prefix is run once and each further token costs one
        position's work against a preallocated key/value cache (`cdlm.networks.KVCache`);
        `use_cache=False` re-runs the whole prefix for every token (the reference path: same
        random draws, same ids)."""
        if request is not None:
            unsupported = {**request.asked(), **unsupported}
            prefix = unsupported.pop("prefix", prefix)
        # lengths "from the data" are what a left-to-right model samples anyway
        unsupported = {k: v for k, v in unsupported.items() if v not in (None, [], False) and (k, v) != ("length", "data")}
        if unsupported:
            raise ValueError(f"an autoregressive model cannot take {', '.join(sorted(unsupported))}; "
                             "it writes left to right and only takes a prefix")
        temperature = temperature or self.hparams.sample_temperature
        start_ids = encode(self.tokenizer, prefix) if prefix else []
        if len(start_ids) >= self.hparams.seq_len:
            raise ValueError(f"prefix {prefix!r} fills the whole sequence length {self.hparams.seq_len}")
        g = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            ids = torch.full((n, self.hparams.seq_len), self.pad_id, dtype=torch.long, device=self.device)
            ids[:, : len(start_ids)] = torch.tensor(start_ids, dtype=torch.long, device=self.device)
            done = torch.zeros(n, dtype=torch.bool, device=self.device)
            cache = self.net.new_cache() if use_cache else None
            for pos in range(len(start_ids), self.hparams.seq_len):
                if cache is None:
                    logits = self.net(self.shifted(ids)[:, : pos + 1])[:, -1]
                else:  # the first step fills the cache with [PAD] + prefix, then one token at a time
                    inp = self.shifted(ids)[:, : pos + 1] if cache.length == 0 else ids[:, pos - 1: pos]
                    # eager even under `compile`: the cache length would specialize every step
                    logits = self.net.forward(inp, cache=cache)[:, -1]
                logits = logits / temperature
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1)
                ids[:, pos] = torch.where(done, self.pad_id, nxt)
                done |= nxt == self.pad_id
                if done.all():
                    break
            out.append(ids)
        self.train(was_training)
        return Generation(torch.cat(out), nfe=self.hparams.seq_len)
