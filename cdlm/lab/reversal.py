"""`cdlm lab reversal`: the reversal curse. Every model trains on the facts corpus
(`cdlm.data.facts`), where half the links are stated both ways and half only forward ("the
mentor of A is B"); it is then asked each forward-only link in reverse ("the student of B is ?").

Every model answers the reversed phrasing by completing its prompt (the diffusion models are
given the answer's two blanks, the AR model writes until it stops). The diffusion models also
answer by infilling the blank of the seen sentence ("the mentor of ___ ___ is B ."), which a
left-to-right model cannot do. Exact match of the two-word name; chance is one in the number
of people. The continuous model trains with clean_context 0.5, the library's recipe for known
tokens; the masked model sees known tokens by construction.
"""

from __future__ import annotations

from cdlm.lab import budget, criterion_columns, mean, model_args, until_criterion
from cdlm.lab.runs import Run, complete, figure, load, report, train

KINDS = ("forward (seen)", "reverse (seen)", "reverse (held out)", "reverse (held out), infilling")
SEQ_LEN = 24


def add_arguments(p) -> None:
    p.add_argument("--links", type=int, default=300, help="links between invented people (half seen both ways)")
    p.add_argument("--chains", type=int, default=20, help="chains of links in the world beside them (a smaller world: fewer)")


def facts_data(a, out, world) -> list[str]:
    """Write the world's training and held-out text; the data arguments of every run."""
    from cdlm.data.facts import held_out_texts

    train_file, val_file = out / "train.txt", out / "val.txt"
    train_file.write_text("\n".join(world.texts) + "\n")
    val_file.write_text("\n".join(held_out_texts(world)) + "\n")
    return [f"--data.dataset={train_file}", f"--data.val_dataset={val_file}", f"--data.seq_len={SEQ_LEN}",
            "--data.tokenizer=word", "--data.packing=false", "--model.val_samples=0",
            "--trainer.val_check_interval=500", "--trainer.limit_val_batches=4"]


def runs_for(a, data: list[str], variants: dict[str, list[str]] | None = None) -> list[Run]:
    """One run per model, variant and seed; the continuous model learns to fill around known tokens."""
    runs = []
    for m in a.models:
        recipe = ["--model.training.clean_context=0.5"] if m == "continuous" else []
        for variant, extra in (variants or {"": []}).items():
            for s in a.seeds:
                name = f"{m}{'_' + variant if variant else ''}_s{s}"
                runs.append(Run(name, m, [*data, *recipe, *model_args(a, m), *extra, f"--seed_everything={s}"]))
    return runs


def accuracy(model, questions, infill: bool = False) -> float:
    hits = [complete(model, q.prompt, 2, template=q.template if infill else None, seed=i) == q.answer
            for i, q in enumerate(questions)]
    return mean([float(h) for h in hits])


def run(a) -> str:
    from cdlm.data.facts import build_world

    world = build_world(seed=a.seed, reversal_links=a.links, chains=a.chains)
    data = facts_data(a, a.out, world)
    runs = runs_for(a, data)
    logs = until_criterion(a, world, runs)
    ckpts = train(runs, a.out, budget(a, 3000), a.parallel, a.threads)
    questions = world.reversal_questions()
    by_kind = {k: [q for q in questions if q.kind == k][: a.questions] for k in KINDS[:3]}
    by_kind[KINDS[3]] = by_kind[KINDS[2]]
    rows = {}
    for m in a.models:
        scores = {k: [] for k in KINDS}
        for r in runs:
            if r.model != m:
                continue
            model = load(ckpts[r.name])
            for k in KINDS:
                if k.endswith("infilling") and model.left_to_right:
                    continue
                scores[k].append(accuracy(model, by_kind[k], infill=k.endswith("infilling")))
        rows[m] = {k: mean(v) for k, v in scores.items() if v}
        rows[m].update(criterion_columns(logs, runs, m, a.until) if logs else {})
    chance = 1 / len(world.people)
    meta = {"budget": budget(a, 3000), "until": getattr(a, "until", None), "seeds": a.seeds,
            "people": len(world.people), "chance": chance,
            "questions": {k: len(v) for k, v in by_kind.items()}}
    figure(a.out / "reversal.png", [("exact match of the name", {m: ([k for k in KINDS if k in r], [r[k] for k in KINDS if k in r])
                                                              for m, r in rows.items()})],
           "", "accuracy", bars=True)
    title = (f"Reversal ({' '.join(meta['budget'])}, seeds {a.seeds}; {len(world.people)} people, chance {chance:.4f}; "
             f"{len(by_kind[KINDS[2]])} held-out reverses)")
    return report(a.out, "reversal", title, rows, [*KINDS, "steps to learn", "train score"], "model", meta)
