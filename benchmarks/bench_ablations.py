"""Each technique switched on and off on the embedded corpus, at an equal budget.

Every variant is `configs/quickstart.yaml` plus the listed `cdlm fit` arguments; two train at
a time (one CPU thread each), for `--minutes` of wall clock or, better on a shared machine,
exactly `--steps` optimizer steps. Each is evaluated with `cdlm eval` (validity at free length
and at the data's lengths, NLL bound, and generative perplexity under an AR reference if one
is given) and a Markdown table is printed.

    python benchmarks/bench_ablations.py --steps 2000 --reference runs/quickstart_ar/checkpoints/last.ckpt
    python benchmarks/bench_ablations.py --minutes 9 --only baseline,no_self_condition
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_quality import budget_args, checkpoint_of, evaluate_checkpoint, fit, markdown_table

VARIANTS = {  # name: extra `cdlm fit` arguments on top of configs/quickstart.yaml
    "baseline": [],
    "no_self_condition": ["--model.training.self_condition=0"],
    "direct_x0_head": ["--model.network.interpolate=false", "--model.training.mse_weight=1.0"],
    "unnormalized_embeddings": ["--model.network.normalize_embeddings=false"],
    "fixed_random_embeddings": ["--model.training.learn_embeddings=false"],
    "schedule_linear": ["--model.training.schedule=vp"],
    "schedule_cosine": ["--model.training.schedule=cosine"],
    "schedule_log_linear": ["--model.training.schedule=loglinear"],
    "stratified_time": ["--model.training.time_sampling=stratified"],
    "uniform_time": ["--model.training.time_sampling=uniform"],
    "lr_2e-3": ["--model.optim.lr=2e-3"],
    "ema_0.99": ["--model.ema_decay=0.99"],
    "clean_context": ["--model.training.clean_context=0.5"],
    "clean_padding": ["--model.training.clean_padding=0.5"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=9.0)
    p.add_argument("--steps", type=int, default=None, help="train exactly this many steps (no time limit)")
    p.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    p.add_argument("--out", default="runs/bench_ablations")
    p.add_argument("--reference", default=None, help="AR checkpoint for gen_ppl")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--eval_only", action="store_true", help="evaluate the checkpoints already in --out")
    a = p.parse_args()
    names = a.only.split(",") if a.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; available: {', '.join(VARIANTS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpts = {n: checkpoint_of(out, n) for n in names} if a.eval_only else {}
    for i in range(0, 0 if a.eval_only else len(names), a.parallel):
        batch = [(n, *fit("quickstart", n, out, budget_args(a.steps, a.minutes), [], VARIANTS[n] + ["--overwrite=true"]))
                 for n in names[i : i + a.parallel]]
        for name, proc, ckpt in batch:
            if proc.wait():
                raise SystemExit(f"variant {name} failed; see {out}/{name}.log")
            ckpts[name] = ckpt
    rows = {}
    for name, ckpt in ckpts.items():
        rows[name] = evaluate_checkpoint(ckpt, Path(a.reference) if a.reference else None, a.num_samples)
        rows[name]["validity_data_lengths"] = evaluate_checkpoint(ckpt, None, a.num_samples, 0, length="data")["validity"]
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    keys = ["validity", "validity_data_lengths", "unique", "nll_bits_per_token", "gen_ppl", "distinct_2", "nfe"]
    budget = f"{a.steps} steps" if a.steps else f"{a.minutes:g} minutes"
    print(f"embedded corpus, {budget} each, one CPU thread each\n")
    print(markdown_table(rows, keys, "variant", {n: " ".join(VARIANTS[n]) or "(quickstart)" for n in rows}))


if __name__ == "__main__":
    main()
