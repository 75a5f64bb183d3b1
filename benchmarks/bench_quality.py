"""The three models side by side: continuous diffusion, masked diffusion and autoregressive, at
equal steps (`--steps`) or at equal wall time (`--minutes`).

Each model trains with `cdlm fit` in its own process on one CPU thread: at equal steps other load
on the machine is harmless, at equal time the machine must be otherwise idle. Each is then
evaluated in-process with `cdlm.evaluation.evaluate`: the AR model scores every model's samples
(gen_ppl), and the diffusion models are also sampled at the data's lengths. Prints a Markdown
table and writes results.json.

    python benchmarks/bench_quality.py --task embedded --steps 4500
    python benchmarks/bench_quality.py --task embedded --minutes 10
    python benchmarks/bench_quality.py --task shakespeare --data_root DATA --steps 3000
    python benchmarks/bench_quality.py --task e2e --data_root DATA --steps 3000 --models masked,ar
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cdlm.lab.runs import budget_args, checkpoint_of, fit, markdown_table

TASKS = {  # base config and data arguments
    "embedded": ("quickstart", []),
    "shakespeare": ("shakespeare_char", ["--data.dataset={root}/tinyshakespeare/input.txt"]),
    "e2e": ("e2e", ["--data.dataset={root}/e2e/testset_w_refs.csv", "--data.val_dataset={root}/e2e/devset.csv"]),
}
MODELS = {"continuous": "", "masked": "_masked", "ar": "_ar"}  # model → config suffix


def evaluate_checkpoint(ckpt: Path, reference: Path | None = None, num_samples: int = 256, nll_batches: int = 8,
                        seed: int = 0, **request) -> dict:
    """`cdlm.evaluation.evaluate` of a checkpoint on its own held-out data; `request` as `Request`'s fields."""
    from cdlm.checkpoints import load_checkpoint
    from cdlm.control.request import Request
    from cdlm.evaluation import evaluate, heldout_data

    model, data_hparams = load_checkpoint(str(ckpt))
    data, _ = heldout_data(model, data_hparams)
    ref = load_checkpoint(str(reference))[0] if reference is not None else None
    return evaluate(model, Request(**request), num_samples=num_samples, seed=seed, data=data, reference=ref,
                    nll_batches=nll_batches)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="embedded")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="equal steps: train each exactly this many")
    budget.add_argument("--minutes", type=float, default=10.0, help="equal wall time (the default)")
    p.add_argument("--data_root", default=None, help="folder holding tinyshakespeare/ and e2e/ (other tasks)")
    p.add_argument("--out", default="runs/bench_quality")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--fit_arg", action="append", default=[], metavar="MODEL:ARG",
                   help="extra `cdlm fit` argument for one model, e.g. continuous:--model.optim.lr=2e-3")
    p.add_argument("--eval_only", action="store_true", help="evaluate the checkpoints already in --out")
    a = p.parse_args()
    models = a.models.split(",")
    if unknown := [m for m in models if m not in MODELS]:
        raise SystemExit(f"unknown models {unknown}; available: {', '.join(MODELS)}")
    config, data_args = TASKS[a.task]
    if data_args and a.data_root is None:
        raise SystemExit(f"--task {a.task} needs --data_root")
    data_args = [x.format(root=a.data_root) for x in data_args]
    out = Path(a.out) / a.task
    out.mkdir(parents=True, exist_ok=True)
    extra = {m: [arg.split(":", 1)[1] for arg in a.fit_arg if arg.startswith(f"{m}:")] for m in models}
    ckpts = {m: checkpoint_of(out, m) for m in models}
    if not a.eval_only:
        runs = {m: fit(config + MODELS[m], m, out, budget_args(a.steps, a.minutes), data_args, extra[m] + ["--overwrite=true"])
                for m in models}
        for m, (proc, _) in runs.items():
            if proc.wait():
                raise SystemExit(f"training {m} failed; see {out}/{m}.log")
    reference = ckpts.get("ar")
    rows = {}
    for m in models:
        rows[m] = evaluate_checkpoint(ckpts[m], reference, a.num_samples)
        if m != "ar" and a.task != "shakespeare":  # packed text has no lengths
            rows[m]["validity_data_lengths"] = evaluate_checkpoint(ckpts[m], None, a.num_samples, 0, length="data").get("validity")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    keys = ["validity", "validity_data_lengths", "unique", "novel", "gen_ppl", "nll_bits_per_token", "nll_bits_per_char",
            "distinct_2", "nfe", "sample_seconds"]
    print(f"task {a.task}, {f'{a.steps} steps' if a.steps else f'{a.minutes:g} minutes'} each, one CPU thread each\n")
    print(markdown_table(rows, keys))


if __name__ == "__main__":
    main()
