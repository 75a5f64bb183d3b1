"""Training and generation throughput of the three models on one backbone.

One JSON line per measurement on stdout:

- `{"bench": "config", ...}`: the sizes, device, threads and peak FLOP/s the MFU is against;
- `{"bench": "train", "model": ar | continuous | continuous_sc | masked, "precision": fp32 |
  bf16, "compiled": bool, ...}`: tokens/s over a few optimizer steps of `training_step` +
  backward + AdamW (+ the EMA update of the diffusion models) on random token batches (from
  the fastest timed step, and the median), the seconds of the first (compiling) step, peak
  memory, the FLOPs per token and MFU;
- `{"bench": "generate", "model": ..., "sampler": ..., "nfe": ..., "L": ..., "B": ...}`:
  generated tokens/s (B·L per call, fastest of `--gen_reps` calls) of `sample_ids`;
- `{"bench": "ratio", ...}`: diffusion ÷ AR, training tokens/s at equal precision/compile
  and generation tokens/s at equal L against the KV-cache AR (and the recompute one).
- with `--sampling_cuts` (alone): `{"bench": "sampling_cut", ...}` rows, generation at
  `length="data"` (B = --gen_batch, L = the first --gen_lengths) of the continuous (quickstart
  sampler) and masked (low_confidence, L steps) models with and without each cost cut, and
  `{"bench": "ratio", "what": "sampling_cut", ...}`: tokens/s with ÷ without, measured in the same
  run (reps interleaved), with the share of samples whose ids are unchanged for equal seeds
  (1.0 for an exact cut) and, on the embedded corpus, the validity of both.
  `--cuts_ckpts CONT,MASKED` measures trained checkpoints instead of random models.

FLOPs per trained token (PaLM's MFU convention): 6·N + 12·depth·width·L, N the weights a token
meets in matmuls (blocks 12·width² per layer, the output projection V·width and each model's
extras), the attention term counted in full (no causal halving); `continuous_sc` adds the
expected no-grad self-conditioning pass (p · (2·N + 4·depth·width·L)). Peak memory: on CUDA
`max_memory_allocated`; on CPU the peak RSS (sampled every 2 ms) above the RSS before the model
was built (the allocator may reuse freed memory, so this is a lower bound). MFU is null on CPU
unless `--peak_tflops` is given; on CUDA the peak is looked up from the device name (dense
bf16; fp32 counted against the TF32 tensor-core peak when TF32 matmuls are enabled, else the
fp32 peak) or given.

    python benchmarks/bench_throughput.py --quick                  # this CPU, ~1-2 minutes
    python benchmarks/bench_throughput.py --device cuda            # GPT-2-small size, L = 1024
    python benchmarks/bench_throughput.py --quick --sampling_cuts --gen_lengths 40 --gen_reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import warnings

import torch

# training_step logs through a Trainer; measured here without one
warnings.filterwarnings("ignore", message=r".*self\.log\(\)")

# dense peak FLOP/s by device name fragment: (bf16, tf32, fp32)
GPU_PEAKS = {
    "H200": (989e12, 494e12, 67e12),
    "H100": (989e12, 494e12, 67e12),
    "A100": (312e12, 156e12, 19.5e12),
    "L4": (121e12, 60e12, 30e12),
}


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def tokenizer_json() -> str:
    from cdlm.data.corpus import corpus_texts
    from cdlm.data.tokenizer import train_tokenizer

    return train_tokenizer(corpus_texts(2000, seed=0), kind="word").to_str()


def build(kind: str, tok: str, a, seq_len: int, compiled: bool, device: str):
    from cdlm import AutoregressiveLM, DiffusionLM, MaskedDiffusionLM

    common = dict(tokenizer_json=tok, seq_len=seq_len, width=a.width, depth=a.depth, heads=a.heads, val_samples=0)
    if kind == "ar":
        model = AutoregressiveLM(**common, compile=compiled)
    elif kind in ("continuous", "continuous_sc"):
        model = DiffusionLM(**common, embed_dim=a.embed_dim, training={"self_condition": 0.5 if kind == "continuous_sc" else 0.0},
                            sampler=QUICKSTART)
    else:
        model = MaskedDiffusionLM(**common)
    if compiled and not getattr(model, "compiles", False):
        # models whose signature has no `compile` yet: the same in-place nn.Module.compile
        for name in model.COMPILED_NETWORKS:
            if hasattr(model, name):
                getattr(model, name).compile()
    return model.to(device)


def matmul_params(kind: str, model) -> int:
    """N: the weights one token meets in matmuls (per-sequence conditioning layers excluded)."""
    h = model.hparams
    W, V = h.width, model.tokenizer.get_vocab_size()
    n = h.depth * h.get("loops", 1) * 12 * W * W + V * W  # blocks (each pass of a looped stack) + output projection
    if kind.startswith("continuous"):
        d = h.embed_dim
        n += (2 * d if model.training_config.self_condition > 0 else d) * W + V * d  # input layer, x0 = softmax·E
    return n


def train_flops_per_token(kind: str, model, seq_len: int) -> float:
    h = model.hparams
    n, attn = matmul_params(kind, model), h.depth * h.get("loops", 1) * h.width * seq_len
    flops = 6 * n + 12 * attn
    if kind == "continuous_sc":
        flops += model.training_config.self_condition * (2 * n + 4 * attn)
    return float(flops)


class PeakMemory:
    """Peak memory in MiB above the start, for CUDA or (by sampled RSS) for the CPU."""

    def __init__(self, device: str):
        self.device = device

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.peak = self.rss()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.peak, self.rss())
            self.mib = (self.peak - self.base) / 2**20


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_flops(a, precision: str) -> float | None:
    if a.peak_tflops is not None:
        return a.peak_tflops * 1e12
    if a.device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    for key, (bf16, tf32, fp32) in GPU_PEAKS.items():
        if key in name:
            if precision == "bf16":
                return bf16
            return tf32 if torch.backends.cuda.matmul.allow_tf32 else fp32
    return None


def bench_train(kind: str, tok: str, a, precision: str, compiled: bool) -> dict:
    torch.manual_seed(0)
    with PeakMemory(a.device) as mem:
        model = build(kind, tok, a, a.train_seq_len, compiled, a.device).train()
        V = model.tokenizer.get_vocab_size()
        opt = torch.optim.AdamW(model.param_groups(), lr=1e-4, betas=(0.9, 0.99))
        batches = [torch.randint(0, V, (a.train_batch, a.train_seq_len), device=a.device) for _ in range(2)]
        times = []
        for i in range(a.warmup_steps + a.train_steps):
            sync(a.device)
            start = time.perf_counter()
            with torch.autocast(a.device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model.training_step((batches[i % 2],), i)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if hasattr(model, "update_ema"):
                model.update_ema(i + 1)
            sync(a.device)
            times.append(time.perf_counter() - start)
    # the fastest timed step: on a shared machine the median mostly measures the other load
    step, median = min(times[a.warmup_steps:]), statistics.median(times[a.warmup_steps:])
    tokens_per_s = a.train_batch * a.train_seq_len / step
    fpt = train_flops_per_token(kind, model, a.train_seq_len)
    peak = peak_flops(a, precision)
    return dict(bench="train", model=kind, precision=precision, compiled=compiled, tokens_per_s=round(tokens_per_s, 1),
                tokens_per_s_median=round(a.train_batch * a.train_seq_len / median, 1),
                step_s=round(step, 5), first_step_s=round(times[0], 3), peak_mem_mib=round(mem.mib, 1),
                flops_per_token=fpt, achieved_tflops=round(tokens_per_s * fpt / 1e12, 4),
                mfu=None if peak is None else round(tokens_per_s * fpt / peak, 4),
                params=sum(p.numel() for p in model.net.parameters()), batch=a.train_batch, seq_len=a.train_seq_len,
                loss=round(float(loss.detach()), 4))


# the quickstart's sampler (configs/quickstart.yaml): 19 DDIM steps + 30 one-step restarts = 49 NFE
QUICKSTART = dict(method="ddim", steps=19, temperature=0.3, restarts=30, restart_steps=1, restart_log_snr=-2.0,
                  restart_log_snr_end=0.0, rounding="last")


def samplers(kind: str, L: int) -> list[tuple[str, dict]]:
    if kind == "ar":
        return [("kv_cache", {"use_cache": True}), ("recompute", {"use_cache": False})]
    if kind == "continuous":
        return [("quickstart_49", {}),
                ("ddim9_restarts10", dict(steps=9, restarts=10)),  # same levels, 19 NFE
                ("ddim8_last", dict(steps=8, restarts=0))]
    steps = sorted({L, max(1, L // 4), max(1, L // 8)}, reverse=True)
    return [(f"low_confidence_{s}", {"method": "low_confidence", "steps": s}) for s in steps]


def bench_generate(kind: str, tok: str, a, L: int) -> list[dict]:
    torch.manual_seed(0)
    model = build(kind, tok, a, L, False, a.device).eval()
    rows = []
    dtype = torch.bfloat16 if a.gen_precision == "bf16" else None
    for name, settings in samplers(kind, L):
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=dtype is not None):
            model.sample_ids(2, seed=0, batch_size=2, **settings)  # warm-up (allocations, kernels)
            times = []
            for r in range(a.gen_reps):
                sync(a.device)
                start = time.perf_counter()
                gen = model.sample_ids(a.gen_batch, seed=r, batch_size=a.gen_batch, **settings)
                sync(a.device)
                times.append(time.perf_counter() - start)
        secs = min(times)
        steps_run = int((gen.ids != model.pad_id).any(0).nonzero().max()) + 1 if kind == "ar" else L
        rows.append(dict(bench="generate", model=kind, sampler=name, nfe=gen.nfe, L=L, B=a.gen_batch,
                         precision=a.gen_precision, tokens_per_s=round(a.gen_batch * L / secs, 1),
                         seconds=round(secs, 4), **({"positions_generated": steps_run} if kind == "ar" else {})))
    return rows


# variant → (sample_ids options, Denoiser.skip_unused_x0); "group" splits B into --cuts_groups batches
CUT_VARIANTS = {
    "baseline": ({}, True),
    "x0_recomputed": ({}, False),
    "trim": ({"trim_padding": True}, True),
    "split": ({"batch": "group"}, True),
    "split_trim": ({"batch": "group", "trim_padding": True}, True),
    "split_group_trim": ({"batch": "group", "trim_padding": True, "group_lengths": True}, True),
}
# cut → (variant with it, variant without it)
CUTS = {
    "skip_unused_x0": ("baseline", "x0_recomputed"),
    "trim_padding": ("trim", "baseline"),
    "group_lengths": ("split_group_trim", "split_trim"),
    "group_lengths_trim_vs_baseline": ("split_group_trim", "baseline"),
    "split_batch_cost": ("split", "baseline"),
}


def length_counts(tok: str, L: int) -> list[int]:
    """The embedded corpus's lengths 0..L, as a data module records them for `length="data"`."""
    from cdlm.data.corpus import corpus_texts
    from cdlm.data.tokenizer import load_tokenizer

    n = [min(len(e.ids), L) for e in load_tokenizer(tok).encode_batch(corpus_texts(2000, seed=1), add_special_tokens=False)]
    return torch.bincount(torch.tensor(n), minlength=L + 1).tolist()


def bench_cuts(tok: str, a, L: int) -> list[dict]:
    from cdlm.checkpoints import load_checkpoint
    from cdlm.data import corpus
    from cdlm.sampling.continuous import Denoiser

    ckpts = a.cuts_ckpts.split(",") if a.cuts_ckpts else [None, None]
    rows = []
    for kind, ckpt in zip(("continuous", "masked"), ckpts):
        torch.manual_seed(0)
        if ckpt:
            model = load_checkpoint(ckpt, device=a.device)[0].to(a.device).eval()
            L = model.hparams.seq_len
        else:
            model = build(kind, tok, a, L, False, a.device).eval()
            model.hparams.length_counts = length_counts(tok, L)
        # the continuous model's own sampler (build() gives the quickstart's); masked: one position a step
        settings = {} if kind == "continuous" else {"method": "low_confidence", "steps": L}
        variants = [v for v in CUT_VARIANTS if kind == "continuous" or CUT_VARIANTS[v][1]]
        times, ids, nfe = {v: [] for v in variants}, {}, {}
        model.sample_ids(2, seed=0, batch_size=2, length="data", **settings)  # warm-up
        for r in range(a.gen_reps):  # interleaved, so that a change in the machine's load hits all alike
            for v in variants:
                options, skip = CUT_VARIANTS[v]
                options = dict(options)
                batch = a.gen_batch // a.cuts_groups if options.pop("batch", None) else a.gen_batch
                Denoiser.skip_unused_x0 = skip
                try:
                    sync(a.device)
                    start = time.perf_counter()
                    gen = model.sample_ids(a.gen_batch, seed=r, batch_size=batch, length="data", **settings, **options)
                    sync(a.device)
                finally:
                    Denoiser.skip_unused_x0 = True
                times[v].append(time.perf_counter() - start)
                ids.setdefault(v, []).append(gen.ids.cpu())
                nfe[v] = gen.nfe
        tok_per_sample = model.data_lengths(a.gen_batch, 0).float().mean().item()
        out = {}
        for v in variants:
            secs = min(times[v])
            texts = [t for g in ids[v] for t in model.decode(g)]
            out[v] = dict(bench="sampling_cut", model=kind, variant=v, checkpoint=ckpt, L=L, B=a.gen_batch,
                          batch_size=a.gen_batch // a.cuts_groups if "batch" in CUT_VARIANTS[v][0] else a.gen_batch,
                          nfe=nfe[v], tokens_per_s=round(a.gen_batch * L / secs, 1), seconds=round(secs, 4),
                          mean_length=round(tok_per_sample, 2), validity=round(corpus.validity(texts), 3))
            rows.append(out[v])
        for cut, (with_, without) in CUTS.items():
            if with_ in out and without in out:
                same = sum(int((x == y).all(1).sum()) for x, y in zip(ids[with_], ids[without]))
                rows.append(dict(bench="ratio", what="sampling_cut", model=kind, cut=cut, **{"with": with_}, without=without,
                                 ratio=round(out[with_]["tokens_per_s"] / out[without]["tokens_per_s"], 3),
                                 ids_identical=round(same / (a.gen_batch * a.gen_reps), 3),
                                 validity_with=out[with_]["validity"], validity_without=out[without]["validity"]))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a minute or two on a CPU")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--width", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--embed_dim", type=int, default=16)
    p.add_argument("--train_seq_len", type=int)
    p.add_argument("--train_batch", type=int)
    p.add_argument("--train_steps", type=int, help="timed optimizer steps (fastest and median reported)")
    p.add_argument("--warmup_steps", type=int, default=2, help="untimed steps first (compilation happens here)")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--compile", default=None, help="'eager', 'compiled' or 'eager,compiled' (quick: compiled only in fp32)")
    p.add_argument("--models", default="ar,continuous,continuous_sc,masked")
    p.add_argument("--gen_lengths", default="40,256")
    p.add_argument("--gen_batch", type=int, default=64)
    p.add_argument("--gen_reps", type=int)
    p.add_argument("--gen_precision", default=None, choices=["fp32", "bf16"])
    p.add_argument("--peak_tflops", type=float, default=None, help="peak FLOP/s (in TFLOP/s) that MFU is against")
    p.add_argument("--skip", default="", help="comma list of 'train', 'generate'")
    p.add_argument("--sampling_cuts", action="store_true", help="only the sampling cost cuts (see above)")
    p.add_argument("--cuts_groups", type=int, default=4, help="batches B is split into for the grouping rows")
    p.add_argument("--cuts_ckpts", default=None, help="CONTINUOUS_CKPT,MASKED_CKPT to measure instead of random models")
    a = p.parse_args(argv)
    if a.cuts_groups < 1:
        p.error(f"--cuts_groups must be a positive integer, got {a.cuts_groups}")
    small = dict(width=64, depth=2, heads=2, train_seq_len=40, train_batch=32, train_steps=8, gen_reps=1)
    large = dict(width=768, depth=12, heads=12, train_seq_len=1024, train_batch=8, train_steps=10, gen_reps=3)
    for k, v in (small if a.quick else large).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.gen_precision = a.gen_precision or ("bf16" if a.device == "cuda" else "fp32")
    models = a.models.split(",")
    precisions = a.precisions.split(",")
    tok = tokenizer_json()
    from cdlm.data.tokenizer import load_tokenizer

    emit(bench="config", device=a.device, device_name=torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
         torch=torch.__version__, threads=torch.get_num_threads(), quick=a.quick, width=a.width, depth=a.depth,
         heads=a.heads, embed_dim=a.embed_dim, vocab=load_tokenizer(tok).get_vocab_size(),
         train_seq_len=a.train_seq_len, train_batch=a.train_batch, train_steps=a.train_steps,
         peak_tflops={pr: (None if peak_flops(a, pr) is None else peak_flops(a, pr) / 1e12) for pr in precisions})

    if a.sampling_cuts:
        for row in bench_cuts(tok, a, int(a.gen_lengths.split(",")[0])):
            emit(**row)
        return

    train = {}
    if "train" not in a.skip:
        for precision in precisions:
            modes = a.compile or ("eager,compiled" if not a.quick or precision == "fp32" else "eager")
            for compiled in [m == "compiled" for m in modes.split(",")]:
                for kind in models:
                    row = bench_train(kind, tok, a, precision, compiled)
                    train[kind, precision, compiled] = row["tokens_per_s"]
                    emit(**row)
        for (kind, precision, compiled), tps in train.items():
            if kind != "ar" and ("ar", precision, compiled) in train:
                emit(bench="ratio", what="train_tokens_per_s", model=kind, vs="ar", precision=precision,
                     compiled=compiled, ratio=round(tps / train["ar", precision, compiled], 3))
        for (kind, precision, compiled), tps in train.items():
            if compiled and (kind, precision, False) in train:
                emit(bench="ratio", what="train_compiled_vs_eager", model=kind, precision=precision,
                     ratio=round(tps / train[kind, precision, False], 3))
        for (kind, precision, compiled), tps in train.items():
            if precision == "bf16" and (kind, "fp32", compiled) in train:
                emit(bench="ratio", what="train_bf16_vs_fp32", model=kind, compiled=compiled,
                     ratio=round(tps / train[kind, "fp32", compiled], 3))

    if "generate" not in a.skip:
        for L in [int(x) for x in a.gen_lengths.split(",")]:
            rows = [r for kind in dict.fromkeys(m.replace("_sc", "") for m in models) for r in bench_generate(kind, tok, a, L)]
            for r in rows:
                emit(**r)
            ar = {r["sampler"]: r["tokens_per_s"] for r in rows if r["model"] == "ar"}
            for r in rows:
                if r["model"] != "ar":
                    for ref, tps in ar.items():
                        emit(bench="ratio", what="generate_tokens_per_s", model=r["model"], sampler=r["sampler"],
                             nfe=r["nfe"], L=L, vs=f"ar_{ref}", ratio=round(r["tokens_per_s"] / tps, 3))


if __name__ == "__main__":
    main()
