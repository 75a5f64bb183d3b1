"""Anchored against unconstrained samples: does fixing words cost fluency?

For each of `--sets` held-out texts, two words are anchored at their token positions; the
samples' generative perplexity under the autoregressive reference (and validity on the
embedded corpus) is compared with unconstrained samples of the same sampler.

    python benchmarks/bench_anchored.py --ckpt runs/bench_quality/shakespeare/diffusion/last.ckpt \\
        --reference runs/bench_quality/shakespeare/ar/last.ckpt
"""

from __future__ import annotations

import argparse
import json

import torch

from cdlm.checkpoints import load_checkpoint
from cdlm.control.constraints import build_constraints
from cdlm.data import DataSpec, TextDataModule, corpus
from cdlm.evaluation import generative_perplexity
from cdlm.lab.anchors import anchor_sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--reference", required=True, help="autoregressive checkpoint that scores samples")
    p.add_argument("--sets", type=int, default=8)
    p.add_argument("--per_set", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="{}", help='JSON of sample_ids options, e.g. {"method": "ddim", "steps": 50}')
    a = p.parse_args()
    model, data_hparams = load_checkpoint(a.ckpt)
    reference = load_checkpoint(a.reference)[0]
    data = TextDataModule.from_hparams(data_hparams, DataSpec.from_hparams(model.hparams))
    val = data.texts()[1]
    if data.hparams.packing:  # one running text: cut it into lines of text to anchor
        val = [line for line in val[0].split("\n") if len(line.split()) >= 4]
    options = json.loads(a.sampler)
    packing = data.hparams.packing
    n = a.sets * a.per_set
    free = model.generate(n, seed=a.seed, **options)
    rows = {"unconstrained": {"gen_ppl": generative_perplexity(reference, free, count_end=not packing)}}
    anchored, held = [], []
    for k, anchors in enumerate(anchor_sets(model.tokenizer, val, model.hparams.seq_len, 2, a.sets, a.seed)):
        gen = model.sample_ids(a.per_set, seed=a.seed + k, anchors=anchors, **options)
        c = build_constraints(model.tokenizer, model.hparams.seq_len, anchors=anchors)
        held.append(float(c.satisfied(gen.ids).float().mean()))
        anchored += model.decode(gen.ids)
    rows["anchored"] = {"gen_ppl": generative_perplexity(reference, anchored, count_end=not packing),
                        "anchors_hold": sum(held) / len(held), "sets": len(held)}
    if data.is_embedded:
        rows["unconstrained"]["validity"] = corpus.validity(free)
        rows["anchored"]["validity"] = corpus.validity(anchored)
    rows["anchored"]["gen_ppl_ratio"] = rows["anchored"]["gen_ppl"] / rows["unconstrained"]["gen_ppl"]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
