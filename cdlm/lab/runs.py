"""What every lab experiment and benchmark shares: training runs of `cdlm fit` in parallel
processes (one CPU thread each, reused when already finished), answering questions with each
kind of model, and writing a table and a figure."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# each model's quickstart recipe, the lab's starting point
MODEL_CONFIGS = {"continuous": "quickstart", "masked": "quickstart_masked", "ar": "quickstart_ar"}


def budget_args(steps: int | None, minutes: float | None) -> list[str]:
    """Trainer arguments for a run of exactly `steps`, or of `minutes` of wall time."""
    if steps is not None:
        return [f"--trainer.max_steps={steps}", "--trainer.max_time=null"]
    return ["--trainer.max_steps=-1", f"--trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}"]


def fit(config: str, name: str, out: Path, budget: list[str], data_args: list[str], extra: list[str], threads: int = 1):
    """Start `cdlm fit` of configs/CONFIG.yaml into OUT/NAME; (process, its last.ckpt)."""
    config_path = CONFIGS / f"{config}.yaml"
    if not config_path.is_file():
        raise SystemExit(f"cdlm lab: error: {config_path} is missing (the lab runs from a clone of the repository)")
    args = [
        sys.executable, "-m", "cdlm.cli", "fit", f"--config={config_path}", *budget,
        f"--trainer.default_root_dir={out}", f"--name={name}", "--trainer.enable_progress_bar=false", *data_args, *extra,
    ]
    if any(arg.startswith("--trainer.max_time=") and not arg.endswith("=null") for arg in budget):
        args.append("--dashboard.figures=false")  # at equal wall time, figures would be time the AR model does not spend
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with open(out / f"{name}.log", "w") as log:  # the child holds its own copy of the file
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, checkpoint_of(out, name)


def checkpoint_of(out: Path, name: str) -> Path:
    """Where `fit` leaves run NAME's last checkpoint."""
    return Path(out) / name / "checkpoints" / "last.ckpt"


def model_init_args(config: str) -> dict:
    """The model init args configs/CONFIG.yaml gives (its `model:` inline, or the file it names)."""
    import yaml

    model = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())["model"]
    if isinstance(model, str):  # a piece of the composed config, relative to it
        model = yaml.safe_load((CONFIGS / model).read_text())
    return dict(model.get("init_args") or {})


def data_digests(args: list[str]) -> dict[str, str]:
    """sha256 of each file the arguments train or validate on: the lab rewrites them in place
    (another --seed or --links), so the same arguments may name other data."""
    out = {}
    for arg in args:
        key, _, value = arg.partition("=")
        if key in ("--data.dataset", "--data.val_dataset") and Path(value).is_file():
            out[value] = hashlib.sha256(Path(value).read_bytes()).hexdigest()
    return out


@dataclass
class Run:
    """One training run: a model kind (a key of MODEL_CONFIGS) and its `cdlm fit` arguments."""

    name: str
    model: str
    args: list[str] = field(default_factory=list)

    def checkpoint(self, out: Path) -> Path:
        return checkpoint_of(out, self.name)


def train(runs: list[Run], out: Path, budget: list[str], parallel: int = 2, threads: int = 1,
          log=print) -> dict[str, Path]:
    """Train every run, `parallel` at a time; a run whose folder holds a finished checkpoint of the
    same arguments is reused. Returns name → last.ckpt."""
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for r in runs:
        record = out / r.name / "run.json"
        wanted = {"model": r.model, "args": [*r.args, *budget]}
        if digests := data_digests(r.args):
            wanted["data"] = digests
        if record.exists() and r.checkpoint(out).exists() and json.loads(record.read_text()) == wanted:
            log(f"reusing {r.name}")
        else:
            todo.append((r, wanted))
    running = []
    while todo or running:
        while todo and len(running) < parallel:
            r, wanted = todo.pop(0)
            (out / r.name / "run.json").unlink(missing_ok=True)  # an interrupted retrain is no finished run
            proc, _ = fit(MODEL_CONFIGS[r.model], r.name, out, budget, [], [*r.args, "--overwrite=true"], threads)
            running.append((r, wanted, proc))
            log(f"training {r.name}")
        time.sleep(1)
        for item in list(running):
            r, wanted, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode:
                for _, _, other in running:
                    other.terminate()
                tail = (out / f"{r.name}.log").read_text().strip().splitlines()[-1:] or [""]
                raise SystemExit(f"cdlm lab: error: training {r.name} failed ({tail[0][:200]}); see {out}/{r.name}.log")
            (out / r.name / "run.json").write_text(json.dumps(wanted))
    return {r.name: r.checkpoint(out) for r in runs}


def load(ckpt: Path):
    from cdlm.checkpoints import load_checkpoint

    return load_checkpoint(str(ckpt))[0]


def complete(model, prompt: str, words: int, template: str | None = None, seed: int = 0) -> str:
    """The `words` words a model writes after `prompt` (near-greedy decoding). Diffusion models
    fill the blanks of `template` when given (infilling), else of `prompt ___ ... .`; the AR model
    continues the prompt, with no length given."""
    from cdlm.data.tokenizer import encode

    if model.left_to_right:
        if template is not None:
            raise ValueError("an autoregressive model cannot infill; give it a prompt")
        text = model.generate(1, prefix=prompt, temperature=1e-4, seed=seed)[0]
        return " ".join(text.split()[len(prompt.split()):][:words])
    template = template or " ".join([prompt, *["___"] * words, "."])
    greedy = {"temperature": 0.0} if model.kind == "masked" else {}  # the continuous τ is not a decoding one
    text = model.generate(1, template=template, seed=seed, **greedy)[0]
    fixed, got = template.split(), text.split()
    if len(got) != len(fixed) or len(encode(model.tokenizer, text)) != len(fixed):
        return ""
    return " ".join(g for f, g in zip(fixed, got) if f == "___")


def markdown_table(rows: dict[str, dict], keys: list[str], label: str = "model", notes: dict | None = None) -> str:
    """One row per entry: the metrics in `keys` that any entry reported (and an optional notes column)."""
    keys = [k for k in keys if any(k in r for r in rows.values())]
    head = [label, *(["arguments"] if notes else []), *keys]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in rows.items():
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append("| " + " | ".join([name, *([notes[name]] if notes else []), *cells]) + " |")
    return "\n".join(lines)


def figure(path: Path, panels: list[tuple[str, dict[str, tuple[list, list]]]], xlabel: str, ylabel: str = "",
           xlog: bool = False, bars: bool = False) -> Path:
    """A PNG of one panel per (title, {line: (xs, ys)}); `bars` draws grouped bars over categorical xs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels):
        for i, (label, (xs, ys)) in enumerate(lines.items()):
            if bars:
                width = 0.8 / max(len(lines), 1)
                ax.bar([j + i * width for j in range(len(xs))], ys, width, label=label)
                ax.set_xticks([j + 0.4 - width / 2 for j in range(len(xs))], xs, rotation=20, fontsize=8)
            else:
                ax.plot(xs, ys, marker="o", label=label)
        if xlog:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(out: Path, name: str, title: str, rows: dict[str, dict], keys: list[str], label: str, meta: dict) -> str:
    """Write NAME.json and return the Markdown table under a title line."""
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return f"{title}\n\n{markdown_table(rows, keys, label)}"
