"""Packed training on a text file larger than memory should hold: memory bounded, tokenization once.

Writes a text file of `--gb` gigabytes (lines of the embedded corpus, a third of them with a
random rare word appended, so that BPE has something to learn), then runs `cdlm fit` on it twice
in packed mode (the tokenizer and seq_len chosen from the data), each in a fresh process:

- the first start reads the head of the file to choose and train the tokenizer, tokenizes the
  file with a batched `datasets.map` and writes the memory-mapped token cache;
- the second start finds the cache (and the trained tokenizer) and reads neither.

Prints one JSON line per start: wall seconds, the tokenization seconds the data module reports,
peak RSS (the largest process, from getrusage) and the peak of the process tree's anonymous
memory (Pss_Anon, polled from /proc: RSS also counts pages of memory-mapped files that the kernel
drops at will), then one summary line.

    OMP_NUM_THREADS=1 python benchmarks/bench_big_data.py --gb 1 --num_proc 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_corpus(path: Path, gigabytes: float, seed: int = 0) -> int:
    """A file of about `gigabytes` GB of lines; seconds matter, so lines are drawn from a pool."""
    from cdlm.data import corpus

    rng = random.Random(seed)
    pool = [t for t, _ in corpus.generate(20000, seed=seed)]
    rare = [f"w{i}" for i in range(50000)]
    target, written = int(gigabytes * 1e9), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            block = [line + " " + rng.choice(rare) if rng.random() < 1 / 3 else line
                     for line in rng.choices(pool, k=100_000)]
            text = "\n".join(block) + "\n"
            f.write(text)
            written += len(text)
    return path.stat().st_size


def _tree_anon_kib(pid: int) -> int:
    """Anonymous memory of a process and its descendants in KiB, proportional (Pss_Anon: the
    copy-on-write pages that forked map workers share with their parent count once), else RssAnon."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            found = re.search(r"Pss_Anon:\s+(\d+)", rollup) or re.search(r"RssAnon:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
            total += int(found.group(1))
            stack += [int(c) for t in os.listdir(f"/proc/{p}/task")
                      for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except (OSError, AttributeError):
            continue
    return total


def measured(cmd: list[str], env: dict) -> dict:
    """Runs `cmd` under a fresh Python parent, so that RUSAGE_CHILDREN is this start's alone."""
    wrapper = ("import json, resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
               "print(json.dumps({'rc': rc, 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", wrapper, *cmd], env=env, stderr=subprocess.PIPE, text=True)
    peak_anon = [0]

    def poll():
        while proc.poll() is None:
            peak_anon[0] = max(peak_anon[0], _tree_anon_kib(proc.pid))
            time.sleep(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    err = proc.stderr.read()
    proc.wait()
    poller.join()
    lines = err.splitlines()
    usage = json.loads(lines[-1])
    tokens = [line for line in lines if line.startswith("cdlm: tokens")]
    seconds = re.search(r"in ([\d.]+) s", tokens[0]) if tokens else None
    out = {"rc": usage["rc"], "wall_seconds": round(time.perf_counter() - start, 1),
           "peak_rss_mib": round(usage["maxrss_kib"] / 1024, 1), "peak_anon_tree_mib": round(peak_anon[0] / 1024, 1),
           "tokenize_seconds": float(seconds.group(1)) if seconds else None,
           "cache_reused": bool(tokens) and "from the cache" in tokens[0],
           "data_lines": [line for line in lines if line.startswith("cdlm: ")]}
    if usage["rc"] != 0:
        out["stderr_tail"] = lines[-15:]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the generated text file")
    parser.add_argument("--dir", default="/tmp/cdlm-bigdata", help="where the file and every cache go")
    parser.add_argument("--num_proc", type=int, default=2, help="processes of the tokenizing datasets.map")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="reuse an existing file and caches (no cold start)")
    args = parser.parse_args()

    folder = Path(args.dir)
    if not args.keep and folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "big.txt"
    if not path.exists():
        start = time.perf_counter()
        size = write_corpus(path, args.gb)
        print(json.dumps({"file": str(path), "bytes": size, "write_seconds": round(time.perf_counter() - start, 1)}), flush=True)
    env = {**os.environ, "HF_DATASETS_CACHE": str(folder / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "cdlm.cli", "fit", "--model=cdlm.AutoregressiveLM", f"--data.dataset={path}",
           "--data.packing=true", f"--data.loading.num_proc={args.num_proc}", f"--data.loading.cache_dir={folder / 'tokens'}",
           "--data.batch_size=16", "--model.network.width=64", "--model.network.depth=2", "--model.network.heads=2", "--model.optim.warmup_steps=5",
           "--model.val_samples=0", f"--trainer.max_steps={args.steps}", "--trainer.limit_val_batches=2",
           f"--trainer.val_check_interval={args.steps}", "--trainer.check_val_every_n_epoch=null",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
           f"--trainer.default_root_dir={folder / 'run'}", "--trainer.enable_checkpointing=false"]
    runs = {}
    for name in ("first_start", "second_start"):
        runs[name] = measured(cmd, env)
        print(json.dumps({"start": name, **runs[name]}), flush=True)
    print(json.dumps({"summary": True, "bytes": path.stat().st_size,
                      "first": {k: runs["first_start"][k] for k in ("wall_seconds", "tokenize_seconds", "peak_rss_mib", "peak_anon_tree_mib")},
                      "second": {k: runs["second_start"][k] for k in ("wall_seconds", "cache_reused", "peak_rss_mib", "peak_anon_tree_mib")}}))


if __name__ == "__main__":
    main()
