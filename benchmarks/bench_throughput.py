"""Training and generation throughput of the three models on one backbone.

Built for a shared, noisy machine: the models are timed interleaved, not one after another, so that
a change in the machine's load hits all of them alike, and each ratio is taken round by round.

- training: every model of `--models` at every (precision, compile) setting is built and given its
  untimed `--warmup_steps` (in turn; compilation happens here), then `--repeats` timed rounds run,
  round r = one optimizer step of each (setting by setting, model by model; the order reversed on
  odd rounds, so no model always follows the same one). `--interleave setting` instead builds and
  times one setting's models at a time (less memory at once).
- generation: every (model, sampler) is built and warmed up, then `--gen_reps` (default
  `--repeats`) rounds of one `sample_ids` call of each, in the same alternating order.
- ratios: per round r, the model's seconds against the reference's seconds in the same round
  (equal tokens per step/call, so a tokens/s ratio); the row gives the median of the per-round
  ratios and their min–max. Two cells timed in different phases (`--interleave setting`:
  compiled ÷ eager, bf16 ÷ fp32) get the ratio of their median seconds, `"paired": false`, no spread.

One JSON line per measurement on stdout:

- `{"bench": "config", ...}`: the sizes, device, threads, peak FLOP/s the MFU is against, and
  `loadavg_start` (`os.getloadavg()`, with `cpu_count`) to show how busy the machine was;
- `{"bench": "train", "model": ar | continuous | continuous_sc | masked, "precision": fp32 |
  bf16, "compiled": bool, ...}`: tokens/s over the timed optimizer steps of `training_step` +
  backward + AdamW (+ the EMA update of the diffusion models) on random token batches (from
  the fastest timed step, and the median), the seconds of the first (compiling) step, peak
  memory (over the build and warm-up steps), the FLOPs per token and MFU;
- `{"bench": "generate", "model": ..., "sampler": ..., "nfe": ..., "L": ..., "B": ...}`:
  generated tokens/s (B·L per call, from the fastest call, and the median) of `sample_ids`;
- `{"bench": "ratio", ..., "ratio": median, "ratio_min": ..., "ratio_max": ..., "rounds": R,
  "paired": bool}`: diffusion ÷ AR training tokens/s at equal precision/compile, compiled ÷ eager
  and bf16 ÷ fp32 of each model, and generation tokens/s at equal L against the KV-cache AR
  (and the recompute one);
- `{"bench": "load", "loadavg_start": [...], "loadavg_end": [...]}`: last, the 1/5/15-minute load
  averages at the start and the end of the run (on a machine with `cpu_count` cores).
- with `--sampling_cuts` (alone): `{"bench": "sampling_cut", ...}` rows, generation at
  `length="data"` (B = --gen_batch, L = the first --gen_lengths) of the continuous (quickstart
  sampler) and masked (low_confidence, L steps) models with and without each cost cut, and
  `{"bench": "ratio", "what": "sampling_cut", ...}`: tokens/s with ÷ without (fastest of
  `--gen_reps` each, quick 1, else 3), measured in the same run (reps interleaved), with the share
  of samples whose ids are unchanged for equal seeds (1.0 for an exact cut) and, on the embedded
  corpus, the validity of both. `--cuts_ckpts CONT,MASKED` measures trained checkpoints instead of
  random models.

FLOPs per trained token (PaLM's MFU convention): 6·N + 12·depth·width·L, N the weights a token
meets in matmuls (blocks 12·width² per layer, the output projection V·width and each model's
extras), the attention term counted in full (no causal halving); `continuous_sc` adds the
expected no-grad self-conditioning pass (p · (2·N + 4·depth·width·L)). Peak memory: on CUDA
`max_memory_allocated`; on CPU the peak RSS (sampled every 2 ms) above the RSS before the model
was built (the allocator may reuse memory freed by the models built before, so this is a lower
bound). All models stay built until their timed rounds end: with the default `--interleave all`
that is every setting's copy of every model at once. MFU is null on CPU unless `--peak_tflops` is
given; on CUDA the peak is looked up from the device name (dense
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

    shape = {"width": a.width, "depth": a.depth, "heads": a.heads}
    common = dict(tokenizer_json=tok, seq_len=seq_len, val_samples=0)
    if kind == "ar":
        model = AutoregressiveLM(**common, network=shape, compile=compiled)
    elif kind in ("continuous", "continuous_sc"):
        model = DiffusionLM(**common, network={**shape, "embed_dim": a.embed_dim}, training={"self_condition": 0.5 if kind == "continuous_sc" else 0.0},
                            sampler=QUICKSTART)
    else:
        model = MaskedDiffusionLM(**common, network=shape)
    if compiled and not getattr(model, "compiles", False):
        # models whose signature has no `compile` yet: the same in-place nn.Module.compile
        for name in model.COMPILED_NETWORKS:
            if hasattr(model, name):
                getattr(model, name).compile()
    return model.to(device)


def matmul_params(kind: str, model) -> int:
    """N: the weights one token meets in matmuls (per-sequence conditioning layers excluded)."""
    h = model.network
    W, V = h.width, model.tokenizer.get_vocab_size()
    n = h.depth * h.loops * 12 * W * W + V * W  # blocks (each pass of a looped stack) + output projection
    if kind.startswith("continuous"):
        d = h.embed_dim
        n += (2 * d if model.training_config.self_condition > 0 else d) * W + V * d  # input layer, x0 = softmax·E
    return n


def train_flops_per_token(kind: str, model, seq_len: int) -> float:
    h = model.network
    n, attn = matmul_params(kind, model), h.depth * h.loops * h.width * seq_len
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


def interleave(cells: list, rounds: int, call) -> None:
    """`rounds` timed rounds: round r calls `call(cell, r)` once for every cell, in the given order on even rounds and
    reversed on odd ones (no cell always follows the same one), appending the seconds it returns to `cell.times`."""
    for r in range(rounds):
        for cell in cells if r % 2 == 0 else cells[::-1]:
            cell.times.append(call(cell, r))


def round_ratio(num: list[float], den: list[float], paired: bool = True) -> dict:
    """tokens/s of `num` ÷ tokens/s of `den` from their seconds per call (equal tokens per call): per round (den's
    seconds ÷ num's in the same round r) the median with its min–max; unpaired (measured in different phases), the
    ratio of the median seconds, without a spread."""
    if not paired:
        return dict(ratio=round(statistics.median(den) / statistics.median(num), 3), ratio_min=None, ratio_max=None,
                    rounds=min(len(num), len(den)), paired=False)
    per_round = [d / n for n, d in zip(num, den)]
    return dict(ratio=round(statistics.median(per_round), 3), ratio_min=round(min(per_round), 3),
                ratio_max=round(max(per_round), 3), rounds=len(per_round), paired=True)


class TrainCell:
    """One model at one (precision, compiled) setting: built, its optimizer and batches, and its untimed warm-up steps
    run at once (peak memory is measured over these); `step()` runs (and times) one more optimizer step."""

    def __init__(self, kind: str, tok: str, a, precision: str, compiled: bool):
        self.kind, self.precision, self.compiled, self.a = kind, precision, compiled, a
        self.i, self.times, self.warmup = 0, [], []
        torch.manual_seed(0)
        with PeakMemory(a.device) as mem:
            self.model = build(kind, tok, a, a.train_seq_len, compiled, a.device).train()
            V = self.model.tokenizer.get_vocab_size()
            self.opt = torch.optim.AdamW(self.model.param_groups(), lr=1e-4, betas=(0.9, 0.99))
            self.batches = [torch.randint(0, V, (a.train_batch, a.train_seq_len), device=a.device) for _ in range(2)]
            self.warmup = [self.step() for _ in range(a.warmup_steps)]
        self.mem_mib = mem.mib

    @property
    def key(self) -> tuple:
        return self.kind, self.precision, self.compiled

    def step(self, *_) -> float:
        a, model, i = self.a, self.model, self.i
        sync(a.device)
        start = time.perf_counter()
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            loss = model.training_step((self.batches[i % 2],), i)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if hasattr(model, "update_ema"):
            model.update_ema(i + 1)
        sync(a.device)
        secs = time.perf_counter() - start
        self.i, self.loss = i + 1, float(loss.detach())
        return secs

    def row(self) -> dict:
        a, times = self.a, self.times
        # the fastest timed step: on a shared machine the median mostly measures the other load
        step, median = min(times), statistics.median(times)
        tokens_per_s = a.train_batch * a.train_seq_len / step
        fpt = train_flops_per_token(self.kind, self.model, a.train_seq_len)
        peak = peak_flops(a, self.precision)
        return dict(bench="train", model=self.kind, precision=self.precision, compiled=self.compiled,
                    tokens_per_s=round(tokens_per_s, 1), tokens_per_s_median=round(a.train_batch * a.train_seq_len / median, 1),
                    step_s=round(step, 5), first_step_s=round((self.warmup + times)[0], 3), peak_mem_mib=round(self.mem_mib, 1),
                    flops_per_token=fpt, achieved_tflops=round(tokens_per_s * fpt / 1e12, 4),
                    mfu=None if peak is None else round(tokens_per_s * fpt / peak, 4),
                    params=sum(p.numel() for p in self.model.net.parameters()), batch=a.train_batch,
                    seq_len=a.train_seq_len, rounds=len(times), loss=round(self.loss, 4))


def bench_train(tok: str, a, models: list[str], settings: list[tuple[str, bool]]) -> tuple[list[dict], dict]:
    """Every model at every (precision, compiled) setting of `settings` built and warmed up (in turn), then
    `--repeats` timed rounds of one optimizer step of each (setting-major order, reversed on odd rounds).
    Returns the train rows and each (model, precision, compiled)'s seconds per timed step, round by round."""
    cells = [TrainCell(kind, tok, a, precision, compiled) for precision, compiled in settings for kind in models]
    interleave(cells, a.repeats, TrainCell.step)
    rows, times = [cell.row() for cell in cells], {cell.key: cell.times for cell in cells}
    del cells
    return rows, times


def train_ratios(times: dict, phase: dict) -> list[dict]:
    """Diffusion ÷ AR at equal precision/compile, compiled ÷ eager and bf16 ÷ fp32, per round where the two were timed
    in the same rounds (same phase), else the ratio of the medians (`"paired": false`)."""
    rows = []
    for (kind, precision, compiled), t in times.items():
        ref = ("ar", precision, compiled)
        if kind != "ar" and ref in times:
            rows.append(dict(bench="ratio", what="train_tokens_per_s", model=kind, vs="ar", precision=precision,
                             compiled=compiled, **round_ratio(t, times[ref], phase[ref] == phase[kind, precision, compiled])))
    for (kind, precision, compiled), t in times.items():
        ref = (kind, precision, False)
        if compiled and ref in times:
            rows.append(dict(bench="ratio", what="train_compiled_vs_eager", model=kind, precision=precision,
                             **round_ratio(t, times[ref], phase[ref] == phase[kind, precision, compiled])))
    for (kind, precision, compiled), t in times.items():
        ref = (kind, "fp32", compiled)
        if precision == "bf16" and ref in times:
            rows.append(dict(bench="ratio", what="train_bf16_vs_fp32", model=kind, compiled=compiled,
                             **round_ratio(t, times[ref], phase[ref] == phase[kind, precision, compiled])))
    return rows


# the quickstart's sampler (configs/quickstart.yaml): 19 DDIM steps + 30 one-step restarts = 49 NFE
QUICKSTART = dict(method="ddim", steps=19, score_temperature=0.3, restarts=30, restart_steps=1, restart_log_snr=-2.0,
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


class GenCell:
    """One (model, sampler): warmed up at once; `call(r)` times one `sample_ids` of B = --gen_batch with seed r."""

    def __init__(self, kind: str, model, name: str, settings: dict, a):
        self.kind, self.model, self.name, self.settings, self.a = kind, model, name, settings, a
        self.times = []
        with self.autocast():
            model.sample_ids(2, seed=0, batch_size=2, **settings)  # warm-up (allocations, kernels)

    def autocast(self):
        return torch.autocast(self.a.device, dtype=torch.bfloat16, enabled=self.a.gen_precision == "bf16")

    def call(self, r: int) -> float:
        a = self.a
        with self.autocast():
            sync(a.device)
            start = time.perf_counter()
            self.gen = self.model.sample_ids(a.gen_batch, seed=r, batch_size=a.gen_batch, **self.settings)
            sync(a.device)
        return time.perf_counter() - start

    def row(self, L: int) -> dict:
        a, gen, kind = self.a, self.gen, self.kind
        secs = min(self.times)
        steps_run = int((gen.ids != self.model.pad_id).any(0).nonzero().max()) + 1 if kind == "ar" else L
        return dict(bench="generate", model=kind, sampler=self.name, nfe=gen.nfe, L=L, B=a.gen_batch,
                    precision=a.gen_precision, tokens_per_s=round(a.gen_batch * L / secs, 1),
                    tokens_per_s_median=round(a.gen_batch * L / statistics.median(self.times), 1),
                    seconds=round(secs, 4), rounds=len(self.times),
                    **({"positions_generated": steps_run} if kind == "ar" else {}))


def bench_generate(kinds: list[str], tok: str, a, L: int) -> list[dict]:
    """Every (model, sampler) built and warmed up, then --gen_reps rounds of one call of each (reversed on odd
    rounds); the generate rows, then each non-AR row's ratio to each AR sampler, per round."""
    cells = []
    for kind in kinds:
        torch.manual_seed(0)
        model = build(kind, tok, a, L, False, a.device).eval()
        cells += [GenCell(kind, model, name, settings, a) for name, settings in samplers(kind, L)]
    interleave(cells, a.gen_reps, GenCell.call)
    rows = [cell.row(L) for cell in cells]
    for cell, r in zip(cells, rows):
        if cell.kind != "ar":
            for ref in (c for c in cells if c.kind == "ar"):
                rows.append(dict(bench="ratio", what="generate_tokens_per_s", model=cell.kind, sampler=cell.name,
                                 nfe=r["nfe"], L=L, vs=f"ar_{ref.name}", **round_ratio(cell.times, ref.times)))
    return rows


# variant → (sample_ids options, NetworkCall.skip_unused_x0); "group" splits B into --cuts_groups batches
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
    from cdlm.sampling.denoiser import NetworkCall

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
                NetworkCall.skip_unused_x0 = skip
                try:
                    sync(a.device)
                    start = time.perf_counter()
                    gen = model.sample_ids(a.gen_batch, seed=r, batch_size=batch, length="data", **settings, **options)
                    sync(a.device)
                finally:
                    NetworkCall.skip_unused_x0 = True
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
    p.add_argument("--repeats", type=int, help="timed rounds: one optimizer step of every model a round (default 5)")
    p.add_argument("--train_steps", type=int, help="the old name of --repeats (each model's timed steps)")
    p.add_argument("--warmup_steps", type=int, default=2, help="untimed steps first (compilation happens here)")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--compile", default=None, help="'eager', 'compiled' or 'eager,compiled' (quick: compiled only in fp32)")
    p.add_argument("--models", default="ar,continuous,continuous_sc,masked")
    p.add_argument("--gen_lengths", default="40,256")
    p.add_argument("--gen_batch", type=int, default=64)
    p.add_argument("--gen_reps", type=int, help="timed generation rounds (default --repeats; --sampling_cuts: quick 1, else 3)")
    p.add_argument("--gen_precision", default=None, choices=["fp32", "bf16"])
    p.add_argument("--peak_tflops", type=float, default=None, help="peak FLOP/s (in TFLOP/s) that MFU is against")
    p.add_argument("--skip", default="", help="comma list of 'train', 'generate'")
    p.add_argument("--interleave", default="all", choices=["all", "setting"],
                   help="'all': every (precision, compile, model) built at once and timed in the same rounds; "
                        "'setting': one (precision, compile) setting's models at a time (less memory; compiled ÷ eager "
                        "and bf16 ÷ fp32 then a ratio of medians, \"paired\": false)")
    p.add_argument("--sampling_cuts", action="store_true", help="only the sampling cost cuts (see above)")
    p.add_argument("--cuts_groups", type=int, default=4, help="batches B is split into for the grouping rows")
    p.add_argument("--cuts_ckpts", default=None, help="CONTINUOUS_CKPT,MASKED_CKPT to measure instead of random models")
    a = p.parse_args(argv)
    loadavg_start = list(os.getloadavg())
    if a.cuts_groups < 1:
        p.error(f"--cuts_groups must be a positive integer, got {a.cuts_groups}")
    if a.repeats is not None and a.train_steps is not None and a.repeats != a.train_steps:
        p.error(f"--repeats {a.repeats} and its old name --train_steps {a.train_steps} disagree")
    a.repeats = a.train_steps = a.repeats or a.train_steps or 5
    if a.gen_reps is None:
        a.gen_reps = (1 if a.quick else 3) if a.sampling_cuts else a.repeats
    if a.repeats < 1 or a.gen_reps < 1:
        p.error("--repeats and --gen_reps must be positive")
    small = dict(width=64, depth=2, heads=2, train_seq_len=40, train_batch=32)
    large = dict(width=768, depth=12, heads=12, train_seq_len=1024, train_batch=8)
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
         train_seq_len=a.train_seq_len, train_batch=a.train_batch, train_steps=a.train_steps, repeats=a.repeats,
         gen_reps=a.gen_reps, interleave=a.interleave, cpu_count=os.cpu_count(), loadavg_start=loadavg_start,
         peak_tflops={pr: (None if peak_flops(a, pr) is None else peak_flops(a, pr) / 1e12) for pr in precisions})

    if a.sampling_cuts:
        for row in bench_cuts(tok, a, int(a.gen_lengths.split(",")[0])):
            emit(**row)
    else:
        if "train" not in a.skip:
            settings = []
            for precision in precisions:
                modes = a.compile or ("eager,compiled" if not a.quick or precision == "fp32" else "eager")
                settings += [(precision, m == "compiled") for m in modes.split(",")]
            times, phase = {}, {}
            for i, group in enumerate([settings] if a.interleave == "all" else [[s] for s in settings]):
                rows, group_times = bench_train(tok, a, models, group)
                for row in rows:
                    emit(**row)
                times.update(group_times)
                phase.update(dict.fromkeys(group_times, i))
            for row in train_ratios(times, phase):
                emit(**row)

        if "generate" not in a.skip:
            for L in [int(x) for x in a.gen_lengths.split(",")]:
                for row in bench_generate(list(dict.fromkeys(m.replace("_sc", "") for m in models)), tok, a, L):
                    emit(**row)
    emit(bench="load", loadavg_start=loadavg_start, loadavg_end=list(os.getloadavg()), cpu_count=os.cpu_count())


if __name__ == "__main__":
    main()
