"""Quality against training compute: the three models (and any continuous recipe) at budgets that
are multiples of the AR quickstart's training compute, one separate run per budget.

1x is the AR quickstart config trained for `--base_steps` steps (4,500: what its 9 CPU minutes
reach on two threads). A budget is converted to each model's steps by the FLOPs a trained token
costs in that model (6·N + 12·depth·width·L, self-conditioning's extra forward pass included,
as `bench_throughput.train_flops_per_token` counts them); all models see the same tokens per step.
Every run has its own cosine schedule ending at its own budget, so a point means what a run of
that length would. At each budget: validity at the data's lengths (the honest figure for the
diffusion models) and at free length, the NLL bound in bits per token and per character, and
gen_ppl under the largest AR run. Prints a Markdown table, writes results.json and scaling.png.

Runs go `--parallel` at a time on one CPU thread each, equal steps per budget, so contention
changes wall time only. A finished run found in --out is reused, so the command can be rerun
with more budgets, and a recipe can be added later.

    python benchmarks/bench_scaling.py --budgets 0.25,0.5,1,2,4
    python benchmarks/bench_scaling.py --budgets 1 --recipe "muon:--model.optim.name=muon" --seeds 0,1
    python benchmarks/bench_scaling.py --budgets 4,8,16 --parallel 1 --threads 8   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from cdlm.lab.runs import MODEL_CONFIGS, Run, budget_args, checkpoint_of, markdown_table, model_init_args, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import evaluate_checkpoint  # noqa: E402
from bench_throughput import tokenizer_json, train_flops_per_token  # noqa: E402


def parse_overrides(args: list[str], section: str = "model") -> dict:
    """`--SECTION.K=V`, `--SECTION.GROUP.K=V` (and `--SECTION.init_args.…`) recipe arguments as
    init args, a group's fields as a mapping (other sections ignored)."""
    out = {}
    for arg in args:
        key, _, value = arg.lstrip("-").partition("=")
        for prefix in (f"{section}.init_args.", f"{section}."):
            if key.startswith(prefix):
                *group, name = key[len(prefix):].split(".")
                if len(group) <= 1:
                    (out.setdefault(group[0], {}) if group else out)[name] = yaml.safe_load(value)
                break
    return out


def batch_shape(args: list[str], a) -> tuple[int, float]:
    """(rows, mean tokens a row) of a recipe's training batches: a bigger `--data.batch_size` spends
    the budget in fewer steps, and `--data.loading.bucket_lengths=true` cuts batches after their longest
    text, so its steps are cheaper; its mean width is measured over one fixed epoch of its order."""
    data = parse_overrides(args, "data")
    rows, width = data.get("batch_size", a.batch_size), a.seq_len
    if (data.get("loading") or {}).get("bucket_lengths"):
        import torch

        from cdlm import TextDataModule
        from cdlm.data.loaders import EpochShuffle, cut_width

        dm = TextDataModule(**data)
        dm.setup("fit")
        lengths = dm.train_set.tensors[1].sum(1)
        order = torch.tensor(list(EpochShuffle(len(lengths), seed=0, lengths=lengths, batch_size=rows)))  # seeded: the same steps each time
        batches = order[: len(order) // rows * rows].view(-1, rows)  # the loader drops the tail
        width = sum(cut_width(lengths[b], dm.hparams.seq_len) for b in batches) / len(batches)
    return rows, width


def flops_per_token(model_kind: str, overrides: dict, tok: str, width: float) -> float:
    """Training FLOPs per token of a quickstart config with recipe overrides, from its shape, in
    batches `width` tokens wide (attention's share grows with it)."""
    from cdlm import AutoregressiveLM, DiffusionLM, MaskedDiffusionLM

    init = model_init_args(MODEL_CONFIGS[model_kind])
    for key, value in overrides.items():
        init[key] = {**init.get(key, {}), **value} if isinstance(value, dict) else value
    init.update(tokenizer_json=tok, val_samples=0, seq_len=40)  # the embedded corpus picks 40
    cls = {"continuous": DiffusionLM, "masked": MaskedDiffusionLM, "ar": AutoregressiveLM}[model_kind]
    model = cls(**init)
    kind = "continuous_sc" if model_kind == "continuous" and model.training_config.self_condition > 0 else model_kind
    return train_flops_per_token(kind, model, width)


def plan(a, tok: str) -> list[dict]:
    """One job per (line, budget, seed): line is a model or a continuous recipe."""
    lines = {m: (m, []) for m in a.models.split(",") if m}  # --models "" leaves the recipes alone
    for spec in a.recipe:
        name, _, args = spec.partition(":")
        lines[name] = ("continuous", args.split())
    ar_fpt = flops_per_token("ar", {}, tok, a.seq_len)
    jobs = []
    for line, (kind, args) in lines.items():
        rows, width = batch_shape(args, a)
        fpt = flops_per_token(kind, parse_overrides(args), tok, width)
        tokens_per_step = rows * width
        for budget in a.budgets:
            steps = max(1, round(budget * a.base_steps * a.batch_size * a.seq_len * ar_fpt / (tokens_per_step * fpt)))
            for seed in a.seeds:
                jobs.append(dict(line=line, kind=kind, budget=budget, seed=seed, steps=steps, args=args,
                                 name=f"{line}_x{budget:g}_s{seed}", train_flops=fpt * steps * tokens_per_step))
    return sorted(jobs, key=lambda j: -j["steps"])  # longest first: the pool drains evenly


def finished(ckpt: Path, steps: int) -> bool:
    if not ckpt.exists():
        return False
    import torch

    return torch.load(ckpt, map_location="cpu", weights_only=True).get("global_step") == steps


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("validity_data_lengths", "validity at the data's lengths"), ("validity", "validity at free length"),
              ("nll_bits_per_token", "NLL bound, bits/token"), ("gen_ppl", "gen_ppl (AR reference)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        for line in dict.fromkeys(r["line"] for r in rows):
            pts = {}
            for r in rows:
                if r["line"] == line and r.get(key) is not None:
                    pts.setdefault(r["budget"], []).append(r[key])
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], marker="o", label=line)
        ax.set_xscale("log", base=2)
        if key == "gen_ppl":  # an untrained model's hundreds would flatten the rest
            ax.set_yscale("log")
        ax.set_xlabel("training compute (x AR quickstart)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",")], default=[0.25, 0.5, 1, 2, 4],
                   help="multiples of the AR quickstart's training compute, comma-separated")
    p.add_argument("--models", default="continuous,masked,ar")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME:ARGS",
                   help='a continuous-model line with extra fit arguments, e.g. "prior:--model.network.output_prior=1.0"')
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    p.add_argument("--base_steps", type=int, default=4500, help="AR steps that make 1x")
    p.add_argument("--batch_size", type=int, default=64, help="the quickstart's batch (a recipe may set --data.batch_size)")
    p.add_argument("--seq_len", type=int, default=40, help="the quickstart's seq_len (the embedded corpus picks 40)")
    p.add_argument("--parallel", type=int, default=2, help="training runs at once")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--out", default="runs/bench_scaling")
    p.add_argument("--reference", default=None, help="AR checkpoint that scores gen_ppl (default: the largest AR run here)")
    p.add_argument("--eval_only", action="store_true", help="evaluate what is finished in --out")
    p.add_argument("--train_only", action="store_true", help="train, and leave evaluation to a later --eval_only")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(a, tokenizer_json())
    if not a.eval_only:
        runs = [Run(j["name"], j["kind"], [*j["args"], *budget_args(j["steps"], None), f"--seed_everything={j['seed']}"])
                for j in jobs if not finished(checkpoint_of(out, j["name"]), j["steps"])]
        train(runs, out, [], a.parallel, a.threads)
    if a.train_only:
        return
    jobs = [j for j in jobs if finished(checkpoint_of(out, j["name"]), j["steps"])]
    ars = [j for j in jobs if j["kind"] == "ar"]
    reference = Path(a.reference) if a.reference else checkpoint_of(out, max(ars, key=lambda j: j["steps"])["name"]) if ars else None
    cache = out / "results.json"
    done = {r["name"]: r for r in json.loads(cache.read_text())} if cache.exists() else {}
    rows = []
    for j in sorted(jobs, key=lambda j: (j["line"], j["budget"], j["seed"])):
        key = {"name": j["name"], "line": j["line"], "budget": j["budget"], "seed": j["seed"], "train_steps": j["steps"]}
        ckpt = checkpoint_of(out, j["name"])
        if j["name"] in done and done[j["name"]].get("reference") == str(reference):
            rows.append({**done[j["name"]], **key})
            continue
        row = evaluate_checkpoint(ckpt, reference, a.num_samples)  # its "steps" are the sampler's
        row.update(key, reference=str(reference), train_pflops=round(j["train_flops"] / 1e15, 4))
        if j["kind"] != "ar":
            row["validity_data_lengths"] = evaluate_checkpoint(ckpt, None, a.num_samples, 0, length="data").get("validity")
        else:  # AR samples its own lengths: free length is the data's
            row["validity_data_lengths"] = row.get("validity")
        rows.append(row)
        cache.write_text(json.dumps(rows, indent=1))
    cache.write_text(json.dumps(rows, indent=1))
    keys = ["train_steps", "train_pflops", "validity_data_lengths", "validity", "unique", "gen_ppl", "nll_bits_per_token",
            "nll_bits_per_char", "nfe"]
    table = {f"{r['line']} x{r['budget']:g} s{r['seed']}": r for r in rows}
    print(f"budgets in multiples of the AR quickstart ({a.base_steps} AR steps); one CPU thread per run\n")
    print(markdown_table(table, keys, label="run"))
    if rows:
        plot(rows, out / "scaling.png")
        print(f"\nwrote {out / 'scaling.png'}")


if __name__ == "__main__":
    main()
