"""`cdlm lab`: the seed's claims about diffusion LMs, each measured in one command against an AR
model of the same size: reversal, data-efficiency, anchors and loops.

Each command trains its models with `cdlm fit` (one process and CPU thread per run, `--parallel`
at a time; a finished run in --out is reused), prints a Markdown table and writes NAME.json and
NAME.png into --out. Budgets are equal steps (`--steps`) or equal wall time (`--minutes`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS = {
    "reversal": ("cdlm.lab.reversal", "trained on 'the mentor of A is B', asked 'the student of B is ?'"),
    "data-efficiency": ("cdlm.lab.data_efficiency", "held-out NLL and validity against epochs on small unique data"),
    "anchors": ("cdlm.lab.anchors", "words of held-out sentences fixed at their positions; AR by rejection at equal time"),
    "loops": ("cdlm.lab.loops", "weight-tied looped backbones on k-hop forward, backward and mixed chains of facts"),
}
MODELS = ("ar", "masked", "continuous")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        raise SystemExit(f"{self.prog}: error: {message}")


def _positive(kind):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a {kind.__name__}") from None
        if not number > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return number
    return parse


def _list(kind):
    def parse(value: str):
        try:
            items = [kind(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of {kind.__name__}s") from None
        if not items:
            raise argparse.ArgumentTypeError("is empty")
        return items
    return parse


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cdlm lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help) in COMMANDS.items():
        c = sub.add_parser(name, help=help, description=help)
        budget = c.add_mutually_exclusive_group()
        budget.add_argument("--steps", type=_positive(int), default=None, help="equal steps for every run")
        budget.add_argument("--minutes", type=_positive(float), default=None, help="equal wall time for every run")
        if name in ("reversal", "loops"):
            c.add_argument("--until", type=_positive(float), default=None, metavar="SCORE",
                           help="train each run until its exact match on the facts it trains on reaches SCORE "
                                "(e.g. 0.9), checked every --check_every steps; --steps is then the cap")
            c.add_argument("--check_every", type=_positive(int), default=500, help="steps between --until checks")
        c.add_argument("--models", type=_list(str), default=list(MODELS), help="comma-separated, of ar, masked, continuous")
        c.add_argument("--seeds", type=_list(int), default=[0], help="training seeds, comma-separated (tables average them)")
        c.add_argument("--width", type=_positive(int), default=None, help="transformer width (default: the recipe's)")
        c.add_argument("--depth", type=_positive(int), default=None, help="transformer depth (default: the recipe's)")
        c.add_argument("--questions", type=_positive(int), default=None, help="at most this many questions (or sets) per kind")
        c.add_argument("--fit_arg", action="append", default=[], metavar="MODEL:ARG",
                       help="an extra `cdlm fit` argument for one model kind, e.g. continuous:--model.optim.lr=2e-3")
        c.add_argument("--parallel", type=_positive(int), default=2, help="training runs at once")
        c.add_argument("--threads", type=_positive(int), default=1, help="CPU threads per run")
        c.add_argument("--out", default=f"runs/lab/{name}")
        c.add_argument("--seed", type=int, default=0, help="seed of the data and the questions")
        __import__(module, fromlist=["add_arguments"]).add_arguments(c)
    return p


def main(argv: list[str] | None = None) -> str:
    """Run one lab command; returns (and prints) its report."""
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    unknown = [m for m in a.models if m not in MODELS]
    if unknown:
        raise SystemExit(f"cdlm lab: error: unknown --models {', '.join(unknown)}; valid: {', '.join(MODELS)}")
    for spec in a.fit_arg:
        kind, sep, arg = spec.partition(":")
        if not sep or kind not in MODELS or not arg.startswith("--"):
            raise SystemExit(f"cdlm lab: error: --fit_arg {spec!r} is not MODEL:--ARG=VALUE (MODEL one of {', '.join(MODELS)})")
    a.out = Path(a.out)
    a.out.mkdir(parents=True, exist_ok=True)
    report = __import__(COMMANDS[a.command][0], fromlist=["run"]).run(a)
    print(report, flush=True)
    (a.out / f"{a.command}.md").write_text(report + "\n")
    return report


def model_args(a, model: str) -> list[str]:
    """The `cdlm fit` arguments every run of `model` gets from the common flags."""
    args = [f"--model.network.width={a.width}"] if a.width else []
    args += [f"--model.network.depth={a.depth}"] if a.depth else []
    if a.width and a.width < 128:
        args.append(f"--model.network.heads={max(1, a.width // 32)}")
    return args + [spec.split(":", 1)[1] for spec in a.fit_arg if spec.startswith(f"{model}:")]


def budget(a, default_steps: int) -> list[str]:
    from cdlm.lab.runs import budget_args

    return budget_args(a.steps if a.steps or a.minutes else default_steps, a.minutes)


def until_criterion(a, world, runs) -> dict[str, dict]:
    """With `--until`: adds to every run the callback that stops it once its exact match on up to
    --questions (default 100) of the statements it trains on reaches the target; returns, per run,
    where it logs its curve. Without: nothing."""
    if not getattr(a, "until", None):
        return {}
    import json
    import random

    from cdlm.data.facts import parse, question

    if a.until > 1:
        raise SystemExit(f"cdlm lab: error: --until is an exact-match score in (0, 1], got {a.until}")
    seen = [parse(t) for t in world.texts]
    pairs = [[question(p[0], p[1]), p[2]] for p in seen if p is not None]
    pairs = random.Random(a.seed).sample(pairs, min(len(pairs), a.questions or 100))
    questions = a.out / "criterion_questions.json"
    questions.write_text(json.dumps(pairs))
    logs = {}
    for r in runs:
        logs[r.name] = a.out / f"{r.name}.criterion.jsonl"
        r.args += ["--trainer.callbacks+=cdlm.lab.criterion.StopWhenLearned",
                   f"--trainer.callbacks.questions_file={questions}", f"--trainer.callbacks.target={a.until}",
                   f"--trainer.callbacks.every={a.check_every}", f"--trainer.callbacks.log_file={logs[r.name]}"]
    return logs


def criterion_columns(logs: dict, runs, model: str, target: float) -> dict:
    """Per model kind: the mean step at which its runs reached the target (None: some did not by the
    cap), and the score of the last check, from the curves the runs logged."""
    import json

    from cdlm.lab.criterion import learned_at

    steps, last = [], []
    for r in runs:
        if r.model != model or r.name not in logs or not logs[r.name].exists():
            continue
        history = [json.loads(line) for line in logs[r.name].read_text().splitlines() if line.strip()]
        steps.append(learned_at(history, target))
        last.append(history[-1]["score"] if history else float("nan"))
    if not steps:
        return {}
    reached = None if any(s is None for s in steps) else mean([float(s) for s in steps])
    return {"steps to learn": reached if reached is not None else "not by the cap", "train score": mean(last)}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
