"""The models' hyperparameter groups, each declared once: how every model is optimised
(`OptimConfig`), how the diffusion models learn attribute conditions (`ConditioningConfig`), and
how the continuous and masked models are trained (`DiffusionTraining`, `MaskedTraining`); the
networks are `cdlm.networks.NetworkConfig`. A group is one constructor parameter
(`DiffusionLM(optim=OptimConfig(lr=3e-3))`, `--model.optim.lr 3e-3`, YAML `optim: {lr: 3e-3}`)
and is stored in checkpoints as plain values."""

from __future__ import annotations

from dataclasses import dataclass

import solvers
from cdlm.models import absorbing
from cdlm.settings import Settings, count, fold_flat_names, number, setting

OPTIMIZERS = ("adamw", "muon")
# the continuous model's noise schedules are solvers' VP SDEs, under solvers' names
SCHEDULES = ("loglinear", "vp", "cosine", "sqrt")
# the names they had before (configs, flags and checkpoints written with them still load)
SCHEDULE_ALIASES = {"log_linear": "loglinear", "linear": "vp"}
TIME_SAMPLINGS = ("stratified", "uniform", "warped", "logit_normal")
MASKED_OBJECTIVES = ("mdlm", "llada")


def schedule_name(schedule: str) -> str:
    """The canonical name of a continuous noise schedule (old names accepted)."""
    name = SCHEDULE_ALIASES.get(schedule, schedule)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    return name


def make_sde(schedule: str, log_snr_min: float, log_snr_max: float, noise_scale: float = 1.0) -> solvers.SDE:
    """The training SDE of a continuous model. `loglinear` spends time uniformly over the
    informative log-SNR window [log_snr_min, log_snr_max] (the other schedules have fixed ends);
    `noise_scale` k != 1 lowers every log-SNR by 2 log k (`solvers.NoiseScaledVPSDE`)."""
    name = schedule_name(schedule)
    window = {"log_snr_min": log_snr_min, "log_snr_max": log_snr_max} if name == "loglinear" else {}
    return solvers.sde_from_name(name, noise_scale=noise_scale, **window)


def _probability(v) -> bool:
    return number(v) and 0.0 <= v <= 1.0


def _choice(config: Settings, name: str, valid: tuple[str, ...], label: str | None = None) -> None:
    if getattr(config, name) not in valid:
        raise ValueError(f"unknown {label or name} {getattr(config, name)!r}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class OptimConfig(Settings):
    """How a model is optimised: AdamW (or Muon for the blocks' matrices) with linear warm-up,
    then cosine decay over the run, by max_steps or max_time (`cdlm.models.base`)."""

    what = "optimizer setting"

    name: str = setting("adamw", "adamw, or muon: torch.optim.Muon (lr matched to AdamW's RMS) for the 2-D weight "
                                 "matrices of the transformer blocks, AdamW for the rest")
    lr: float = setting(2e-3, "peak learning rate")
    weight_decay: float = setting(0.0, "decoupled weight decay")
    warmup_steps: int = setting(200, "steps of linear warm-up")
    min_lr_ratio: float = setting(0.05, "the learning rate at the end of the cosine decay, as a fraction of lr")

    def __post_init__(self):
        _choice(self, "name", OPTIMIZERS, "optimizer")
        self._check({
            "lr": (lambda v: number(v) and v > 0, "a finite number > 0"),
            "weight_decay": (lambda v: number(v) and v >= 0, "a finite number >= 0"),
            "warmup_steps": (lambda v: count(v, 0), "a non-negative integer"),
            "min_lr_ratio": (_probability, "a fraction in [0, 1]"),
        })


@dataclass(frozen=True)
class ConditioningConfig(Settings):
    """How a diffusion model trained on attributes (`--data.condition_column`) learns them, and the
    classifier-free guidance it samples with by default."""

    what = "conditioning setting"

    condition_dropout: float = setting(0.1, "probability that a training example's attributes are all dropped "
                                            "(the unconditional model guidance needs)")
    attribute_dropout: float = setting(0.3, "probability that each attribute is dropped on its own, so that any "
                                            "subset is a condition the model knows")
    guidance_scale: float = setting(1.0, "classifier-free guidance s: log p_u + s (log p_c - log p_u); 1 is the plain "
                                         "conditional model, 0 unconditional")

    def __post_init__(self):
        self._check({
            "condition_dropout": (_probability, "a probability in [0, 1]"),
            "attribute_dropout": (_probability, "a probability in [0, 1]"),
            "guidance_scale": (number, "a finite number"),
        })


@dataclass(frozen=True)
class DiffusionTraining(Settings):
    """How the continuous model is trained: its noise schedule (the samplers' SDE too), when in
    the schedule training looks, which tokens it sees clean, and what it is scored on."""

    what = "training setting"

    schedule: str = setting("loglinear", "noise schedule (solvers' SDE names): loglinear (log-SNR linear in t from "
                                         "log_snr_max to log_snr_min), vp (Song et al.'s linear beta), cosine, or sqrt "
                                         "(Diffusion-LM); the old names log_linear and linear are accepted")
    log_snr_min: float = setting(-6.0, "log-SNR at t = 1 (loglinear)")
    log_snr_max: float = setting(2.0, "log-SNR at t = 0 (loglinear)")
    noise_scale: float = setting(1.0, "ELF's noise scale k: every log-SNR lowered by 2 log k (1: off)")
    time_sampling: str = setting("stratified", "training times: stratified, uniform, warped (CDCD: by the running "
                                               "loss curve, LangFlow's information-uniform proposal), or "
                                               "logit_normal (ELF)")
    time_mean: float = setting(0.0, "the logit-normal's location (time_sampling=logit_normal)")
    time_std: float = setting(1.0, "the logit-normal's scale (time_sampling=logit_normal)")
    self_condition: float = setting(0.5, "probability of self-conditioning a training batch (0: the network has no "
                                         "self-conditioning input)")
    mse_weight: float = setting(0.0, "weight of the x0 regression term beside the cross-entropy")
    clean_context: float = setting(0.0, "probability that a batch gives a random subset of its tokens clean "
                                        "(teaches generation around known tokens)")
    clean_padding: float = setting(0.0, "probability that a batch gives its padding clean (text given its length)")
    hybrid_corruption: float = setting(0.0, "probability that a sequence is corrupted CANDI-style: a random fraction "
                                            "of its tokens clean, the others noised each at its own time")
    output_prior_ramp_steps: int = setting(0, "steps over which the output prior's weight rises from 0 (0: full "
                                              "from the start)")
    learn_embeddings: bool = setting(True, "train the embeddings jointly (false keeps the random initial ones)")
    embedding_lr: float | None = setting(None, "learning rate of the embeddings (none: the optimizer's lr)")

    def __post_init__(self):
        object.__setattr__(self, "schedule", schedule_name(self.schedule))  # frozen: stored under its canonical name
        _choice(self, "time_sampling", TIME_SAMPLINGS)
        self._check({
            "log_snr_min": (number, "a finite number"),
            "log_snr_max": (number, "a finite number"),
            "noise_scale": (lambda v: number(v) and v > 0, "a finite number > 0"),
            "time_mean": (number, "a finite number"),
            "time_std": (lambda v: number(v) and v > 0, "a finite number > 0"),
            "self_condition": (_probability, "a probability in [0, 1]"),
            "mse_weight": (lambda v: number(v) and v >= 0, "a finite number >= 0"),
            "clean_context": (_probability, "a probability in [0, 1]"),
            "clean_padding": (_probability, "a probability in [0, 1]"),
            "hybrid_corruption": (_probability, "a probability in [0, 1]"),
            "output_prior_ramp_steps": (lambda v: count(v, 0), "a non-negative integer"),
            "learn_embeddings": (lambda v: isinstance(v, bool), "true or false"),
            "embedding_lr": (lambda v: number(v) and v > 0, "a finite number > 0"),
        })
        if self.log_snr_min >= self.log_snr_max:
            raise ValueError(f"log_snr_min ({self.log_snr_min}) must be below log_snr_max ({self.log_snr_max})")


@dataclass(frozen=True)
class MaskedTraining(Settings):
    """How the masked model is trained: its absorbing process and the NELBO estimator."""

    what = "training setting"

    schedule: str = setting("mask_linear", "α_t, the probability a token is unmasked at time t "
                                           "(`cdlm.models.absorbing`): mask_linear (1 - t) or mask_cosine (cos(πt/2)); "
                                           "the old names log_linear and cosine are accepted")
    objective: str = setting("mdlm", "mdlm: stratified t ~ U(ε, 1), masked cross-entropies weighted by "
                                     "-α'_t / (1 - α_t); llada: a masking ratio t ~ U(ε, 1) per sequence, "
                                     "cross-entropies divided by t")

    def __post_init__(self):
        object.__setattr__(self, "schedule", absorbing.schedule_name(self.schedule))  # stored under its canonical name
        _choice(self, "objective", MASKED_OBJECTIVES)


# hyperparameters renamed since checkpoints were written with them: old name → new name
RENAMED = {"attributes": "attribute_names"}


def rename_old_hparams(hparams: dict) -> dict:
    """A checkpoint's hyperparameters under their current names (`RENAMED`)."""
    return {RENAMED.get(k, k): v for k, v in hparams.items()}


def upgrade_flat_hparams(hparams: dict, groups: dict[str, type[Settings]]) -> dict:
    """A checkpoint's hyperparameters with the flat names it had before `groups` ({group: its
    settings class}) existed folded into those groups (the optimizer's name was `optimizer`),
    and renamed ones under their new names."""
    def flat_names(group: str, config: type[Settings]) -> dict[str, str]:
        if group == "optim":
            return {"optimizer": "name", **{n: n for n in config.names() if n != "name"}}
        return {n: n for n in config.names()}

    return fold_flat_names(rename_old_hparams(hparams), {group: flat_names(group, config) for group, config in groups.items()})
