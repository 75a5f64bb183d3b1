"""DistilledDiffusionLM: a few-step sampler for a trained DiffusionLM by progressive distillation
(Salimans & Ho 2022) of its DDIM sampler, in x0-parameterisation.

    cdlm fit --model cdlm.DistilledDiffusionLM --model.teacher_ckpt runs/quickstart/checkpoints/last.ckpt \\
        --data.dataset embedded --trainer.max_steps 4000 --trainer.val_check_interval 1000
    cdlm eval --ckpt_path STUDENT --length data          # DDIM at distill.final_steps, NFE = steps

Round r trains a student of N = start_steps / 2^r DDIM steps to take, in one step, the two steps
of its teacher (round 0: the teacher checkpoint's EMA network at 2 · start_steps steps; later
rounds: the previous round's EMA student), on the grid `solvers`' ddim samples with, so that
`method=ddim, steps=N` walks exactly the times the student was trained at.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

import solvers
from cdlm.models.config import DiffusionTraining, OptimConfig, rename_old_hparams
from cdlm.models.diffusion import DiffusionLM, check_same_data, read_diffusion_model
from cdlm.registry import register
from cdlm.run_guards import LossGuard
from cdlm.sampling.denoiser import Denoiser, KnownTokens
from cdlm.sampling.plan import Guidance, Plan
from cdlm.sampling.settings import SamplerConfig
from cdlm.settings import Settings, count, number, setting

TEACHER_KEY = "cdlm_distill_teacher"  # the checkpoint entry holding the current round's teacher (resume only)
# what the student sets itself, not the teacher's values
_OWN = ("tokenizer_json", "seq_len", "attribute_names", "length_counts", "val_samples", "compile", "ema_decay", "optim",
        "_instantiator", "_class_path")


def _power_of_two(v) -> bool:
    return count(v, 1) and v & (v - 1) == 0


@dataclass(frozen=True)
class DistillationConfig(Settings):
    """How the student is distilled: the rounds of step halving and the loss."""

    what = "distillation setting"

    start_steps: int = setting(8, "DDIM steps of the first round's student (its teacher takes twice as many); "
                                   "a power of two")
    final_steps: int = setting(1, "DDIM steps of the last round's student, its default sampler; a power of two "
                                  "<= start_steps")
    round_steps: int = setting(1000, "training steps per round; after the last round training goes on at final_steps")
    token_weight: float = setting(1.0, "weight of the cross-entropy of the student's logits on the teacher's tokens "
                                       "at the last step (what rounding 'last' reads)")
    known_lengths: float = setting(0.5, "probability that a batch is distilled at its texts' lengths, padding known as "
                                        "`--length data` samples (otherwise at free length)")

    def __post_init__(self):
        self._check({
            "start_steps": (_power_of_two, "a power of two"),
            "final_steps": (_power_of_two, "a power of two"),
            "round_steps": (lambda v: count(v, 1), "a positive integer"),
            "token_weight": (lambda v: number(v) and v >= 0, "a finite number >= 0"),
            "known_lengths": (lambda v: number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
        })
        if self.final_steps > self.start_steps:
            raise ValueError(f"final_steps={self.final_steps} must divide start_steps={self.start_steps} "
                             "(both powers of two, final_steps <= start_steps)")

    @property
    def rounds(self) -> int:
        return int(math.log2(self.start_steps // self.final_steps)) + 1

    def round_at(self, step: int) -> int:
        """The round training step `step` belongs to (the last one goes on)."""
        return min(step // self.round_steps, self.rounds - 1)

    def steps_at(self, step: int) -> int:
        """The student's number of DDIM steps at training step `step`."""
        return self.start_steps >> self.round_at(step)


def ddim_step(sde, x: torch.Tensor, x0: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """DDIM (eta = 0) from times s to t [B], per sample: x_t = (σ_t/σ_s) x_s + (α_t − (σ_t/σ_s) α_s) x0,
    `solvers.ode.ddim_update` with the coefficients of each sample's own times."""
    ratio = sde.sigma(t) / sde.sigma(s)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return ratio.to(x.dtype).view(shape) * x + (sde.alpha(t) - ratio * sde.alpha(s)).to(x.dtype).view(shape) * x0


def distillation_target(sde, x_t: torch.Tensor, x_next: torch.Tensor, t: torch.Tensor,
                        t_next: torch.Tensor) -> torch.Tensor:
    """The x0 whose single DDIM step from x_t at t lands on x_next at t_next (Salimans & Ho, eq. 8):
    x0* = (x_next − (σ'/σ) x_t) / (α' − (σ'/σ) α). Computed in float64: the denominator is small
    where the step is short."""
    ratio = sde.sigma(t_next) / sde.sigma(t)
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    num = x_next.double() - ratio.view(shape) * x_t.double()
    return (num / (sde.alpha(t_next) - ratio * sde.alpha(t)).view(shape)).to(x_t.dtype)


def ddim_grid(sde, steps: int) -> torch.Tensor:
    """The times `solvers.sample(method="ddim", steps=steps)` visits from t = 1 to the end time
    generation uses (`sde.t_min_default`)."""
    name = solvers.grids.resolve_default(solvers.method_info("ddim")["default_grid"], sde)
    return solvers.make_grid(name, sde, steps, 1.0, float(sde.t_min_default))


@register
class DistilledDiffusionLM(DiffusionLM):
    """A DiffusionLM distilled from a trained one into a few-step DDIM sampler.

    Args:
        teacher: the teacher's hyperparameters, copied in so that the student's checkpoint stands
            alone. `from_teacher` (in Python) and `cdlm fit --model.teacher_ckpt` read them from
            the teacher, and start the student from its weights (`start_from`); a reloaded
            student carries them.
        tokenizer_json, seq_len, attribute_names: filled in from the data module by the CLI; they must
            be the teacher's.
        distill: the rounds and the loss (`DistillationConfig`).
        optim: the optimizer; its warm-up and cosine decay restart with every round.
        ema_decay: the EMA decay (warmed up anew each round); a round's EMA is the next teacher.
        sampler: the default sampler; None: DDIM at `distill.final_steps`, the teacher's
            score temperature, no restarts, tokens read off the last call (rounding "last": NFE = steps).
        val_samples, length_counts, compile: as DiffusionLM's (length_counts default to the teacher's).
        teacher_ckpt: the DiffusionLM checkpoint `cdlm fit` distils (`arguments_from_checkpoints`
            reads it before the student is built); recorded, never read by the constructor.

    Self-conditioning is fed as sampling feeds it: at step i > 0 of its grid the student sees its
    own estimate from step i − 1, so training reaches x_t by the student's own DDIM step from the
    data noised to the previous grid time, conditioning on that step's estimate (at i = 0,
    none). The teacher starts from the same estimate and its second step conditions on its
    first. (Without self-conditioning the quickstart teacher is 4x less valid at 16 DDIM steps, and
    a student distilled without it stayed below the teacher: docs/results.md.) Embeddings are
    frozen: the targets live in the teacher's embedding space.
    """

    GROUPS = {"optim": OptimConfig}  # the teacher's groups stay inside `teacher`

    def __init__(
        self,
        teacher: dict | None = None,
        tokenizer_json: str | None = None,
        seq_len: int = 40,
        attribute_names: list[str] | None = None,
        distill: DistillationConfig | None = None,
        optim: OptimConfig | None = None,
        ema_decay: float = 0.999,
        sampler: SamplerConfig | None = None,
        val_samples: int = 64,
        length_counts: list[int] | None = None,
        compile: bool = False,
        teacher_ckpt: str | None = None,
    ):
        d = DistillationConfig.of(distill)
        if teacher is None:
            raise ValueError("DistilledDiffusionLM needs --model.teacher_ckpt (a trained DiffusionLM checkpoint); "
                             "in Python, DistilledDiffusionLM.from_teacher(model_or_checkpoint)")
        if not isinstance(teacher, dict):
            raise ValueError(f"teacher must be the teacher's hyperparameters (a mapping), got {type(teacher).__name__}")
        teacher = DiffusionLM.upgrade_hparams(teacher)  # a student saved before the teacher's groups existed
        training = DiffusionTraining.of(teacher.get("training"))
        if sampler is None:  # (a reload carries the one it was built with)
            score_temperature = SamplerConfig.of(teacher.get("sampler")).score_temperature
            sampler = SamplerConfig(method="ddim", steps=d.final_steps, score_temperature=score_temperature,
                                    rounding="last")
        super().__init__(
            **{k: v for k, v in teacher.items() if k not in ("training", "sampler")},
            tokenizer_json=tokenizer_json, seq_len=seq_len, attribute_names=attribute_names, length_counts=length_counts,
            val_samples=val_samples, compile=compile, ema_decay=ema_decay, optim=optim, sampler=sampler,
            # the student never draws training times or moves its embeddings
            training=training.replace(time_sampling="stratified", learn_embeddings=False).as_dict(),
        )
        self.distill = d
        self.teacher_training = training
        self.hparams.clear()  # DiffusionLM's arguments: this class's own replace them
        self.save_hyperparameters(ignore=["distill", "optim", "sampler"])
        self.hparams.teacher = teacher
        self.store_groups(distill=d, sampler=self.sampler)
        self._round = 0
        self._teacher_box: list = []  # not a submodule: the student's state_dict stays a DiffusionLM's

    @classmethod
    def from_teacher(cls, teacher: DiffusionLM | str, **settings) -> DistilledDiffusionLM:
        """A student of `teacher` (a DiffusionLM, or the path of its checkpoint) that starts as its
        EMA network; `settings` are the constructor's other arguments (tokenizer_json, seq_len and
        attribute_names default to the teacher's, and must match it when given)."""
        path = teacher if isinstance(teacher, str) else None
        model = read_diffusion_model(path, "teacher_ckpt") if path else teacher
        h = model.hparams
        given = {"tokenizer_json": h.tokenizer_json, "seq_len": h.seq_len, "attribute_names": h.get("attribute_names"),
                 "teacher_ckpt": path, **{k: v for k, v in settings.items() if v is not None}}
        given.update(teacher_settings(model, given.pop("length_counts", None)))
        student = cls(**given)
        student.start_from(model, path or "the teacher")
        return student

    @classmethod
    def arguments_from_checkpoints(cls, arguments: dict) -> tuple[dict, Callable | None]:
        """For `cdlm fit`: the teacher's hyperparameters (and length counts, unless given) read
        from `teacher_ckpt`, and the student's start from the teacher (`start_from`)."""
        path = arguments.get("teacher_ckpt")
        if arguments.get("teacher") is not None or path is None:
            return {}, None
        model = read_diffusion_model(path, "teacher_ckpt")
        return teacher_settings(model, arguments.get("length_counts")), partial(cls.start_from, teacher=model, source=path)

    @torch.no_grad()
    def start_from(self, teacher: DiffusionLM, source: str = "the teacher") -> None:
        """The student and its EMA start as the teacher's EMA network, which teaches the first round;
        the data the student was built for must be the teacher's."""
        check_same_data(teacher, source, self.hparams.tokenizer_json, self.hparams.seq_len)
        mine, theirs = self.hparams.attribute_names or None, teacher.hparams.get("attribute_names") or None
        if mine != theirs:
            raise ValueError(f"attribute_names {mine} differ from those {source!r} was trained with ({theirs})")
        self._set_teacher(teacher.ema)
        self.net.load_state_dict(teacher.ema.state_dict())
        self.ema.load_state_dict(teacher.ema.state_dict())

    @staticmethod
    def upgrade_hparams(hparams: dict) -> dict:
        return rename_old_hparams(hparams)  # this class has only ever stored its groups

    # ------------------------------------------------------------ teacher and rounds
    @property
    def teacher_net(self):
        if not self._teacher_box:
            raise ValueError("this student has no teacher network: distil from --model.teacher_ckpt, or resume "
                             "from a checkpoint written by `cdlm fit`")
        net = self._teacher_box[0]
        return net.to(self.device) if next(net.parameters()).device != self.device else net

    def _set_teacher(self, net) -> None:
        self._teacher_box[:] = [copy.deepcopy(net).requires_grad_(False).eval()]

    @torch.no_grad()
    def _advance(self, round_: int) -> None:
        """A new round: its teacher is the last round's EMA student, and the student starts from it."""
        self._set_teacher(self.ema)
        self.net.load_state_dict(self.ema.state_dict())
        self._round = round_
        # halving the steps raises the loss's scale (measured 0.01 → 1 from 8 steps to 1), not a divergence
        for callback in self.trainer.callbacks if self._trainer is not None else ():
            if isinstance(callback, LossGuard):
                callback.reset()

    @property
    def student_steps(self) -> int:
        """The DDIM steps of the student being trained (validation at a round's end: that round's)."""
        return self.distill.start_steps >> self._round

    def on_train_batch_start(self, batch, batch_idx):
        r = self.distill.round_at(self.global_step)
        if r != self._round:
            self._advance(r)

    def update_ema(self, steps_taken: int) -> None:
        # warmed up anew each round: the EMA tracks this round's student, not the last one's
        super().update_ema(steps_taken - self._round * self.distill.round_steps)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # a round's checkpoint samples by default at the steps its student was distilled for
        h = checkpoint.get("hyper_parameters")
        if isinstance(h, dict) and isinstance(h.get("sampler"), dict):
            h["sampler"] = {**h["sampler"], "steps": self.student_steps}
        net = self.teacher_net
        checkpoint[TEACHER_KEY] = {"round": self._round, "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        h = checkpoint.get("hyper_parameters")
        if isinstance(h, dict) and isinstance(h.get("sampler"), dict):  # the round's steps are no change of settings
            h["sampler"] = {**h["sampler"], "steps": self.sampler.steps}
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get(TEACHER_KEY)
        if not isinstance(saved, dict):
            raise ValueError("cannot resume: the checkpoint lacks the distillation teacher")
        net = copy.deepcopy(self.ema)  # every round's teacher has the student's shapes
        net.load_state_dict(saved["state"])
        self._set_teacher(net)
        self._round = int(saved["round"])

    def configure_optimizers(self):
        h, d = self.optim, self.distill
        opt = self.make_optimizer(h.name)

        def factor(step: int) -> float:  # warm-up and cosine decay within each round
            k = step - d.round_at(step) * d.round_steps
            if k < h.warmup_steps:
                return (k + 1) / h.warmup_steps
            progress = min(1.0, (k - h.warmup_steps) / max(1, d.round_steps - h.warmup_steps))
            return h.min_lr_ratio + (1 - h.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------ the loss
    def _denoiser(self, net, ids: torch.Tensor, noise: torch.Tensor, known_lengths: bool, attribute_rows) -> Denoiser:
        """The sampler's denoiser over `net`, as `sample_ids` builds it: with known lengths the
        padding is known (shown as `--length data` shows it) and banned from the content. Known
        padding is shown as the data's own forward-noised copy, by `noise`."""
        known, pad_banned = torch.full_like(ids, -1), None
        if known_lengths:
            pads = ids == self.pad_id
            known, pad_banned = torch.where(pads, ids, known), ~pads
        guidance = Guidance() if attribute_rows is None else Guidance(attribute_rows, self.conditioning.guidance_scale)
        plan = Plan(known, self.pad_id, pad_banned=pad_banned, guidance=guidance, clean=self.shown_clean())
        known_tokens = KnownTokens(plan.known_ids, plan.clean, plan.pad_id, noise=noise)
        return Denoiser(net, self.sde, SamplerConfig(score_temperature=self.sampler.score_temperature), plan, known_tokens)

    def distillation_loss(self, ids: torch.Tensor, steps: int, known_lengths: bool, attribute_rows=None):
        """(x0 loss, token loss) per sequence [B] of a student of `steps` DDIM steps."""
        B, sde = ids.shape[0], self.sde
        grid = ddim_grid(sde, 2 * steps).to(ids.device)
        i = torch.randint(steps, (B,), device=ids.device)
        t, t_mid, t_next = grid[2 * i], grid[2 * i + 1], grid[2 * i + 2]
        s = grid[(2 * i - 2).clamp(min=0)]  # the student's previous grid time (t itself at i = 0)
        teacher = self.teacher_net
        x0 = teacher.embedding(ids)
        noise = torch.randn_like(x0)
        student_denoiser = self._denoiser(self.net, ids, noise, known_lengths, attribute_rows)
        teacher_denoiser = self._denoiser(teacher, ids, noise, known_lengths, attribute_rows)
        with torch.no_grad():
            # x_t and its self-conditioning input as sampling makes them: the student's own step
            # from s (at i = 0, s = t: the step is the identity and there is no estimate, zeros)
            x_s = sde.perturb(x0, s, noise)
            prev = student_denoiser(x_s, s).x0
            x_t = ddim_step(sde, x_s, prev, s, t)
            if self.net.self_condition:
                prev = torch.where((i == 0)[:, None, None], torch.zeros_like(prev), prev)
            # the teacher's two steps; its second call self-conditions on its first, as in sampling
            first = teacher_denoiser(x_t, t, prev)
            x_mid = ddim_step(sde, x_t, first.x0, t, t_mid)
            second = teacher_denoiser(x_mid, t_mid, first.x0)
            x_next = ddim_step(sde, x_mid, second.x0, t_mid, t_next)
            target = distillation_target(sde, x_t, x_next, t, t_next)
            tokens = second.logits.argmax(-1)  # what rounding "last" would read off the teacher
        student = student_denoiser(x_t, t, prev)
        x0_hat = student.x0
        free = (ids != self.pad_id) if known_lengths else torch.ones_like(ids, dtype=torch.bool)
        free = free.to(x0_hat.dtype)
        norm = free.sum(1).clamp(min=1)
        weight = sde.log_snr(t).exp().clamp(min=1.0).to(x0_hat.dtype)  # truncated SNR, max(SNR, 1)
        mse = weight * (((x0_hat - target) ** 2).mean(-1) * free).sum(1) / norm
        last = (i == steps - 1).to(x0_hat.dtype)
        ce = F.cross_entropy(student.logits.transpose(1, 2), tokens, reduction="none")
        ce = last * (ce * free).sum(1) / norm
        return mse, ce

    def _loss(self, batch, stage: str):
        ids = batch[0]
        attribute_rows = batch[2] if len(batch) > 2 and self.net.attribute is not None else None
        if attribute_rows is not None and stage == "train":
            attribute_rows = self.drop_attribute_rows(attribute_rows)
        known = bool(torch.rand(()) < self.distill.known_lengths)
        steps = self.student_steps
        mse, ce = self.distillation_loss(ids, steps, known, attribute_rows)
        loss = mse.mean() + self.distill.token_weight * ce.mean()
        on_step, sync = stage == "train", stage != "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step, sync_dist=sync)
        self.log(f"{stage}/x0_loss", mse.mean(), on_step=on_step, on_epoch=not on_step, sync_dist=sync)
        if stage == "train":
            self.log("train/student_steps", float(steps), on_step=True, on_epoch=False)
        return loss

    def on_validation_epoch_end(self):
        # samples at the current round's steps, not yet the final ones
        final, self.sampler = self.sampler, self.sampler.replace(steps=self.student_steps)
        try:
            super().on_validation_epoch_end()
        finally:
            self.sampler = final


def teacher_settings(teacher: DiffusionLM, length_counts: list[int] | None) -> dict:
    """What a student takes from its teacher: the teacher's hyperparameters less what the student
    sets itself (`teacher`), and its length counts unless given."""
    h = dict(teacher.hparams)
    return {"teacher": {k: v for k, v in h.items() if k not in _OWN}, "length_counts": length_counts or h.get("length_counts")}
