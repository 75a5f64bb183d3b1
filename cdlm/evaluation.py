"""Evaluation: `evaluate(model, ...)` samples and returns the metrics dict that `cdlm eval`
prints — validity, diversity, held-out NLL (a bound for diffusion), generative perplexity,
constraint satisfaction and attribute accuracy — and the pieces it is made of."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from cdlm.data import corpus


@torch.no_grad()
def heldout_nll(model, loader, max_batches: int | None = None, ode: bool = False) -> dict:
    """Negative log-likelihood of held-out data (an upper bound for diffusion models) in nats
    and bits per token and per character. Every position counts towards the sequence's NLL
    (padding encodes length); tokens and characters count the real text only. `ode` adds the
    dequantised probability-flow ODE likelihood on the same batches (`ode_nll_*`, continuous
    diffusion models only: `DiffusionLM.ode_nll`)."""
    if ode and model.kind != "continuous":
        raise ValueError(f"the ODE likelihood needs a continuous diffusion model, not {type(model).__name__}")
    nats = ode_nats = tokens = chars = 0.0
    for i, (ids, mask, *_) in enumerate(loader):  # conditioned data carries attributes too
        if max_batches is not None and i >= max_batches:
            break
        ids, mask = ids.to(model.device), mask.to(model.device)
        nats += float(model.sequence_nll(ids).sum())
        if ode:
            ode_nats += float(model.ode_nll(ids).sum())
        tokens += float(mask.sum())
        chars += sum(len(t) for t in model.decode(ids))
    if tokens == 0:
        raise ValueError("no held-out data to score")
    out = {
        "nll_nats_per_token": nats / tokens,
        "nll_bits_per_token": nats / tokens / math.log(2),
        "nll_bits_per_char": nats / max(chars, 1.0) / math.log(2),
    }
    if ode:
        out["ode_nll_bits_per_token"] = ode_nats / tokens / math.log(2)
        out["ode_nll_bits_per_char"] = ode_nats / max(chars, 1.0) / math.log(2)
    return out


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


def rejection_sample(model, accept, num_samples: int, time_budget: float, seed: int = 0, batch_size: int = 64,
                     strict: bool = False):
    """What a left-to-right model can do with constraints beyond a prefix or with attributes:
    sample and keep the rows that `accept` (ids [N, L] → bools [N]), until `num_samples` are kept
    or `time_budget` seconds have passed. Returns (kept ids [K, L], rows tried). The batch under
    way when the budget runs out is kept, unless `strict` (a deadline: what ends later is lost)."""
    import time

    start, kept, tried, k = time.perf_counter(), [], 0, 0
    while sum(len(x) for x in kept) < num_samples and time.perf_counter() - start < time_budget:
        ids = model.sample_ids(batch_size, seed=seed + k).ids.cpu()
        if strict and time.perf_counter() - start > time_budget:
            tried, k = tried + len(ids), k + 1
            break
        kept.append(ids[accept(ids)])
        tried, k = tried + len(ids), k + 1
    ids = torch.cat(kept)[:num_samples] if kept else torch.empty(0, model.hparams.seq_len, dtype=torch.long)
    return ids, tried


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the samples (words split on whitespace)."""
    grams = [tuple(w[i : i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sample_metrics(texts: Sequence[str], train_texts: Sequence[str] | None, embedded: bool) -> dict:
    """Fractions of samples valid (embedded corpus), distinct, and absent from the training set, and
    `known_words`: the share of the samples' whitespace-separated words that occur in the training
    text (running text: are these words at all?)."""
    n = len(texts)
    out: dict = {"num_samples": n, "unique": len(set(texts)) / n}
    if train_texts is not None:
        seen = set(train_texts)
        out["novel"] = sum(t not in seen for t in texts) / n
        vocabulary = {w for t in train_texts for w in t.split()}
        words = [w for t in texts for w in t.split()]
        out["known_words"] = sum(w in vocabulary for w in words) / len(words) if words else 0.0
    if embedded:
        out["validity"] = corpus.validity(texts)
    for k in (1, 2, 3):
        out[f"distinct_{k}"] = distinct_n(texts, k)
    lengths = [len(t.split()) for t in texts]
    out["mean_words"] = sum(lengths) / n
    return out


def heldout_data(model, data_hparams: dict | None = None):
    """(data module rebuilt from a checkpoint's data settings, by default those the model was
    loaded with, around the model's data spec, or None; why it could not be, or None)."""
    data_hparams = model.data_hparams if data_hparams is None else data_hparams
    from cdlm.data import DataSpec, TextDataModule

    if not data_hparams:
        return None, None
    # scored as trained: checkpoints from before the length check were cut silently
    data = TextDataModule.from_hparams({**data_hparams, "truncate": True}, DataSpec.from_hparams(model.hparams))
    try:
        data.texts()
    except (ValueError, OSError) as err:  # the training data may live elsewhere: report what we can
        return None, str(err).splitlines()[0]
    return data, None


def evaluate(model, request=None, settings: dict | None = None, num_samples: int = 256, seed: int = 0,
             batch_size: int = 256, data=None, reference=None, nll_batches: int = 8, time_budget: float = 60.0,
             attributes_from_data: bool = False, ode_nll: bool = False) -> dict:
    """Sample `num_samples` texts from `model` as `request` (`cdlm.control.request.Request`) asks,
    with sampler `settings` overriding the model's, and measure them.

    `data` (a `TextDataModule`, see `heldout_data`) adds novelty, validity on the embedded corpus
    and the held-out NLL over `nll_batches`; `reference` (an AutoregressiveLM) adds gen_ppl.
    `attributes_from_data` asks each sample for the record of a held-out text. A left-to-right
    model asked for more than a prefix samples and rejects for up to `time_budget` seconds.
    `ode_nll` adds the probability-flow ODE likelihood beside the bound (see `heldout_nll`).
    """
    import time

    import lightning as L

    from cdlm.control.attributes import attribute_accuracy, expressed, parse_attributes, parse_mr
    from cdlm.control.request import Request
    from cdlm.sampling.base import Generation

    request = dataclasses.replace(request) if request is not None else Request()
    settings = settings or {}
    embedded = bool(data is not None and data.is_embedded)
    requests = None  # the attributes asked of each sample
    if attributes_from_data:
        if request.attributes is not None:
            raise ValueError("give attributes or attributes_from_data, not both")
        held_out = data.conditions() if data is not None else None
        if not held_out:
            raise ValueError("attributes_from_data needs the checkpoint's data with a condition_column")
        requests = [parse_mr(held_out[1][i % len(held_out[1])]) for i in range(num_samples)]
        request.attributes = requests
    elif request.attributes is not None:
        requests = [parse_attributes(request.attributes)] * num_samples
    if request.classifier is not None and requests is None:
        raise ValueError("a classifier guides towards attributes: give attributes or attributes_from_data")
    constraints = request.constraints(model.tokenizer, model.hparams.seq_len)
    L.seed_everything(seed, verbose=False)
    start, rejection = time.perf_counter(), {}
    if model.left_to_right and request.beyond_prefix():  # the only way is to sample and reject
        if attributes_from_data:
            raise ValueError("an autoregressive model cannot meet a different request per sample; give one attribute request")

        def accept(ids):
            ok = constraints.satisfied(ids) if constraints is not None else torch.ones(len(ids), dtype=torch.bool)
            if requests is not None:
                ok &= torch.tensor([expressed(t, requests[0], embedded) for t in model.decode(ids)], dtype=torch.bool)
            return ok

        ids, tried = rejection_sample(model, accept, num_samples, time_budget, seed)
        gen = Generation(ids, model.hparams.seq_len)
        rejection = {"rejection_tried": tried, "rejection_kept": len(ids), "rejection_acceptance": len(ids) / max(tried, 1)}
        if not len(ids):
            return {"method": "autoregressive+rejection", **rejection, "sample_seconds": round(time.perf_counter() - start, 3)}
    else:
        gen = model.sample_ids(num_samples, seed=seed, batch_size=batch_size, request=request, **settings)
    seconds = time.perf_counter() - start
    texts = model.decode(gen.ids)
    result = {
        **model.sampler_report(**settings),
        "nfe": gen.nfe,
        **sample_metrics(texts, data.texts()[0] if data is not None else None, embedded=embedded),
        "sample_seconds": round(seconds, 3),
        **rejection,
    }
    if constraints is not None:
        result["constraint_satisfaction"] = float(constraints.satisfied(gen.ids).float().mean())
    if requests is not None:
        requests = requests[: len(texts)]
        if not model.left_to_right and model.hparams.get("attribute_names"):
            result["guidance_scale"] = model.conditioning.guidance_scale if request.guidance_scale is None else request.guidance_scale
        if request.classifier is not None:
            result["classifier_scale"] = request.classifier_scale
        result["attribute_accuracy"] = attribute_accuracy(texts, requests, embedded)
        if embedded:  # the values' words appear, valid sentence or not (what E2E's accuracy measures)
            result["attribute_mention"] = attribute_accuracy(texts, requests, embedded=False)
        if embedded and attributes_from_data:  # a whole record asked: nothing else may be said
            result["attribute_exact"] = attribute_accuracy(texts, requests, embedded, exact=True)
    if reference is not None:
        result["gen_ppl"] = generative_perplexity(reference, texts, count_end=not (data is not None and data.hparams.packing))
    if data is not None and nll_batches > 0:
        torch.manual_seed(seed)
        result.update(heldout_nll(model, data.val_dataloader(), max_batches=nll_batches, ode=ode_nll))
    return result
