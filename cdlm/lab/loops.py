"""`cdlm lab loops`: looped refinement. On the facts corpus (`cdlm.data.facts`), every link of
every chain is seen both ways, and k-hop statements (k <= 2) of half the chains; the other
chains are asked k-hop questions, k = 1..`--max_hops`, walked forward, backward or mixed.

For each model three backbones: `base` (depth D), `looped` (the same D blocks run `--loops` N
times: the base's parameters, N times its compute) and `deep` (D x N blocks: the looped
model's compute, N times the parameters). Exact match of the answer's two-word name by prompt
completion (the diffusion models are given its two blanks). 1-hop questions are recall of seen
links; k >= 2 on these chains was never seen, and k >= 3 is beyond the training hops.
"""

from __future__ import annotations

from cdlm.lab import budget, criterion_columns, mean, until_criterion
from cdlm.lab.reversal import facts_data, runs_for
from cdlm.lab.runs import complete, figure, load, report, train

KINDS = ("forward", "backward", "mixed")


def add_arguments(p) -> None:
    p.add_argument("--loops", type=int, default=2, help="passes of the looped backbone, N")
    p.add_argument("--max_hops", type=int, default=4, help="longest question, in hops")


def run(a) -> str:
    from cdlm.data.facts import build_world

    if a.loops < 2:
        raise SystemExit(f"cdlm lab: error: --loops must be at least 2, got {a.loops}")
    depth = a.depth or 2
    world = build_world(seed=a.seed, train_hops=2)
    data = facts_data(a, a.out, world)
    variants = {"base": [f"--model.network.depth={depth}"],
                "looped": [f"--model.network.depth={depth}", f"--model.network.loops={a.loops}"],
                "deep": [f"--model.network.depth={depth * a.loops}"]}
    runs = runs_for(a, data, variants)
    logs = until_criterion(a, world, runs)
    spent = budget(a, 3000)
    ckpts = train(runs, a.out, spent, a.parallel, a.threads)
    questions = world.hop_questions(a.max_hops, per_kind=a.questions or 64, seed=a.seed)
    groups = {(q.kind, q.hops): [x for x in questions if (x.kind, x.hops) == (q.kind, q.hops)] for q in questions}
    rows, curves = {}, {k: {} for k in KINDS}
    for m in a.models:
        for variant in variants:
            scores = {g: [] for g in groups}
            for r in runs:
                if r.model != m or not r.name.startswith(f"{m}_{variant}_"):
                    continue
                model = load(ckpts[r.name])
                for g, qs in groups.items():
                    scores[g].append(mean([float(complete(model, q.prompt, 2, seed=i) == q.answer)
                                           for i, q in enumerate(qs)]))
            line = f"{m} {variant}"
            rows[line] = {f"{kind[:3]} {hops}": mean(v) for (kind, hops), v in sorted(scores.items())}
            variant_runs = [r for r in runs if r.name.startswith(f"{m}_{variant}_")]
            rows[line].update(criterion_columns(logs, variant_runs, m, a.until) if logs else {})
            for kind in KINDS:
                hops = sorted(h for k, h in groups if k == kind)
                curves[kind][line] = (hops, [mean(scores[(kind, h)]) for h in hops])
    keys = [f"{kind[:3]} {h}" for kind in KINDS for h in range(1, a.max_hops + 1)] + ["steps to learn", "train score"]
    meta = {"budget": spent, "seeds": a.seeds, "depth": depth, "loops": a.loops, "train_hops": world.train_hops,
            "questions": {f"{k} {h}": len(v) for (k, h), v in groups.items()}}
    figure(a.out / "loops.png", [(f"{kind} chains", curves[kind]) for kind in KINDS], "hops", "exact match")
    title = (f"Loops (depth {depth}, looped x{a.loops}, deep {depth * a.loops}; {' '.join(spent)}, seeds {a.seeds}; "
             f"trained on <= {world.train_hops} hops)")
    return report(a.out, "loops", title, rows, keys, "model", meta)
