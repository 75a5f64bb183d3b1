"""`cdlm lab data-efficiency`: repeated data. Each model trains on a small unique set of the
embedded corpus (`--sizes` sentences) for many epochs; a checkpoint every `--eval_every` steps
is scored on the same 1,000 held-out sentences: the NLL in bits per token (exact for AR, the
variational bound for the diffusion models) and validity (at the data's lengths for the
diffusion models). Reports the best NLL, the epoch it was reached at (the start of overfitting
when that is before the end), the NLL at the end, and the validity at the best checkpoint.

The models: AR, AR with dropout 0.1 (Gao et al.: dropout may give AR the same gains as input
masking), masked and continuous diffusion. Each run keeps its own cosine schedule over the
whole budget, so the early checkpoints are at a higher learning rate than a run of that length
would end at: the curve shows overfitting, not the best run for each epoch count.
"""

from __future__ import annotations

from cdlm.lab import _positive, budget, mean, model_args
from cdlm.lab.runs import Run, checkpoint_of, figure, report, train

VAL_SENTENCES = 1000


def add_arguments(p) -> None:
    p.add_argument("--sizes", default="500,2000", help="unique training sentences, comma-separated")
    p.add_argument("--eval_every", type=_positive(int), default=500, help="steps between scored checkpoints")
    p.add_argument("--samples", type=int, default=128, help="samples for validity at each checkpoint")
    p.add_argument("--ar_dropout", type=float, default=0.1, help="the dropout of the AR + dropout row")


def score(ckpt, val_texts: list[str], samples: int) -> dict:
    import torch

    from cdlm.checkpoints import load_checkpoint
    from cdlm.data import corpus
    from cdlm.data.tokenizer import encode

    model, data_hparams = load_checkpoint(str(ckpt))
    L, pad = model.hparams.seq_len, model.pad_id
    ids = torch.full((len(val_texts), L), pad, dtype=torch.long)
    tokens = 0
    for i, t in enumerate(val_texts):
        row = encode(model.tokenizer, t)[:L]
        ids[i, : len(row)] = torch.tensor(row)
        tokens += len(row)
    with torch.no_grad():
        torch.manual_seed(0)  # the bound's times and noise: the same for every checkpoint
        nats = sum(float(model.sequence_nll(ids[i: i + 250]).sum()) for i in range(0, len(ids), 250))
    length = {} if model.left_to_right else {"length": "data"}
    texts = model.generate(samples, seed=0, **length)
    return {"nll_bits_per_token": nats / tokens / 0.6931471805599453, "validity": corpus.validity(texts),
            "batch_size": data_hparams.get("batch_size", 64)}  # sentences a step (a --fit_arg may change it)


def run(a) -> str:
    from cdlm.data import corpus

    sizes = [int(s) for s in str(a.sizes).split(",")]
    val_texts = [t for t, _ in corpus.generate(VAL_SENTENCES, seed=a.seed + 1)]
    lines = {"ar": ("ar", []), "ar_dropout": ("ar", [f"--model.network.dropout={a.ar_dropout}"]),
             "masked": ("masked", []), "continuous": ("continuous", [])}
    lines = {name: v for name, v in lines.items() if v[0] in a.models}
    runs = []
    for size in sizes:
        path = a.out / f"train_{size}.txt"
        path.write_text("\n".join(t for t, _ in corpus.generate(size, seed=a.seed)) + "\n")
        val = a.out / "val.txt"
        val.write_text("\n".join(val_texts) + "\n")
        data = [f"--data.dataset={path}", f"--data.val_dataset={val}", "--data.tokenizer=word", "--data.seq_len=40", "--data.truncate=true",
                "--model.val_samples=0", f"--trainer.val_check_interval={a.eval_every}", "--trainer.limit_val_batches=2"]
        for name, (kind, extra) in lines.items():
            for s in a.seeds:
                run = f"{name}_n{size}_s{s}"
                every = [  # every --eval_every steps kept, not only the latest: the curve is the result
                    "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                    f"--trainer.callbacks.dirpath={checkpoint_of(a.out, run).parent}", "--trainer.callbacks.filename={step}",
                    f"--trainer.callbacks.every_n_train_steps={a.eval_every}", "--trainer.callbacks.save_top_k=-1",
                    "--trainer.callbacks.save_last=true", "--trainer.callbacks.enable_version_counter=false"]
                runs.append(Run(run, kind, [*data, *every, *model_args(a, kind), *extra, f"--seed_everything={s}"]))
    spent = budget(a, 4000)
    ckpts = train(runs, a.out, spent, a.parallel, a.threads)
    rows, curves = {}, {size: {} for size in sizes}
    for size in sizes:
        for name in lines:
            folders = [ckpts[f"{name}_n{size}_s{s}"].parent for s in a.seeds]
            found = [{int(p.stem.split("=")[1]): p for p in folder.glob("step=*.ckpt")} for folder in folders]
            steps = sorted(set.intersection(*(set(f) for f in found)))  # seeds of a --minutes budget differ
            if not steps:
                raise SystemExit(f"cdlm lab: error: {name}, {size} sentences: no checkpoint every --eval_every="
                                 f"{a.eval_every} steps in {', '.join(map(str, folders))} (a budget shorter than that?)")
            per_seed = [[score(f[step], val_texts, a.samples) for step in steps] for f in found]
            epochs = [step * per_seed[0][i]["batch_size"] / size for i, step in enumerate(steps)]
            nll = [mean([run[i]["nll_bits_per_token"] for run in per_seed]) for i in range(len(epochs))]
            valid = [mean([run[i]["validity"] for run in per_seed]) for i in range(len(epochs))]
            best = min(range(len(nll)), key=nll.__getitem__)
            curves[size][name] = (epochs, nll)
            rows[f"{name}, {size} sentences"] = {
                "best_nll_bits_per_token": nll[best], "best_at_epoch": round(epochs[best], 1),
                "final_nll_bits_per_token": nll[-1], "final_epoch": round(epochs[-1], 1),
                "overfits": "yes" if best < len(nll) - 1 and nll[-1] > nll[best] + 0.01 else "not yet",
                "validity_at_best": valid[best], "validity_final": valid[-1]}
    meta = {"budget": spent, "seeds": a.seeds, "sizes": sizes, "val_sentences": VAL_SENTENCES,
            "curves": {str(k): v for k, v in curves.items()}}
    figure(a.out / "data-efficiency.png", [(f"{size} unique sentences", curves[size]) for size in sizes],
           "epochs", "held-out NLL, bits/token (bound for diffusion)", xlog=True)
    title = f"Data efficiency ({' '.join(spent)} per run, seeds {a.seeds}; {VAL_SENTENCES} held-out sentences)"
    keys = ["best_nll_bits_per_token", "best_at_epoch", "final_nll_bits_per_token", "final_epoch", "overfits",
            "validity_at_best", "validity_final"]
    return report(a.out, "data-efficiency", title, rows, keys, "model, data", meta)
