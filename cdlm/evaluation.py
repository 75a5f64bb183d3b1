"""Sample quality metrics for `cdlm eval`: validity, diversity, held-out NLL, generative perplexity."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cdlm.data import corpus


@torch.no_grad()
def heldout_nll(model, loader, max_batches: int | None = None) -> dict:
    """Negative log-likelihood of held-out data (an upper bound for diffusion models) in nats
    and bits per token and per character. Every position counts towards the sequence's NLL
    (padding encodes length); tokens and characters count the real text only."""
    nats = tokens = chars = 0.0
    for i, (ids, mask, *_) in enumerate(loader):  # conditioned data carries attributes too
        if max_batches is not None and i >= max_batches:
            break
        ids, mask = ids.to(model.device), mask.to(model.device)
        nats += float(model.sequence_nll(ids).sum())
        tokens += float(mask.sum())
        chars += sum(len(t) for t in model.decode(ids))
    if tokens == 0:
        raise ValueError("no held-out data to score")
    return {
        "nll_nats_per_token": nats / tokens,
        "nll_bits_per_token": nats / tokens / math.log(2),
        "nll_bits_per_char": nats / max(chars, 1.0) / math.log(2),
    }


@torch.no_grad()
def generative_perplexity(reference, texts: Sequence[str], count_end: bool = True) -> float:
    """exp(mean NLL per token) of `texts` under an autoregressive reference model; with
    `count_end` the end-of-text pad counts as a token (sentence data)."""
    from cdlm.data.tokenizer import encode

    L = reference.hparams.seq_len
    ids = torch.full((len(texts), L), reference.pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), L), dtype=torch.bool)
    for row, text in enumerate(texts):
        seq = encode(reference.tokenizer, text)[:L]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : min(len(seq) + int(count_end), L)] = True
    nll = reference.token_nll(ids.to(reference.device)).cpu()
    return math.exp(float((nll * mask).sum() / mask.sum().clamp(min=1)))


def rejection_sample(model, accept, num_samples: int, time_budget: float, seed: int = 0, batch_size: int = 64):
    """What a left-to-right model can do with constraints beyond a prefix or with attributes:
    sample and keep the rows that `accept` (ids [N, L] → bools [N]), until `num_samples` are kept
    or `time_budget` seconds have passed. Returns (kept ids [K, L], rows tried)."""
    import time

    start, kept, tried, k = time.perf_counter(), [], 0, 0
    while sum(len(x) for x in kept) < num_samples and time.perf_counter() - start < time_budget:
        ids = model.sample_ids(batch_size, seed=seed + k).ids.cpu()
        kept.append(ids[accept(ids)])
        tried, k = tried + len(ids), k + 1
    ids = torch.cat(kept)[:num_samples] if kept else torch.empty(0, model.hparams.seq_len, dtype=torch.long)
    return ids, tried


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the samples (words split on whitespace)."""
    grams = [tuple(w[i : i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sample_metrics(texts: Sequence[str], train_texts: Sequence[str] | None, embedded: bool) -> dict:
    """Fractions of samples valid (embedded corpus), distinct, and absent from the training set."""
    n = len(texts)
    out: dict = {"num_samples": n, "unique": len(set(texts)) / n}
    if train_texts is not None:
        seen = set(train_texts)
        out["novel"] = sum(t not in seen for t in texts) / n
    if embedded:
        out["validity"] = corpus.validity(texts)
    for k in (1, 2, 3):
        out[f"distinct_{k}"] = distinct_n(texts, k)
    lengths = [len(t.split()) for t in texts]
    out["mean_words"] = sum(lengths) / n
    return out
