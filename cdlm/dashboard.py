"""The TensorBoard a researcher keeps open, beside Lightning's scalars (losses, the learning rate).

`Dashboard` is the callback `cdlm fit` adds to every run (options `--dashboard.*`). With a
TensorBoard logger it writes:

- at each validation, three figures (Images tab):
  `figures/loss_vs_noise`: the validation loss against the noise level, at fixed noise levels
  (continuous model: cross-entropy against log-SNR, with the running training curve that warped
  time sampling follows and the share of training times it gives each level; masked model:
  cross-entropy per masked token against the mask rate);
  `figures/quality_vs_nfe`: sample quality against network calls for two or three samplers
  (validity on the embedded corpus; elsewhere the share of the samples' token bigrams that occur
  in the training text);
  `figures/denoising`: one sample being denoised, position by position: which token each call
  predicts (continuous) or has unmasked (masked), and at which call each settles on its final token;
  `figures/context` (every model, the autoregressive one too), with the scalars `val/context_bits`
  and `val/order_bits`: what the model gains from context over the best context-free model, and
  what shuffling the context costs it (`cdlm.diagnostics`);
- at the end of training, the hyperparameters of the model and the data with the final metrics
  (HParams tab: `final/val/loss`, `final/val/validity`, ...; Lightning's −1 `hp_metric`
  placeholder is switched off) and the token embeddings, labelled by token (Projector tab).

The autoregressive model has no noise level and no sampler to compare: it gets the context figure,
the hparams and the projector only. Figures cost a few seconds of sampling with the defaults (16 samples, step
counts 4, 8, 16); `--dashboard.figures=false` turns them off.
"""

from __future__ import annotations

import math
import time

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from cdlm.data.module import TextDataModule
from cdlm.diagnostics import training_ids
from cdlm.models.base import LanguageModel, flat_hparams
from cdlm.private_api import drop_hp_metric_placeholder

# hyperparameters too long or too structured for the HParams table (their size is logged instead)
_LONG_HPARAMS = ("tokenizer_json", "length_counts", "attribute_names", "diffusion")
_DEFAULT_METHODS = {"continuous": ("default", "ddim", "dpmpp_2m"), "masked": ("low_confidence", "ancestral", "semi_ar")}
FIGURES = ("figures/loss_vs_noise", "figures/quality_vs_nfe", "figures/denoising", "figures/context")


def model_kind(model) -> str | None:
    """"continuous", "masked", "autoregressive" (`LanguageModel.kind`) or None (not a language model)."""
    return model.kind if isinstance(model, LanguageModel) else None


def token_label(tokenizer, i: int) -> str:
    """A token as one printable line: its decoded text (BPE's byte symbols read as text), with
    whitespace made visible; special tokens by name."""
    name = tokenizer.id_to_token(int(i))
    if name is None:
        return "[MASK]"  # the masked model's extra id, one past the vocabulary
    text = tokenizer.decode([int(i)], skip_special_tokens=False) or name
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return text.replace(" ", "·") if text.strip() != text or not text.strip() else text


class Dashboard(Callback):
    """Figures at each validation, hyperparameters with final metrics and token embeddings at the end
    of training, in every TensorBoard logger of the run (see the module).

    Args:
        figures: draw the three figures at each validation (not during the sanity check).
        num_samples: samples per point of the quality-against-NFE figure.
        steps: the sampler step counts of that figure.
        methods: the samplers it compares: solver names (continuous model; "default" is the
            model's own sampler with its restarts, the others run without restarts) or masked
            methods; None: default, ddim and dpmpp_2m, or low_confidence, ancestral and semi_ar.
        noise_levels: points of the loss-against-noise figure.
        hparams: log the hyperparameters with the final metrics when training ends.
        embeddings: write the token embeddings to the projector when training ends.
        context: with figures, the context diagnostics at each validation (a few seconds).
    """

    def __init__(self, figures: bool = True, num_samples: int = 16, steps: list[int] | None = None,
                 methods: list[str] | None = None, noise_levels: int = 24, hparams: bool = True,
                 embeddings: bool = True, context: bool = True):
        if num_samples < 1:
            raise ValueError(f"dashboard.num_samples must be positive, got {num_samples}")
        if noise_levels < 2:
            raise ValueError(f"dashboard.noise_levels must be at least 2, got {noise_levels}")
        steps = [4, 8, 16] if steps is None else list(steps)
        if not steps or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps):
            raise ValueError(f"dashboard.steps must be positive step counts, got {steps}")
        self.figures, self.num_samples, self.steps = figures, num_samples, sorted(set(steps))
        self.methods, self.noise_levels = None if methods is None else list(methods), noise_levels
        self.log_hparams, self.embeddings, self.context = hparams, embeddings, context
        self._batch: torch.Tensor | None = None
        self._log_prior: torch.Tensor | None = None  # the training unigram, read once
        self._diagnostics: dict | None = None  # the last validation's context diagnostics
        self._bigrams: torch.Tensor | None = None

    # ---------------------------------------------------------------- hooks
    @staticmethod
    def _writers(trainer) -> list[TensorBoardLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.log_hparams:
            for logger in self._writers(trainer):
                drop_hp_metric_placeholder(logger)  # on_train_end logs the real metrics
        kind = model_kind(pl_module)
        if self.figures and kind in _DEFAULT_METHODS:
            self._check_methods(pl_module, kind)

    def _check_methods(self, model, kind: str) -> None:
        """A sampler the figure cannot run is a one-line error at the start, not at the first validation."""
        for method in self.methods or ():
            if method == "default":
                continue
            if kind == "continuous":
                model.sampler.replace(method=method)  # raises naming the method
            else:
                from cdlm.sampling.settings import MaskedSamplerConfig

                MaskedSamplerConfig(method=method)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and self._batch is None and self.figures:
            self._batch = batch[0][:32].detach().clone()  # the same texts at every validation

    def on_validation_end(self, trainer, pl_module) -> None:
        writers = self._writers(trainer)
        kind = model_kind(pl_module)
        if not (self.figures and writers and trainer.is_global_zero) or trainer.sanity_checking or kind is None:
            return
        try:
            from matplotlib.figure import Figure  # noqa: F401
        except ImportError:
            rank_zero_warn("matplotlib is not installed: no figures in TensorBoard (pip install matplotlib)")
            self.figures = False
            return
        start = time.perf_counter()
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=_cuda_devices(pl_module)):
                images = self.draw(trainer, pl_module, kind)
        finally:
            pl_module.train(was_training)
        for writer in writers:
            for tag, image in images.items():
                writer.experiment.add_image(tag, image, trainer.global_step, dataformats="HWC")
            writer.experiment.add_scalar("val/dashboard_seconds", time.perf_counter() - start, trainer.global_step)
            if self._diagnostics is not None:
                for key in ("context_bits", "order_bits"):
                    writer.experiment.add_scalar(f"val/{key}", self._diagnostics[key], trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        for writer in self._writers(trainer):
            if self.embeddings and model_kind(pl_module) is not None:
                matrix, labels = token_embeddings(pl_module)
                writer.experiment.add_embedding(matrix, metadata=labels, tag="token_embeddings",
                                                global_step=trainer.global_step)
            if self.log_hparams:
                writer.log_hyperparams(run_hparams(trainer, pl_module), final_metrics(trainer), step=trainer.global_step)
            writer.experiment.flush()

    # ---------------------------------------------------------------- figures
    def draw(self, trainer, model, kind: str) -> dict:
        """{tag: HWC uint8 image} of the figures for `model` (a "continuous", "masked" or
        "autoregressive" model); the autoregressive one has none."""
        images = {}
        if self.context and self._batch is not None and trainer.datamodule is not None:
            images["figures/context"] = self.context_figure(trainer, model)
        if kind not in _DEFAULT_METHODS:
            return images
        if self._batch is not None:
            images["figures/loss_vs_noise"] = self.loss_vs_noise(model, kind, self._batch.to(model.device))
        images["figures/quality_vs_nfe"] = self.quality_vs_nfe(trainer, model, kind)
        images["figures/denoising"] = self.denoising(model, kind)
        return images

    def loss_vs_noise(self, model, kind: str, ids: torch.Tensor):
        fig, ax = _figure(6.4, 4.0)
        torch.manual_seed(0)  # the same noise at every validation: curves comparable across steps
        curve = model.loss_by_noise_level(ids, self.noise_levels)
        ax.plot(curve.levels, curve.loss, "o-", ms=3, label="validation (fixed times)" if kind == "continuous" else "validation")
        warp = model.time_warp if kind == "continuous" else None
        if warp is not None and bool(warp.seen.any()):
            sde = model.sde
            centres = (torch.arange(warp.bins, dtype=torch.float64) + 0.5) / warp.bins
            seen = warp.seen.cpu()
            x = sde.log_snr(centres)[seen].tolist()
            ax.plot(x, warp.curve.cpu()[seen].tolist(), "-", lw=1.5, alpha=0.8, label="training (warp's running curve)")
            share = ax.twinx()
            share.fill_between(sde.log_snr(centres).tolist(), warp.probabilities().cpu().tolist(), step="mid",
                               alpha=0.15, color="grey")
            share.set_ylabel("share of training times (warped)", color="grey")
            share.set_ylim(bottom=0)
        ax.set_xlabel(curve.level_label)
        ax.set_ylabel(curve.loss_label)
        ax.set_title("loss against noise level")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
        return _render(fig)

    def context_figure(self, trainer, model):
        """Cross-entropy with the context in order, shuffled, and of the context-free reference."""
        from cdlm.diagnostics import diagnose, unigram_log_prior

        if self._log_prior is None:
            self._log_prior = unigram_log_prior(training_ids(trainer.datamodule), model.tokenizer.get_vocab_size())
        d = self._diagnostics = diagnose(model, self._batch, self._log_prior, num_times=8)
        fig, ax = _figure(6.4, 4.0)
        rows = d["rows"]
        if d["kind"] == "continuous":
            x = [r["log_snr"] for r in rows]
            curves = {"in order": "model_bits", "shuffled": "shuffled_bits", "per-token posterior (no context)": "posterior_bits",
                      "clean neighbours": "clean_neighbours_bits", "clean neighbours, shuffled": "clean_shuffled_bits"}
            ax.set_xlabel("log-SNR  (noisier ←)")
        elif d["kind"] == "masked":
            x = [r["mask_rate"] for r in rows]
            curves = {"in order": "model_bits", "shuffled": "shuffled_bits", "unigram (no context)": "unigram_bits"}
            ax.set_xlabel("mask rate")
        else:
            x = [0, 1, 2]
            ax.bar(x, [rows[0]["model_bits"], rows[0]["shuffled_bits"], rows[0]["unigram_bits"]], color=["C0", "C1", "C2"])
            ax.set_xticks(x, ["in order", "shuffled", "unigram (no context)"])
            curves = {}
        for label, key in curves.items():
            ax.plot(x, [r[key] for r in rows], "o-" if "clean" not in label else "s--", ms=3, label=label)
        ax.set_ylabel("cross-entropy, bits/token")
        ax.set_title(f"context: {d['context_bits']:.2f} bits/token gained, {d['order_bits']:.2f} lost when shuffled", fontsize=9)
        if curves:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return _render(fig)

    def _quality(self, trainer, model, ids: torch.Tensor) -> tuple[float, str]:
        data = trainer.datamodule
        if isinstance(data, TextDataModule) and data.is_embedded:
            from cdlm.data import corpus

            return corpus.validity(model.decode(ids)), "validity (embedded corpus)"
        return self._bigram_precision(data, model, ids), "share of sample bigrams seen in training"

    def _bigram_precision(self, data, model, ids: torch.Tensor) -> float:
        V = model.tokenizer.get_vocab_size()
        if self._bigrams is None:
            self._bigrams = _bigrams(training_ids(data), V, model.pad_id)
        grams = _bigrams([ids.cpu()], V, model.pad_id, unique=False)
        return float(torch.isin(grams, self._bigrams).float().mean()) if len(grams) else 0.0

    def quality_vs_nfe(self, trainer, model, kind: str):
        fig, ax = _figure(6.4, 4.0)
        ylabel = "quality"
        methods = list(self.methods or _DEFAULT_METHODS[kind])
        s = model.sampler
        if "default" in methods and kind == "continuous" and not s.restarts and s.method in methods:
            methods.remove("default")  # the same curve as its method's
        for method in methods:
            points = []
            for steps in self.steps:
                if kind == "continuous":
                    settings = {"steps": steps} if method == "default" else {"method": method, "steps": steps, "restarts": 0}
                else:
                    settings = {"steps": steps} if method == "default" else {"method": method, "steps": steps}
                try:
                    gen = model.sample_ids(self.num_samples, seed=0, **settings)
                except ValueError:  # e.g. fewer steps than semi_ar has blocks: no point there
                    continue
                quality, ylabel = self._quality(trainer, model, gen.ids)
                points.append((gen.nfe, quality))
            if points:
                label = method
                if method == "default":
                    label = f"default ({s.method}" + (f", +{s.restarts} restarts)" if kind == "continuous" and s.restarts else ")")
                ax.plot(*zip(*points), "o-", ms=4, label=label)
        ax.set_xlabel("network calls per sample (NFE)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"sample quality against NFE ({self.num_samples} samples a point)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return _render(fig)

    def denoising(self, model, kind: str):
        states, final = denoising_trajectory(model, kind)
        text = (final != model.pad_id).nonzero()
        last = int(text[-1]) if len(text) else -1  # the text and the pad after it, at least 8 rows
        rows = min(len(final), max(last + 2, 8), 64)
        final = final[:rows]
        states = states[:, :rows]  # [calls, rows]
        agree = (states == final[None]).T.float()  # [rows, calls]
        image = agree.clone()
        if kind == "masked":
            image[(states == model.mask_id).T] = -1.0
        settle = _settle_calls(agree)
        from matplotlib.colors import ListedColormap

        fig, ax = _figure(min(max(6.4, 3.0 + 0.12 * states.shape[0]), 14.0), 1.4 + 0.17 * rows)
        cmap = ListedColormap(["#d9d9d9", "#f4f4f4", "#2b8cbe"]) if kind == "masked" else ListedColormap(["#fdd49e", "#2b8cbe"])
        ax.imshow(image.numpy(), aspect="auto", interpolation="nearest", cmap=cmap,
                  vmin=-1.0 if kind == "masked" else 0.0, vmax=1.0,
                  extent=(0.5, states.shape[0] + 0.5, rows - 0.5, -0.5))
        ax.plot([s + 1 for s in settle], range(rows), "k|", ms=6)
        ax.set_yticks(range(rows))
        ax.set_yticklabels([f"{p}: {token_label(model.tokenizer, i)}" for p, i in enumerate(final.tolist())], fontsize=7)
        ax.set_xlabel("network call")
        what = "grey: masked, blue: unmasked" if kind == "masked" else "blue: the call predicts the final token"
        ax.set_title(f"one sample being denoised ({what}; | where it settles)", fontsize=9)
        return _render(fig)


# ------------------------------------------------------------------ pieces, usable on their own
def denoising_trajectory(model, kind: str, seed: int = 0, candidates: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(state [calls, L] after each network call, final ids [L]) of one sample drawn with the
    model's default sampler (the longest of `candidates` drawn together): the continuous model's
    argmax prediction at each call, or the masked model's partly unmasked input to each call
    (the last row: the final sample). A forward hook on the sampling network records them; the
    sampler itself is not changed."""
    net = model.net if model.kind == "autoregressive" else model.ema
    states = []

    def record(module, args, output):
        rows = output[0][:candidates].argmax(-1) if kind == "continuous" else args[0][:candidates]
        states.append(rows.detach().cpu())

    handle = net.register_forward_hook(record)
    try:
        gen = model.sample_ids(candidates, seed=seed)
    finally:
        handle.remove()
    ids = gen.ids.cpu()
    pick = int((ids != model.pad_id).sum(1).argmax())
    if kind == "masked":
        states.append(ids)
    return torch.stack([state[pick] for state in states]), ids[pick]


def _settle_calls(agree: torch.Tensor) -> list[int]:
    """Per row of `agree` [rows, calls]: the first call from which it agrees to the end."""
    out = []
    for row in agree.bool():
        wrong = (~row).nonzero()
        out.append(int(wrong[-1]) + 1 if len(wrong) else 0)
    return out


def token_embeddings(model) -> tuple[torch.Tensor, list[str]]:
    """The embedding matrix the model samples with (EMA weights where it has them) [V, d] and a
    label per row."""
    net = model.net if model.kind == "autoregressive" else model.ema
    emb = net.embedding
    matrix = emb.table() if model.kind == "continuous" else emb.weight
    matrix = matrix.detach().float().cpu()
    return matrix, [token_label(model.tokenizer, i) for i in range(matrix.shape[0])]


def run_hparams(trainer, model) -> dict:
    """The model's and the data's hyperparameters, as the HParams tab shows them."""
    params = {"model/class": type(model).__name__}
    for key, value in flat_hparams(dict(model.hparams)).items():  # a group's fields: model/optim.lr
        if key.startswith("_"):  # LightningCLI's own bookkeeping (_class_path, _instantiator)
            continue
        if key in _LONG_HPARAMS:
            if isinstance(value, (list, tuple)):
                params[f"model/{key}"] = len(value)
            continue
        params[f"model/{key}"] = value
    data = trainer.datamodule
    for key, value in (dict(data.hparams) if isinstance(data, LightningDataModule) else {}).items():
        if not key.startswith("_"):
            params[f"data/{key}"] = value
    params["trainer/max_steps"] = trainer.max_steps
    return params


def final_metrics(trainer) -> dict[str, float]:
    """The last value of every validation and training metric, as `final/...` (its own tags, so
    the HParams tab reads one value per run)."""
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.startswith(("val/", "train/")) and "seconds" not in key:
            value = float(value)
            if math.isfinite(value):
                out[f"final/{key}"] = value
    out["final/steps"] = float(trainer.global_step)
    return out


def _bigrams(chunks: list[torch.Tensor], vocab: int, pad_id: int, unique: bool = True) -> torch.Tensor:
    """Token bigrams a·V + b of id rows (no pad in either place), sorted and unique unless not."""
    out = []
    for ids in chunks:
        a, b = ids[:, :-1].long(), ids[:, 1:].long()
        keep = (a != pad_id) & (b != pad_id)
        out.append((a * vocab + b)[keep])
    grams = torch.cat(out) if out else torch.empty(0, dtype=torch.long)
    return torch.unique(grams) if unique else grams


def _cuda_devices(model) -> list[int]:
    return [model.device.index or 0] if model.device.type == "cuda" else []


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def _render(fig):
    """The figure as an HWC uint8 array (Agg, no pyplot: the caller's backend is left alone)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
