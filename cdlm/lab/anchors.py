"""`cdlm lab anchors`: words fixed at positions. The three models train on the embedded corpus
(their quickstart recipes, or `--checkpoints` given); for each of `--questions` held-out
sentences, `--words` of its words (3+ letters) are fixed at their token positions, and each
model writes `--per_set` samples around them. Reports validity (the exact validator), how
often the anchors hold, and seconds per set. The diffusion models impose the anchors at every
step; the AR model can only sample freely and keep what satisfies them (rejection), within the
time the slower diffusion model took for the same set; samples it did not deliver in time count
as invalid and unsatisfied.
"""

from __future__ import annotations

import random
import re
import time

from cdlm.lab import budget, mean, model_args
from cdlm.lab.runs import Run, figure, load, report, train


def add_arguments(p) -> None:
    p.add_argument("--words", type=int, default=2, help="words fixed per sentence")
    p.add_argument("--per_set", type=int, default=16, help="samples per anchored sentence")
    p.add_argument("--checkpoints", action="append", default=[], metavar="MODEL=CKPT",
                   help="use this trained checkpoint instead of training MODEL (repeatable)")


def anchor_sets(tokenizer, texts: list[str], seq_len: int, words: int, sets: int, seed: int) -> list[dict[int, str]]:
    """`words` whole words (3+ letters) of each chosen text, at their token positions."""
    from cdlm.data.tokenizer import encode

    rng, out = random.Random(seed), []
    for text in rng.sample(texts, len(texts)):
        found = []
        for m in re.finditer(r"[A-Za-z]{3,}", text):
            pos = len(encode(tokenizer, text[: m.start()]))  # tokens before the word
            if pos + len(encode(tokenizer, m.group())) >= seq_len:
                break
            found.append((pos, m.group()))
        if len(found) >= words:
            out.append(dict(rng.sample(found, words)))
        if len(out) == sets:
            break
    return out


def run(a) -> str:
    import torch

    from cdlm.control.constraints import build_constraints
    from cdlm.data import corpus
    from cdlm.evaluation import rejection_sample

    if bad := [spec for spec in a.checkpoints if "=" not in spec]:
        raise SystemExit(f"cdlm lab: error: --checkpoints {bad[0]!r} is not MODEL=CKPT")
    given = dict(spec.split("=", 1) for spec in a.checkpoints)
    if bad := [k for k in given if k not in a.models]:
        raise SystemExit(f"cdlm lab: error: --checkpoints names {', '.join(bad)}, not among --models")
    runs = [Run(f"{m}_s{s}", m, [*model_args(a, m), f"--seed_everything={s}"])
            for m in a.models if m not in given for s in a.seeds]
    ckpts = train(runs, a.out, budget(a, 4500), a.parallel, a.threads) if runs else {}
    models = {m: [given[m]] if m in given else [ckpts[f"{m}_s{s}"] for s in a.seeds] for m in a.models}
    val = [t for t, _ in corpus.generate(2000, seed=a.seed + 1)]
    rows, seconds = {}, {}
    order = [m for m in a.models if m != "ar"] + [m for m in a.models if m == "ar"]  # AR's budget is theirs
    for m in order:
        stats = {"validity": [], "anchors_hold": [], "seconds_per_set": [], "free_validity": []}
        for ckpt in models[m]:
            model = load(ckpt)
            L = model.hparams.seq_len
            sets = anchor_sets(model.tokenizer, val, L, a.words, a.questions or 16, a.seed)
            stats["free_validity"].append(corpus.validity(model.generate(a.per_set * 4, seed=a.seed)))
            for k, anchors in enumerate(sets):
                c = build_constraints(model.tokenizer, L, anchors=anchors)
                start = time.perf_counter()
                if model.left_to_right:
                    limit = max([seconds.get((other, k), 0.0) for other in a.models if other != "ar"] or [1.0])
                    # the diffusion model's batch, and nothing that ends after its time counts
                    ids, _ = rejection_sample(model, c.satisfied, a.per_set, limit, seed=a.seed + k,
                                              batch_size=a.per_set, strict=True)
                else:
                    ids = model.sample_ids(a.per_set, seed=a.seed + k, anchors=anchors).ids
                spent = time.perf_counter() - start
                seconds[(m, k)] = max(seconds.get((m, k), 0.0), spent)
                texts = model.decode(ids) if len(ids) else []
                held = c.satisfied(ids).float() if len(ids) else torch.zeros(0)
                valid = [float(corpus.is_valid(t)) for t in texts]
                stats["validity"].append(sum(valid) / a.per_set)
                stats["anchors_hold"].append(float(held.sum()) / a.per_set)
                stats["seconds_per_set"].append(spent)
        rows[m] = {k: mean(v) for k, v in stats.items()}
    rows = {m: rows[m] for m in a.models}
    meta = {"budget": budget(a, 4500) if runs else "given checkpoints", "seeds": a.seeds, "words": a.words,
            "per_set": a.per_set, "checkpoints": {m: [str(c) for c in v] for m, v in models.items()}}
    keys = ["validity", "anchors_hold", "free_validity", "seconds_per_set"]
    figure(a.out / "anchors.png", [("anchored samples", {m: (keys[:3], [rows[m][k] for k in keys[:3]]) for m in rows})],
           "", "fraction", bars=True)
    title = (f"Anchors ({a.words} words of held-out sentences fixed; {a.per_set} samples per set; "
             f"{' '.join(meta['budget']) if runs else 'given checkpoints'}, seeds {a.seeds})")
    return report(a.out, "anchors", title, rows, keys, "model", meta)
