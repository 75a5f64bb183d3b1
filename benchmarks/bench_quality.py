"""Diffusion beside the autoregressive baseline at an equal wall-clock budget.

Trains both with `cdlm fit` at the same time (one CPU thread each, so neither starves the
other), evaluates both with `cdlm eval` (the AR model scores every model's samples), and
prints a Markdown table. Extra `--diffusion_arg`s turn technique switches on or off.

    python benchmarks/bench_quality.py --task embedded --minutes 10
    python benchmarks/bench_quality.py --task shakespeare --data_root ../shared/data --minutes 10
    python benchmarks/bench_quality.py --task e2e --data_root ../shared/data --minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {  # config pair and data arguments
    "embedded": ("quickstart", []),
    "shakespeare": ("shakespeare_char", ["--data.dataset={root}/tinyshakespeare/input.txt"]),
    "e2e": ("e2e", ["--data.dataset={root}/e2e/testset_w_refs.csv", "--data.val_dataset={root}/e2e/devset.csv"]),
}


def fit(config: str, name: str, minutes: float, out: Path, data_args: list[str], extra: list[str], threads: int):
    args = [
        sys.executable, "-m", "cdlm.cli", "fit", f"--config={ROOT}/configs/{config}.yaml",
        f"--trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}",
        f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}",
        f"--trainer.callbacks.dirpath={out}/{name}", "--trainer.enable_progress_bar=false", *data_args, *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    log = open(out / f"{name}.log", "w")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env), out / name / "last.ckpt"


def evaluate(ckpt: Path, reference: Path | None, extra: list[str]) -> dict:
    args = [sys.executable, "-m", "cdlm.cli", "eval", f"--ckpt_path={ckpt}", *extra]
    if reference is not None:
        args.append(f"--reference_ckpt={reference}")
    proc = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if proc.returncode:
        raise SystemExit(f"eval of {ckpt} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout)


def markdown_table(rows: dict[str, dict], keys: list[str], label: str = "model", notes: dict | None = None) -> str:
    """One row per run: the metrics in `keys` that any run reported (and an optional notes column)."""
    keys = [k for k in keys if any(k in r for r in rows.values())]
    head = [label, *(["arguments"] if notes else []), *keys]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in rows.items():
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append("| " + " | ".join([name, *([notes[name]] if notes else []), *cells]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="embedded")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--data_root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default="runs/bench_quality")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--diffusion_arg", action="append", default=[], help="extra `cdlm fit` argument for diffusion")
    p.add_argument("--eval_arg", action="append", default=[], help="extra `cdlm eval` argument for diffusion")
    p.add_argument("--skip_ar", action="store_true", help="reuse an AR checkpoint already in --out")
    a = p.parse_args()
    config, data_args = TASKS[a.task]
    data_args = [x.format(root=a.data_root) for x in data_args]
    out = Path(a.out) / a.task
    out.mkdir(parents=True, exist_ok=True)
    runs = [fit(config, "diffusion", a.minutes, out, data_args, a.diffusion_arg, threads=1)]
    ar_ckpt = out / "ar" / "last.ckpt"
    if not a.skip_ar:
        proc, ar_ckpt = fit(f"{config}_ar", "ar", a.minutes, out, data_args, [], threads=1)
        runs.append((proc, ar_ckpt))
    for proc, _ in runs:
        if proc.wait():
            raise SystemExit(f"training failed; see the logs in {out}")
    common = [f"--num_samples={a.num_samples}"]
    rows = {
        "diffusion": evaluate(runs[0][1], ar_ckpt, common + a.eval_arg),
        "autoregressive": evaluate(ar_ckpt, ar_ckpt, common),
    }
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    keys = ["validity", "unique", "novel", "gen_ppl", "nll_bits_per_token", "nll_bits_per_char", "distinct_2", "nfe"]
    print(f"task {a.task}, {a.minutes:g} minutes each\n")
    print(markdown_table(rows, keys))


if __name__ == "__main__":
    main()
