"""The Lightning half of the `cdlm` command: fit, validate and test through LightningCLI, with
the model and data linked, cdlm's run guards and TensorBoard dashboard added, the start-up
screen free of notices the user cannot act on, and errors reduced to one line.

(Lightning's `predict` is not offered: cdlm's models define no predict step; `cdlm sample`
writes samples.)"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cdlm.models.base import StepModule

RUNS = "runs"  # where named runs keep their logs and checkpoints
_NOISE = ("Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>", "Does not validate against any")


class OneLineParser(LightningArgumentParser):
    """jsonargparse prints the whole usage and a nested report; users get one line naming the key."""

    def error(self, message: str, *args, **kwargs):
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        kept = [line for line in lines if not line.startswith(_NOISE)] or lines or ["invalid arguments"]
        summary = kept[0] if len(kept) == 1 else f"{kept[0]} {kept[-1]}"
        sys.exit(f"cdlm: error: {summary}")


def _tokenizer_json(data) -> str:  # named functions, not lambdas: spawn strategies pickle them
    return data.spec.tokenizer_json


def _attribute_names(data) -> list[str] | None:
    return data.spec.attribute_names


def _seq_len(data) -> int:
    return data.spec.seq_len


class _NoAdvert(logging.Filter):
    """Drops Lightning's start-up advertisement for its cloud logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_start() -> None:
    """What `cdlm fit` prints first is cdlm's and Lightning's own output, not notices a user cannot
    act on: Lightning's cloud-logger advertisement, the deprecation warning Lightning's pytree
    helper triggers in recent torch, and jsonargparse's deprecation notices about how
    LightningCLI calls it (Lightning's code, not the user's; JSONARGPARSE_DEPRECATION_WARNINGS
    set by the user is kept)."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvert) for f in logger.filters):
        logger.addFilter(_NoAdvert())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


class CDLMCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from cdlm.dashboard import Dashboard

        # the model is built from what the data is (`DataSpec`: the tokenizer and seq_len chosen
        # from the data when not given, the attributes), made once by the data module, so the links
        # wait until it is built. (The spec's length counts reach the models that take them at fit
        # start: a link would give them to every model class, and those without lengths refuse it.)
        parser.set_defaults({"model": {"class_path": "cdlm.DiffusionLM"}})
        parser.link_arguments("data", "model.init_args.seq_len", compute_fn=_seq_len, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.tokenizer_json", compute_fn=_tokenizer_json, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.attribute_names", compute_fn=_attribute_names, apply_on="instantiate")
        parser.add_argument("--name", type=str | None, default=None,
                            help="the run's name: TensorBoard logs in ROOT/NAME/version_N, checkpoints in ROOT/NAME/checkpoints, "
                                 "ROOT being --trainer.default_root_dir or runs (default: the --config file's name; a logger "
                                 "or ModelCheckpoint the trainer config gives wins)")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="let a run write into a checkpoint folder that holds another run's checkpoints (deleting them)")
        parser.add_lightning_class_args(Dashboard, "dashboard")  # figures, hparams, embeddings in TensorBoard

    def run_name(self) -> str | None:
        """--name, else the stem of the first --config file (configs/quickstart.yaml: quickstart)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        configs = config.get("config") or []
        name = config.get("name") or (Path(str(configs[0])).stem if configs else None)
        config["name"] = name  # the config saved beside the run names it: resuming from that file keeps its folders
        return name

    def run_folders(self, kwargs: dict) -> dict:
        """A named run logs to TensorBoard in ROOT/NAME and checkpoints in ROOT/NAME/checkpoints
        (step files at each validation, and last.ckpt) unless the trainer config gives its own;
        ROOT is --trainer.default_root_dir, else runs."""
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.loggers import TensorBoardLogger

        name, trainer = self.run_name(), self._get(self.config_init, "trainer", default={})
        if not name:
            return kwargs
        root = Path(trainer.get("default_root_dir") or RUNS)
        if trainer.get("logger") in (None, True):
            kwargs["logger"] = TensorBoardLogger(save_dir=root, name=name)
        given = trainer.get("callbacks") or []
        callbacks = list(given) if isinstance(given, (list, tuple)) else [given]  # Lightning takes one alone too
        if trainer.get("enable_checkpointing") is not False and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            every = trainer.get("val_check_interval")
            callbacks.append(ModelCheckpoint(
                dirpath=root / name / "checkpoints", filename="{step}", save_last=True,
                every_n_train_steps=every if isinstance(every, int) and every > 1 else 500,
                enable_version_counter=False))  # one last.ckpt; a rerun into the folder refuses unless --overwrite
            kwargs["callbacks"] = callbacks
        return kwargs

    def before_instantiate_classes(self) -> None:
        # A model made from another's checkpoint (a distilled student, a guiding classifier) has
        # its class read that checkpoint here: its constructor reads no file.
        self._start_model = None
        config = self.config[self.subcommand] if self.subcommand else self.config
        model = config.get("model")
        if model is None or not model.get("class_path"):
            return
        module, _, name = str(model.class_path).rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        if isinstance(cls, type) and issubclass(cls, StepModule):
            init = model.init_args
            added, self._start_model = cls.arguments_from_checkpoints(init.as_dict())
            for key, value in added.items():
                init[key] = value

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self._start_model is not None:
            self._start_model(self.model)

    def instantiate_trainer(self, **kwargs):
        from lightning.pytorch.callbacks import LearningRateMonitor

        from cdlm.run_guards import EndWithinBudget, ExactResume, LossGuard, RunFolderGuard, SaveOnStop

        trainer = super().instantiate_trainer(**self.run_folders(kwargs))
        overwrite = bool(self._get(self.config, "overwrite", default=False))
        resume_from = self._get(self.config, "ckpt_path", default=None)
        trainer.callbacks[:0] = [RunFolderGuard(overwrite, resume_from), ExactResume(), LossGuard(), SaveOnStop(),
                                 EndWithinBudget()]
        if trainer.loggers:
            trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        return trainer

    def _parse_ckpt_path(self) -> None:
        # Lightning's would build the class the checkpoint names and feed its hyperparameters back
        # into the config. Here the command line builds the model; the checkpoint is only read as
        # data, and a resume then checks it against the model and reports what changed.
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if not ckpt_path:
            return
        from cdlm.checkpoints import read_checkpoint  # validates the file with a one-line error

        read_checkpoint(ckpt_path)


def run_lightning(args: list[str]) -> None:
    from cdlm.data import TextDataModule
    from cdlm.run_guards import SaveConfigBesideRun

    quiet_start()
    try:
        CDLMCLI(
            L.LightningModule,  # a LanguageModel, or an AttributeClassifier for a trained one
            TextDataModule,
            subclass_mode_model=True,
            parser_class=OneLineParser,
            parser_kwargs={"default_env": False},
            save_config_callback=SaveConfigBesideRun,
            trainer_defaults={"log_every_n_steps": 10, "plugins": [{"class_path": "cdlm.checkpoints.AtomicCheckpointIO"}]},
            args=None if args == sys.argv[1:] else args,  # LightningCLI warns when given sys.argv twice
        )
    except SIGTERMException:  # Lightning's stop on SIGTERM is a SystemExit with status 0
        sys.exit(128 + signal.SIGTERM)
