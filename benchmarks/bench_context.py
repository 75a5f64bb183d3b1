"""Context in running text, for several checkpoints side by side: `cdlm diagnose` of each on its own
held-out data (the same batches and seed for all), as one JSON line per checkpoint, a Markdown
table and a figure (the continuous models' cross-entropy by log-SNR beside the per-token
posterior's, and every model's context_bits and order_bits).

    python benchmarks/bench_context.py --ckpt "alibi=runs/a/checkpoints/last.ckpt" \\
        --ckpt "masked=runs/m/checkpoints/last.ckpt" --out docs/figures/context.png
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", required=True, metavar="NAME=PATH", help="a checkpoint to diagnose; repeatable")
    p.add_argument("--batches", type=int, default=4, help="held-out batches each")
    p.add_argument("--num_times", type=int, default=16, help="noise levels per sequence of the diffusion bounds")
    p.add_argument("--out", default=None, help="where to write the figure (PNG)")
    a = p.parse_args(argv)
    import cdlm
    from cdlm.diagnostics import diagnose_heldout

    results = {}
    for spec in a.ckpt:
        name, sep, path = spec.partition("=")
        if not sep:
            p.error(f"--ckpt {spec!r} is not NAME=PATH")
        model = cdlm.load(path)
        data, problem = cdlm.heldout_data(model)
        if data is None:
            p.error(f"{path}: no held-out data ({problem})")
        results[name] = diagnose_heldout(model, data, a.batches, a.num_times)
        print(json.dumps({"bench": "context", "name": name, "ckpt": path, **results[name]}), flush=True)
    print("\n| run | kind | NLL (bound), bits/token | context-free reference | context_bits | order_bits |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['kind']} | {r['nll_bits']:.3f} | {r['reference_bits']:.3f} ({r['reference']}) | "
              f"{r['context_bits']:.3f} | {r['order_bits']:.3f} |")
    if a.out:
        figure(results, a.out)


def figure(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, r) in enumerate(results.items()):
        if r["kind"] != "continuous":
            continue
        x = [row["log_snr"] for row in r["rows"]]
        left.plot(x, [row["gap_bits"] for row in r["rows"]], "o-", ms=3, color=f"C{i}", label=f"{name}: posterior - model")
        left.plot(x, [row["clean_shuffled_bits"] - row["clean_neighbours_bits"] for row in r["rows"]], "s--", ms=3,
                  color=f"C{i}", alpha=0.6, label=f"{name}: shuffling clean neighbours costs")
    left.axhline(0.0, color="grey", lw=0.8)
    left.set_xlabel("log-SNR (noisier <-)")
    left.set_ylabel("bits/token")
    left.set_title("continuous: what context buys at each noise level", fontsize=10)
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    names = list(results)
    xs = range(len(names))
    right.bar([x - 0.2 for x in xs], [results[n]["context_bits"] for n in names], 0.4, label="context_bits")
    right.bar([x + 0.2 for x in xs], [results[n]["order_bits"] for n in names], 0.4, label="order_bits")
    right.set_xticks(list(xs), names, rotation=20, fontsize=8)
    right.set_ylabel("bits/token")
    right.set_title("gained from context, and lost when it is shuffled", fontsize=10)
    right.legend(fontsize=8)
    right.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
