"""Attribute control: how often samples express the attributes asked of them.

Two tasks on the held-out records of a model fit with `--data.condition_column mr`:
  - record: each sample asks for a whole held-out record (embedded corpus: parsed exactly;
    E2E: every value but familyFriendly appears);
  - single: Diffusion-LM's semantic-content task, one key=value drawn from held-out records
    (familyFriendly excluded: its values yes/no are not words of the text), success when the
    value appears in the sample (and, on the embedded corpus, when the parser agrees).
Each at the given classifier-free guidance scales; beside it, the autoregressive baseline on
the single task by rejection sampling for as long as diffusion took.

    python benchmarks/bench_attributes.py --ckpt runs/cond/last.ckpt --reference runs/quickstart_ar/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from bench_quality import markdown_table

from cdlm.checkpoints import load_checkpoint
from cdlm.control.attributes import attribute_accuracy, expressed, parse_mr
from cdlm.data import DataSpec, TextDataModule, corpus
from cdlm.evaluation import generative_perplexity, rejection_sample


def single_requests(records: list[dict[str, str]], n: int, seed: int) -> list[dict[str, str]]:
    pairs = sorted({(k, v) for r in records for k, v in r.items() if k != "familyfriendly"})  # as Diffusion-LM
    rng = random.Random(seed)
    return [dict([rng.choice(pairs)]) for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a DiffusionLM fit with --data.condition_column")
    p.add_argument("--reference", default=None, help="autoregressive checkpoint: gen_ppl and the rejection baseline")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--scales", default="0,1,2", help="comma-separated guidance scales")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="{}", help='JSON of sample_ids options, e.g. {"method": "ddim", "steps": 50}')
    a = p.parse_args()
    options = json.loads(a.sampler)
    torch.set_grad_enabled(False)
    model, data_hparams = load_checkpoint(a.ckpt)
    if model.attribute_vocab is None:
        raise SystemExit(f"{a.ckpt} was fit without --data.condition_column")
    reference = load_checkpoint(a.reference)[0] if a.reference else None
    data = TextDataModule.from_hparams(data_hparams, DataSpec.from_hparams(model.hparams))
    known = set(model.attribute_vocab.names)
    embedded = data.is_embedded
    # E2E: familyFriendly's yes/no are not words of the text, so a lexical match cannot see them
    held_out = [{k: v for k, v in parse_mr(mr).items() if f"{k}={v}" in known and (embedded or k != "familyfriendly")}
                for mr in data.conditions()[1]]
    tasks = {"record": [held_out[i % len(held_out)] for i in range(a.num_samples)],
             "single": single_requests(held_out, a.num_samples, a.seed)}
    rows, seconds = {}, {}
    for task, requests in tasks.items():
        for scale in (float(s) for s in a.scales.split(",")):
            start = time.perf_counter()
            texts = model.generate(a.num_samples, seed=a.seed, attributes=requests, guidance_scale=scale, **options)
            seconds[task] = time.perf_counter() - start
            row = {"accuracy": attribute_accuracy(texts, requests, embedded),
                   "mention": attribute_accuracy(texts, requests, embedded=False), "seconds": seconds[task]}
            if embedded:
                row["validity"] = corpus.validity(texts)
                if task == "record":
                    row["exact"] = attribute_accuracy(texts, requests, embedded, exact=True)
            if reference is not None:
                row["gen_ppl"] = generative_perplexity(reference, texts)
            rows[f"{task}, guidance {scale:g}"] = row
    if reference is not None:  # one request at a time, each for its share of diffusion's time
        kept, tried, hits = [], 0, 0
        requests = tasks["single"][:16]
        for k, request in enumerate(requests):
            def accept(ids, request=request):
                return torch.tensor([expressed(t, request, embedded) for t in reference.decode(ids)], dtype=torch.bool)

            ids, n = rejection_sample(reference, accept, a.num_samples // len(requests),
                                      seconds["single"] / len(requests), seed=a.seed + 1000 * k)
            kept += reference.decode(ids)
            tried, hits = tried + n, hits + len(ids)
        row = {"accuracy": 1.0 if hits else 0.0, "kept": hits, "tried": tried, "acceptance": hits / max(tried, 1),
               "seconds": seconds["single"]}
        if kept:
            row["gen_ppl"] = generative_perplexity(reference, kept)
            if embedded:
                row["validity"] = corpus.validity(kept)
        rows["single, autoregressive + rejection"] = row
    keys = ["accuracy", "exact", "mention", "validity", "gen_ppl", "kept", "tried", "acceptance", "seconds"]
    print(markdown_table(rows, keys, "task"))


if __name__ == "__main__":
    main()
