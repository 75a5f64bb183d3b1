"""LanguageModel: what the diffusion and autoregressive models share — the tokenizer carried in
their hyperparameters, AdamW (or Muon for the block matrices) with warm-up and cosine decay over
the run, decoding, and text samples (with validity on the embedded corpus) logged at every
validation."""

from __future__ import annotations

import abc
import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_warn

from cdlm import hub
from cdlm.checkpoints import check_state_dict, load_checkpoint
from cdlm.control.attributes import AttributeVocab, parse_attributes
from cdlm.control.request import Request
from cdlm.data import corpus
from cdlm.data.module import TextDataModule
from cdlm.data.tokenizer import PAD, decode, load_tokenizer
from cdlm.models.config import ConditioningConfig, OptimConfig, upgrade_flat_hparams
from cdlm.registry import MODEL_KEY
from cdlm.sampling.base import Generation


def flat_hparams(hparams: dict) -> dict:
    """Hyperparameters with each group's fields under "group.field", for comparing and reporting."""
    out = {}
    for key, value in hparams.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def training_progress(trainer) -> float:
    """Fraction of the run done, by steps or by wall time (max_time), whichever is further."""
    fractions = []
    if trainer.max_steps and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and callback.time_remaining("train") is not None:
            elapsed = callback.time_elapsed("train")
            fractions.append(elapsed / max(elapsed + callback.time_remaining("train"), 1e-9))
    return min(1.0, max(fractions)) if fractions else 0.0


def muon_parameters(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What `optim.name="muon"` gives Muon: the 2-D weight matrices inside the transformer blocks
    (attention, MLP, adaLN modulation). Embeddings, positions, heads, the input and time layers,
    norms and biases stay with AdamW: Muon orthogonalises hidden-to-hidden updates only."""
    return [p for n, p in net.named_parameters() if n.startswith("backbone.blocks.") and p.ndim == 2]


class _States(Mapping):
    """The per-parameter states of several optimizers, read as one (a ChainMap would add empty
    entries to the first one's defaultdict on every lookup of the others' parameters)."""

    def __init__(self, *states: dict):
        self.states = states

    def __getitem__(self, param):
        for state in self.states:
            if param in state:
                return state[param]
        raise KeyError(param)

    def __iter__(self):
        return (param for state in self.states for param in state)

    def __len__(self) -> int:
        return sum(len(state) for state in self.states)


class MuonAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on some parameter groups and AdamW on the others, as the one optimizer
    Lightning's automatic optimisation takes. `param_groups` are the two optimizers' own group
    dicts, so a learning-rate schedule over them drives both; Muon's lr is matched to AdamW's
    update RMS (adjust_lr_fn="match_rms_adamw": 0.2·√max(A, B)·lr), so one lr serves both."""

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], lr: float, weight_decay: float,
                 betas: tuple[float, float]):
        self.muon = torch.optim.Muon(muon_groups, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, weight_decay=weight_decay, betas=betas)
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})
        self._link()

    def _link(self) -> None:
        # the inner optimizers own groups and state (loading a state dict replaces them): share them
        self.param_groups[:] = self.muon.param_groups + self.adamw.param_groups
        self.state = _States(self.muon.state, self.adamw.state)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError("not a Muon+AdamW optimizer state (the checkpoint was trained with another optimizer)")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self._link()


class StepModule(L.LightningModule):
    """What every cdlm Lightning module shares: each step is `_loss(batch, stage)`, validation and
    test draw fixed randomness per batch index (losses comparable across validations),
    checkpoints record their model's registry name (`cdlm.checkpoints`), and a resumed run
    checks the checkpoint against the model it was built as, then applies changed settings."""

    GROUPS: dict = {}  # {name: settings class} of the hyperparameter groups the constructor takes

    @classmethod
    def upgrade_hparams(cls, hparams: dict) -> dict:
        """A checkpoint's hyperparameters from before the groups, with the flat names folded in."""
        return upgrade_flat_hparams(hparams, cls.GROUPS)

    @classmethod
    def arguments_from_checkpoints(cls, arguments: dict) -> tuple[dict, Callable | None]:
        """For `cdlm fit`: the constructor arguments this model takes from another model's
        checkpoint that `arguments` (the command line's) name, read before it is built (a
        constructor reads no file), and what to do with the built model (start it from the
        other's weights); ({}, None) for a model built from its arguments alone."""
        return {}, None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[MODEL_KEY] = type(self).__name__

    kind: str = ""  # "continuous", "masked" or "autoregressive" (LanguageModel's subclasses), or "classifier"
    # where the model came from, when it was loaded (`cdlm.checkpoints`): written into model folders
    data_hparams: dict | None = None
    training_steps: int | None = None

    @classmethod
    def from_pretrained(cls, path_or_id: str, revision: str | None = None, cache_dir: str | None = None,
                        device: str | torch.device = "cpu"):
        """The model in a model folder (`save_pretrained`, `cdlm export`) or at a hub id ("user/name",
        at `revision`, through the hub's cache); safetensors, no pickle."""
        return hub.load(path_or_id, device, revision, cache_dir, expect=cls)

    def save_pretrained(self, folder: str, metrics: dict | None = None, overwrite: bool = True):
        """Write this model as a model folder: weights, config, tokenizer and model card (`cdlm.hub`)."""
        return hub.save_pretrained(self, folder, metrics=metrics, overwrite=overwrite)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    revision: str | None = None, commit_message: str | None = None, metrics: dict | None = None):
        """Upload this model as a model folder to the hub repository `repo_id` (`cdlm.hub.push_to_hub`)."""
        return hub.push_to_hub(self, repo_id, private, token, revision, commit_message, metrics)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only=None, **overrides):
        """Lightning's loader calls the `_instantiator` a checkpoint names; this one reads the file
        as data and builds the model from cdlm's registry (`cdlm.checkpoints.load_checkpoint`)."""
        if hparams_file is not None or strict is False:
            raise ValueError("cdlm checkpoints carry their hyperparameters and load strictly")
        return load_checkpoint(str(checkpoint_path), "cpu" if map_location is None else map_location, cls, **overrides)[0]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if not k.startswith("_")}
        saved, mine = flat_hparams(self.upgrade_hparams(saved)), flat_hparams(dict(self.hparams))
        if "tokenizer_json" in saved and mine.get("tokenizer_json") is not None and saved["tokenizer_json"] != mine["tokenizer_json"] \
                and load_tokenizer(saved["tokenizer_json"]).get_vocab() != load_tokenizer(mine["tokenizer_json"]).get_vocab():
            raise ValueError("the data's tokenizer differs from the checkpoint's: every token id would change meaning; "
                             "resume on the data the run was trained on, or start a new run")
        changed = {k: (saved[k], mine[k]) for k in saved.keys() & mine.keys()
                   if saved[k] != mine[k] and k not in ("tokenizer_json", "length_counts")}
        try:
            check_state_dict(self.state_dict(), checkpoint.get("state_dict") or {}, "the resumed checkpoint")
        except ValueError as err:
            diff = ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in sorted(changed.items()))
            raise ValueError(f"cannot resume: {err}" + (f"; changed: {diff}" if diff else "")) from None
        before, now = saved.get("optim.name", "adamw"), mine.get("optim.name", "adamw")
        if before != now:  # the optimizer state is the checkpoint's optimizer's (the classifier: always AdamW)
            raise ValueError(f"cannot resume: the run was trained with optimizer {before!r}, whose state "
                             f"{now!r} cannot take; start a new run or keep --model.optim.name={before}")
        self._resume_changes = changed

    def on_train_start(self) -> None:
        changed = self.__dict__.pop("_resume_changes", None)
        if not changed:
            return
        # The optimizer and schedule states were restored with the checkpoint's settings: rebuild
        # what the new ones ask for and move them over, keeping the moments and the step count.
        fresh = self.configure_optimizers()
        fresh_opt, fresh_sched = fresh["optimizer"], fresh["lr_scheduler"]["scheduler"]
        opt, sched = self.trainer.optimizers[0], self.trainer.lr_scheduler_configs[0].scheduler
        for group, new in zip(opt.param_groups, fresh_opt.param_groups):
            for key in ("initial_lr", "weight_decay", "betas"):
                if key in new:
                    group[key] = new[key]
        sched.base_lrs = list(fresh_sched.base_lrs)
        for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(sched.last_epoch)
        diff = ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in sorted(changed.items()))
        rank_zero_warn(f"resumed with changed hyperparameters, now in force: {diff}")

    def training_step(self, batch, batch_idx):
        return self._loss(batch, "train")

    def validation_step(self, batch, batch_idx):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_idx)
            return self._loss(batch, "val")

    def test_step(self, batch, batch_idx):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_idx)
            return self._loss(batch, "test")


@dataclass
class NoiseCurve:
    """A model's loss on some texts at noise levels: what `level` means (its axis label) and what
    the loss is per (its label)."""

    levels: list[float]
    loss: list[float]
    level_label: str
    loss_label: str


class LanguageModel(StepModule, abc.ABC):
    """What the CLI, `evaluate`, the dashboard, the progress bar and the lab may ask of a language
    model, declared once: they ask, they never probe. Subclasses build `self.net`, implement
    `_loss(batch, stage)` and the abstract methods below, and declare `kind` and `left_to_right`."""

    left_to_right = False  # True: control beyond a prefix goes through rejection sampling

    @abc.abstractmethod
    def sample_ids(self, num_samples: int = 16, seed: int | None = None, request: Request | None = None,
                   batch_size: int = 256, **options) -> Generation:
        """Token ids [N, L] for a `request` (`cdlm.control.request.Request`), with the NFE."""

    @abc.abstractmethod
    def sequence_nll(self, ids: torch.Tensor) -> torch.Tensor:
        """-log p(ids) in nats per sequence [B]: exact, or an upper bound (the diffusion models)."""

    @abc.abstractmethod
    def sampler_report(self, **settings) -> dict:
        """The sampler settings `eval` reports beside its metrics."""

    def expected_calls(self, num_samples: int, batch_size: int, settings: dict | None = None,
                       prefix: str | None = None) -> int | None:
        """Network calls that `sample_ids(num_samples, batch_size=..., prefix=prefix, **settings)`
        makes at most (it samples in chunks of `batch_size`), or None when that is not known in
        advance (an adaptive solver)."""
        per_chunk = self.calls_per_chunk(settings or {}, prefix)
        return None if per_chunk is None else math.ceil(num_samples / max(batch_size, 1)) * per_chunk

    @abc.abstractmethod
    def calls_per_chunk(self, settings: dict, prefix: str | None) -> int | None:
        """Network calls of one chunk of `sample_ids(..., prefix=prefix, **settings)` at most, or None
        when unknown in advance."""

    def nll_calls(self, batches: int, num_times: int = 16) -> int:
        """Network calls of `sequence_nll` over `batches` batches (`num_times` noise levels each)."""
        return batches * num_times

    def networks(self) -> list[torch.nn.Module]:
        """The networks whose forward calls are this model's network calls (sampling, scoring)."""
        return [self.net]

    def loss_by_noise_level(self, ids: torch.Tensor, num_levels: int) -> NoiseCurve | None:
        """The training loss on `ids` [B, L] at `num_levels` noise levels, from little noise to all;
        None for a model without noise (the autoregressive one)."""
        return None

    GROUPS = {"optim": OptimConfig}

    def __init__(self, tokenizer_json: str | None, attribute_names: list[str] | None = None,
                 optim: OptimConfig | None = None):
        super().__init__()
        self.optim = OptimConfig.of(optim)
        if tokenizer_json is None:
            raise ValueError(f"{type(self).__name__} needs a tokenizer (JSON string); the CLI takes it from the data module")
        self.tokenizer = load_tokenizer(tokenizer_json)
        self.pad_id = self.tokenizer.token_to_id(PAD)
        self.attribute_vocab = AttributeVocab(attribute_names) if attribute_names else None

    def store_groups(self, **groups) -> None:
        """After `save_hyperparameters`: the optimizer's group and `groups` as plain values, so that
        checkpoints load with weights_only (`self.optim` and the like are the validated objects)."""
        for name, config in {"optim": self.optim, **groups}.items():
            self.hparams[name] = config.as_dict()

    # the networks that `--model.compile` compiles when assigned (EMA included)
    COMPILED_NETWORKS = ("net", "ema")

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        # `compile` (a hyperparameter a subclass declares and saves): torch.compile each network as
        # it is assigned, in place (nn.Module.compile), for training and sampling alike. The module
        # itself stays the same object, so state_dict keys gain no `_orig_mod.` prefix and
        # checkpoints load into compiled and uncompiled models alike; a deepcopy (init_ema) is
        # uncompiled, and is compiled in turn when assigned.
        if name in self.COMPILED_NETWORKS and isinstance(value, torch.nn.Module) and self.compiles:
            value.compile()

    @property
    def compiles(self) -> bool:
        """Whether this model's networks run under torch.compile (`--model.compile`)."""
        return bool(self.hparams.get("compile", False))

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.net.parameters())}]

    def configure_optimizers(self):
        h = self.optim
        opt = self.make_optimizer(h.name)

        def factor(step: int) -> float:
            if step < h.warmup_steps:
                return (step + 1) / h.warmup_steps
            progress = training_progress(self.trainer)
            return h.min_lr_ratio + (1 - h.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def make_optimizer(self, name: str) -> torch.optim.Optimizer:
        """AdamW over `param_groups()`, or ("muon") the same groups split: `muon_parameters` to
        Muon, the rest to AdamW, each keeping its group's settings (e.g. the embedding lr)."""
        h, betas = self.optim, (0.9, 0.99)
        if name == "adamw":
            return torch.optim.AdamW(self.param_groups(), lr=h.lr, weight_decay=h.weight_decay, betas=betas)
        matrices = {id(p) for p in muon_parameters(self.net)}
        muon, adamw = [], []
        for group in self.param_groups():
            for mine, chosen in ((muon, True), (adamw, False)):
                params = [p for p in group["params"] if (id(p) in matrices) == chosen]
                if params:
                    mine.append({**group, "params": params})
        return MuonAdamW(muon, adamw, lr=h.lr, weight_decay=h.weight_decay, betas=betas)

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [decode(self.tokenizer, row.tolist()) for row in ids]

    def generate(self, num_samples: int = 16, **options) -> list[str]:
        """Sample `num_samples` texts; options as in `sample_ids`."""
        return self.decode(self.sample_ids(num_samples, **options).ids)

    def on_validation_epoch_end(self):
        n = self.hparams.val_samples
        if n <= 0 or self.trainer.sanity_checking:
            return
        start = time.perf_counter()
        texts = self.generate(n, seed=0)
        self.log("val/sample_seconds", time.perf_counter() - start, sync_dist=True)
        data = self.trainer.datamodule
        if isinstance(data, TextDataModule) and data.is_embedded:
            self.log("val/validity", corpus.validity(texts), prog_bar=True, sync_dist=True)
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            body = "\n\n".join(f"    {t}" for t in texts[:16])  # indented: a Markdown code block
            experiment.add_text("samples", body, self.global_step)


class DiffusionBase(LanguageModel):
    """What the two diffusion models share beyond LanguageModel: EMA weights of `self.net` for
    sampling, the training texts' length distribution (`length="data"`), and attribute
    conditions (requests, their encoding, and the dropout that trains the unconditional model
    classifier-free guidance needs). Subclasses build `self.net`, then call `init_ema()`, and
    declare the hyperparameters used here: ema_decay, length_counts, conditioning."""

    GROUPS = {"optim": OptimConfig, "conditioning": ConditioningConfig}

    def __init__(self, tokenizer_json: str | None, attribute_names: list[str] | None = None,
                 optim: OptimConfig | None = None, conditioning: ConditioningConfig | None = None):
        super().__init__(tokenizer_json, attribute_names, optim)
        self.conditioning = ConditioningConfig.of(conditioning)

    def init_ema(self) -> None:
        self.ema = copy.deepcopy(self.net).requires_grad_(False)

    def networks(self) -> list[torch.nn.Module]:
        return [self.ema, self.net]  # sampling uses the EMA copy by default

    def optimizer_step(self, *args, **kwargs):
        # EMA follows each optimizer step inside the step itself, so a checkpoint saved at the end
        # of the batch (before the module's own batch-end hook) already holds this step's EMA
        super().optimizer_step(*args, **kwargs)
        self.update_ema(self.global_step + 1)

    @torch.no_grad()
    def update_ema(self, steps_taken: int) -> None:
        """Move the EMA weights towards the network's, with the decay warmed up as (1+n)/(10+n)."""
        decay = min(self.hparams.ema_decay, (1 + steps_taken) / (10 + steps_taken))
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.net.parameters()), 1 - decay)

    def on_fit_start(self):
        # the length counts of the data's spec (`cdlm fit` gives the rest of it to the constructor),
        # unless given (a distilled model's teacher's); saved with the checkpoint's hyperparameters
        data = self.trainer.datamodule
        if self.hparams.length_counts is None and isinstance(data, TextDataModule):
            self.hparams.length_counts = data.spec.length_counts

    def data_lengths(self, num_samples: int, seed: int | None = None) -> torch.Tensor:
        """`num_samples` lengths drawn from the training data's length distribution."""
        counts = self.hparams.length_counts
        if not counts:
            raise ValueError("this checkpoint has no length distribution (trained on packed text, or before it was recorded)")
        g = torch.Generator().manual_seed(seed if seed is not None else 0)
        return torch.multinomial(torch.tensor(counts, dtype=torch.float), num_samples, replacement=True, generator=g)

    @staticmethod
    def attribute_requests(attributes, num_samples: int) -> list[dict[str, str]]:
        """N attribute requests ({key: value}) from one request or a list of N."""
        # a list of mappings or of MR strings is one request per sample; KEY=VALUE strings are one request
        per_sample = isinstance(attributes, (list, tuple)) and any(not isinstance(a, str) or "[" in a for a in attributes)
        requests = [parse_attributes(a) for a in attributes] if per_sample else [parse_attributes(attributes)] * num_samples
        if len(requests) != num_samples:
            raise ValueError(f"{len(requests)} attribute requests for {num_samples} samples")
        return requests

    def attribute_rows(self, attributes, num_samples: int) -> torch.Tensor:
        """Multi-hot rows [N, A] on the model's device for the requested `attributes` (see
        `attribute_requests`): what the network is conditioned on."""
        requests = self.attribute_requests(attributes, num_samples)
        if self.attribute_vocab is None:
            raise ValueError("this model was trained without attributes (fit with --data.condition_column)")
        return self.attribute_vocab.encode(requests).to(self.device)

    def drop_attribute_rows(self, attribute_rows: torch.Tensor) -> torch.Tensor:
        """Training conditions: each attribute of the rows dropped with `attribute_dropout`, all of an
        example's with `condition_dropout` (the unconditional model, for guidance)."""
        h = self.conditioning
        keep = torch.rand(attribute_rows.shape, device=attribute_rows.device) >= h.attribute_dropout
        keep &= torch.rand(attribute_rows.shape[0], 1, device=attribute_rows.device) >= h.condition_dropout
        return attribute_rows * keep
