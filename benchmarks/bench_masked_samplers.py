"""Quality against NFE for each sampler of a masked diffusion checkpoint.

Every sampler (ancestral, low_confidence, semi_ar, threshold) at several step counts (for
threshold, several confidence thresholds), evaluated in-process with `cdlm.evaluation.evaluate`:
validity at free length and at the data's lengths (embedded corpus), gen_ppl under an AR
reference, the held-out bound once, and the NFE each really took.

    python benchmarks/bench_masked_samplers.py --ckpt runs/quickstart_masked/checkpoints/last.ckpt \\
        --reference runs/quickstart_ar/checkpoints/last.ckpt --steps 10,20,40,80
"""

from __future__ import annotations

import argparse
import json

from bench_quality import markdown_table


def main() -> None:
    from cdlm.checkpoints import load_checkpoint
    from cdlm.control.request import Request
    from cdlm.evaluation import evaluate, heldout_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a MaskedDiffusionLM checkpoint")
    p.add_argument("--reference", default=None, help="autoregressive checkpoint for gen_ppl")
    p.add_argument("--steps", default="10,20,40,80")
    p.add_argument("--thresholds", default="0.5,0.7,0.9")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model, data_hparams = load_checkpoint(a.ckpt)
    data, _ = heldout_data(model, data_hparams)
    reference = load_checkpoint(a.reference)[0] if a.reference else None
    steps = [int(s) for s in a.steps.split(",")]
    runs = {f"{m} {s}": {"method": m, "steps": s} for m in ("ancestral", "low_confidence", "semi_ar") for s in steps}
    runs.update({f"threshold {t} (cap {max(steps)})": {"method": "threshold", "steps": max(steps), "threshold": float(t)}
                 for t in a.thresholds.split(",")})
    lengths = data is not None and not data.hparams.packing
    rows = {}
    for name, settings in runs.items():
        rows[name] = evaluate(model, None, settings, a.num_samples, a.seed, data=data, reference=reference, nll_batches=0)
        if lengths:
            at_data = evaluate(model, Request(length="data"), settings, a.num_samples, a.seed, data=data, nll_batches=0)
            rows[name]["validity_data_lengths"] = at_data.get("validity")
            rows[name]["nfe_data_lengths"] = at_data["nfe"]
        print(name, json.dumps({k: rows[name].get(k) for k in ("nfe", "validity", "validity_data_lengths", "gen_ppl")}),
              flush=True)
    bound = evaluate(model, None, None, 1, a.seed, data=data) if data is not None else {}
    keys = ["nfe", "validity", "validity_data_lengths", "nfe_data_lengths", "gen_ppl", "unique", "mean_words", "sample_seconds"]
    print(f"\n{a.ckpt}: held-out bound {bound.get('nll_bits_per_token', float('nan')):.3f} bits/token\n")
    print(markdown_table(rows, keys, "sampler"))


if __name__ == "__main__":
    main()
