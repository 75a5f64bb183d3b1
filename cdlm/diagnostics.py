"""Context diagnostics: how many bits a model gains from a token's neighbours, and whether their
order matters. `diagnose(model, ids, log_prior)` is what `cdlm diagnose` prints and what the
dashboard draws at each validation.

The yardstick is the best model that ignores context, in closed form:
- autoregressive and masked: the unigram (the training tokens' frequencies, `unigram_log_prior`);
- continuous: the per-token posterior p(w | x_t) ∝ unigram(w) · N(x_t; α e_w, σ² I)
  (`cdlm.networks.PosteriorNetwork`), whose NLL bound is what a model of token frequencies alone
  scores.

`context_bits` is that yardstick's NLL (bound) minus the model's, in bits per token: what the
model's use of its context is worth. Order is tested by scoring the same tokens with their context
shuffled (the scored tokens and the padding stay in place): a model blind to order scores both alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cdlm.networks import CLEAN_LOG_SNR, PosteriorNetwork

LOG_SNRS = (-6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0)  # where the continuous model's CE is read
MASK_RATES = (0.15, 0.5, 0.85, 1.0)  # where the masked model's CE is read
TARGET_SHARE = 0.125  # with clean neighbours, this share of positions is noised and scored
BITS = 1.0 / math.log(2.0)


TRAINING_TOKENS = 10_000_000  # a packed corpus is read from its first this many tokens: memory stays bounded


def training_ids(data) -> list[torch.Tensor]:
    """The training split of a data module as id rows (a packed corpus as one row)."""
    data.setup()
    ds = data.train_set
    if hasattr(ds, "tokens"):  # windows of one stream (a tensor, or a memory-mapped cache)
        return [torch.as_tensor(ds.tokens[:TRAINING_TOKENS])[None]]
    return [ds.tensors[0]]


def unigram_log_prior(chunks: list[torch.Tensor], vocab_size: int) -> torch.Tensor:
    """Log-frequencies [V] of the tokens in id rows (every position, padding included: it is a
    token the models predict), add-one smoothed so that no token is impossible."""
    counts = torch.ones(vocab_size, dtype=torch.float64)
    for ids in chunks:
        counts += torch.bincount(ids.reshape(-1).long(), minlength=vocab_size)[:vocab_size].double()
    return (counts / counts.sum()).log()


def shuffled(ids: torch.Tensor, movable: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each row's tokens at `movable` positions [B, L] in a random order among those positions;
    the others (padding, the tokens being scored) stay where they were."""
    out = ids.clone()
    for row in range(ids.shape[0]):
        where = movable[row].nonzero().squeeze(1)
        perm = torch.randperm(len(where), generator=generator, device=where.device)
        out[row, where] = ids[row, where[perm]]
    return out


def _mean_bits(nll: torch.Tensor, scored: torch.Tensor) -> float:
    return float((nll * scored).sum() / scored.sum().clamp(min=1)) * BITS


@torch.no_grad()
def diagnose(model, ids: torch.Tensor, log_prior: torch.Tensor, real: torch.Tensor | None = None,
             num_times: int = 16, seed: int = 0) -> dict:
    """Context diagnostics of `model` on held-out id rows [B, L] (`real` [B, L]: the text's
    tokens, default: all but padding) against the unigram `log_prior` [V] of its training data.

    Returns a JSON-ready dict: `context_bits`, `order_bits` (bits lost when the context is
    shuffled), the model's NLL (bound) and the context-free reference's, in bits per real
    token, and `rows`: the cross-entropy in bits at each noise level (continuous: log-SNR, with
    the per-token posterior's, neighbours noisy or clean, in order or shuffled; masked: mask
    rate, in order or shuffled; autoregressive: one row)."""
    device = model.device
    ids = ids.to(device)
    real = (ids != model.pad_id) if real is None else real.to(device)
    log_prior = log_prior.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        run = {"continuous": _continuous, "masked": _masked, "autoregressive": _autoregressive}[model.kind]
        out = run(model, ids, real, log_prior, num_times, seed, generator)
    finally:
        model.train(was_training)
    return {"kind": model.kind, "sequences": int(ids.shape[0]), "tokens": int(real.sum()), **out}


def diagnose_heldout(model, data, batches: int = 4, num_times: int = 16, seed: int = 0) -> dict:
    """`diagnose` on the first `batches` held-out batches of a data module (`cdlm.evaluation.heldout_data`),
    against the unigram of its training split: what `cdlm diagnose` prints."""
    rows = [batch[:2] for _, batch in zip(range(batches), data.val_dataloader())]
    if not rows:
        raise ValueError("no held-out data to diagnose on")
    ids, real = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]).bool()
    log_prior = unigram_log_prior(training_ids(data), model.tokenizer.get_vocab_size())
    return diagnose(model, ids, log_prior, real, num_times=num_times, seed=seed)


def _per_token(nats: torch.Tensor, real: torch.Tensor) -> float:
    """Bits per real token of per-sequence NLLs [B] (every position counts, as in `heldout_nll`)."""
    return float(nats.sum() / real.sum().clamp(min=1)) * BITS


def _continuous(model, ids, real, log_prior, num_times, seed, generator):
    net = model.ema
    posterior = PosteriorNetwork(net.embedding, log_prior)
    B, L = ids.shape

    def ce(network, rows: torch.Tensor, lam: float, noise: torch.Tensor, targets: torch.Tensor | None) -> float:
        """Bits of the tokens at log-SNR λ, all noised (targets None) or only `targets`, the rest clean."""
        x0 = network.embedding(rows)
        a, s = math.sqrt(1.0 / (1.0 + math.exp(-lam))), math.sqrt(1.0 / (1.0 + math.exp(lam)))
        x_t = a * x0 + s * noise.to(x0.dtype)
        log_snr = torch.full((B,), lam, device=rows.device, dtype=x0.dtype)
        scored = real
        if targets is not None:
            x_t = torch.where(targets[..., None], x_t, x0)
            log_snr = torch.where(targets, log_snr[:, None], torch.full_like(x_t[..., 0], CLEAN_LOG_SNR))
            scored = real & targets
        logits, _ = network(x_t, log_snr, return_x0=False)
        return _mean_bits(F.cross_entropy(logits.float().transpose(1, 2), rows, reduction="none"), scored)

    noise = torch.randn(B, L, net.embedding.weight.shape[1], generator=generator, device=ids.device)
    targets = torch.rand(B, L, generator=generator, device=ids.device) < TARGET_SHARE
    targets[:, 0] |= ~(targets & real).any(1)  # every row scores something
    mixed = shuffled(ids, real, generator)  # every token noised: all of them are context
    mixed_around = shuffled(ids, real & ~targets, generator)  # the scored targets keep their places
    rows = []
    for lam in LOG_SNRS:
        row = {"log_snr": lam,
               "model_bits": ce(net, ids, lam, noise, None),
               "posterior_bits": ce(posterior, ids, lam, noise, None),
               "shuffled_bits": ce(net, mixed, lam, noise, None),
               "clean_neighbours_bits": ce(net, ids, lam, noise, targets),
               "clean_shuffled_bits": ce(net, mixed_around, lam, noise, targets)}
        row["gap_bits"] = row["posterior_bits"] - row["model_bits"]
        rows.append(row)
    torch.manual_seed(seed)  # the same times and noise for both bounds: their difference is sharper
    bound = _per_token(model.nll_bound(ids, num_times), real)
    torch.manual_seed(seed)
    reference = _per_token(model.nll_bound(ids, num_times, net=posterior), real)
    order = sum(r["clean_shuffled_bits"] - r["clean_neighbours_bits"] for r in rows) / len(rows)
    return {"context_bits": reference - bound, "order_bits": order, "nll_bits": bound,
            "reference_bits": reference, "reference": "per-token posterior (bound)",
            "unigram_bits": _unigram_bits(ids, real, log_prior), "rows": rows}


def _masked(model, ids, real, log_prior, num_times, seed, generator):
    net = model.ema
    uniform = torch.rand(ids.shape, generator=generator, device=ids.device)
    unigram = -log_prior[ids]
    rows = []
    for rate in MASK_RATES:
        masked = uniform < rate
        masked[:, 0] |= ~masked.any(1)
        scored = masked & real
        rows.append({"mask_rate": rate,
                     "model_bits": _mean_bits(model.masked_nll(net, ids, masked), scored),
                     "shuffled_bits": _mean_bits(model.masked_nll(net, shuffled(ids, real & ~masked, generator), masked),
                                                 scored),
                     "unigram_bits": _mean_bits(unigram, scored)})
    torch.manual_seed(seed)
    bound = _per_token(model.nll_bound(ids, num_times), real)
    reference = _per_token(unigram.sum(1), real)  # a context-free masked model's NELBO is the unigram's NLL
    order = sum(r["shuffled_bits"] - r["model_bits"] for r in rows) / len(rows)
    return {"context_bits": reference - bound, "order_bits": order, "nll_bits": bound,
            "reference_bits": reference, "reference": "unigram",
            "unigram_bits": _unigram_bits(ids, real, log_prior), "rows": rows}


def _autoregressive(model, ids, real, log_prior, num_times, seed, generator):
    nll = model.token_nll(ids)
    mixed = shuffled(ids, real, generator)
    reference = _per_token((-log_prior[ids]).sum(1), real)
    exact = _per_token(nll.sum(1), real)
    row = {"model_bits": _mean_bits(nll, real), "shuffled_bits": _mean_bits(model.token_nll(mixed), real),
           "unigram_bits": _mean_bits(-log_prior[ids], real)}
    return {"context_bits": reference - exact, "order_bits": row["shuffled_bits"] - row["model_bits"],
            "nll_bits": exact, "reference_bits": reference, "reference": "unigram",
            "unigram_bits": _unigram_bits(ids, real, log_prior), "rows": [row]}


def _unigram_bits(ids, real, log_prior) -> float:
    return _mean_bits(-log_prior[ids], real)


def format_table(result: dict) -> str:
    """The diagnostics as a Markdown summary line and table."""
    head = (f"{result['kind']}: context_bits {result['context_bits']:.3f}, order_bits {result['order_bits']:.3f}, "
            f"NLL{' bound' if result['kind'] != 'autoregressive' else ''} {result['nll_bits']:.3f} bits/token "
            f"against {result['reference_bits']:.3f} for the {result['reference']} "
            f"(unigram {result['unigram_bits']:.3f}), {result['tokens']} tokens")
    keys = list(result["rows"][0])
    lines = [head, "", "| " + " | ".join(k.replace("_bits", "") for k in keys) + " |",
             "|" + "---|" * len(keys)]
    for row in result["rows"]:
        lines.append("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    return "\n".join(lines)
