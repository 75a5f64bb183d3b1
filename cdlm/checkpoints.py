"""Checkpoints as data: reading, checking and writing cdlm's model files.

A checkpoint never chooses what runs. Loading reads the file with `torch.load(weights_only=True)`
(tensors and plain values only), looks the model up by name in `cdlm.registry` (cdlm's own classes),
checks every hyperparameter against that class's signature and every tensor against the
freshly built model, and only then copies the weights in. Anything else is a one-line
`ValueError`.

Two formats:
- Lightning's `.ckpt` (training state, resumable), written atomically by `AtomicCheckpointIO`;
- an exported folder (`export`): `model.safetensors`, `config.json` and `tokenizer.json`, read
  by `load_pretrained` / `Model.from_pretrained(DIR)` with no pickle at all.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cdlm.registry import MODEL_KEY, model_class, models

FORMAT_VERSION = 1
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
_LIGHTNING_KEYS = ("_instantiator", "_class_path")  # written by LightningCLI, never used here


# where cdlm's classes live, and lived: checkpoints record the module they were written from
_MODULES = ("cdlm", "cdlm.models", "cdlm.models.diffusion", "cdlm.models.autoregressive", "cdlm.models.classifier",
            "cdlm.models.masked", "cdlm.models.distilled",
            "cdlm.diffusion", "cdlm.autoregressive", "cdlm.classifier")


def model_name(ckpt: dict, source: str) -> str:
    """The registry name a checkpoint records. Checkpoints from before MODEL_KEY name their class
    by a dotted path; only the paths of cdlm's own classes are understood, nothing is imported."""
    name = ckpt.get(MODEL_KEY)
    if name is None:
        path = ckpt.get("class_path") or ckpt.get("hyper_parameters", {}).get("_class_path") or "cdlm.DiffusionLM"
        module, _, name = str(path).rpartition(".")
        if module not in _MODULES:
            name = str(path)
    if not isinstance(name, str) or model_class(name) is None:
        raise ValueError(f"checkpoint {source!r} names the class {str(name)[:80]!r}, which is not a cdlm model "
                         f"(one of {', '.join(models())})")
    return name


def _plain(value) -> bool:
    """A value JSON could hold: what hyperparameters are made of."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


_TYPES = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "list": (list, tuple), "dict": (dict,)}


def _fits(value, parameter: inspect.Parameter) -> bool:
    """A plain value of a type the constructor parameter's annotation ("float | None") names; a
    parameter annotated with none of the plain types (a config class) takes any plain value."""
    names = str(parameter.annotation).replace("|", " ").replace("[", " ").split()
    allowed = tuple(t for name in names for t in _TYPES.get(name, ()))
    if not _plain(value) or value is None or not allowed:
        return _plain(value)
    return isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))  # True is an int


def checked_hparams(cls, hparams: dict, source: str) -> dict:
    """`hparams` as keyword arguments of `cls`: every key a parameter of its constructor, every
    value plain and of the type the parameter declares."""
    if not isinstance(hparams, dict):
        raise ValueError(f"checkpoint {source!r} has malformed hyperparameters ({type(hparams).__name__})")
    instantiator = hparams.get("_instantiator")
    if instantiator not in (None, "lightning.pytorch.cli.instantiate_module"):  # Lightning's own is the only one written
        raise ValueError(f"checkpoint {source!r} names the instantiator {str(instantiator)[:80]!r}, which cdlm never writes")
    hparams = {k: v for k, v in hparams.items() if k not in _LIGHTNING_KEYS}
    parameters = inspect.signature(cls.__init__).parameters
    for key, value in hparams.items():
        if key not in parameters or key == "self":
            raise ValueError(f"checkpoint {source!r} has hyperparameter {str(key)[:60]!r}, which {cls.__name__} does not take")
        if not _fits(value, parameters[key]):
            raise ValueError(f"checkpoint {source!r} has a {type(value).__name__} for hyperparameter {key!r}, "
                             f"which takes {parameters[key].annotation}")
    return hparams


def check_state_dict(expected: dict, given: dict, source: str) -> None:
    """One line naming the first missing, unexpected or wrongly shaped tensor."""
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has the unexpected tensor {str(extra[0])[:80]!r}"
        raise ValueError(f"checkpoint {source!r} {what} ({len(missing)} missing, {len(extra)} unexpected): "
                         "not a checkpoint of this model")
    for key, tensor in given.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"checkpoint {source!r} holds a {type(tensor).__name__} where tensor {key!r} belongs")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"checkpoint {source!r} has {key!r} of shape {tuple(tensor.shape)}, the model expects "
                             f"{tuple(expected[key].shape)}: its hyperparameters do not match its weights")


def build(name: str, hparams: dict, state: dict, source: str, device="cpu", expect=None):
    """The registered model `name` from hyperparameters and a state dict, both checked first;
    `expect` is a class the model must be an instance of."""
    cls = model_class(name)
    if expect is not None and not issubclass(cls, expect):
        raise ValueError(f"{source!r} holds a {name}, not a {expect.__name__}")
    hparams = cls.upgrade_hparams(dict(hparams))  # hyperparameters renamed since the checkpoint was written
    kwargs = checked_hparams(cls, hparams, source)
    try:
        model = cls(**kwargs)
    except (TypeError, KeyError) as err:
        raise ValueError(f"checkpoint {source!r} has hyperparameters {cls.__name__} cannot use ({err})") from None
    check_state_dict(model.state_dict(), state, source)
    model.load_state_dict(state)
    return model.to(device).eval()


def _load_data(path: str, device) -> object:
    """torch.load of tensors and plain values only: unpickling can then call nothing."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"checkpoint {path!r} is a directory (an exported model goes in --model)")
    if not p.is_file():
        raise ValueError(f"checkpoint {path!r} does not exist")
    try:
        return torch.load(p, map_location=device, weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {path!r} is not a readable torch checkpoint ({type(err).__name__})") from None


def read_checkpoint(path: str, device: str | torch.device = "cpu") -> dict:
    """The dict of a cdlm `.ckpt`, read as data; ValueError with one line on anything else."""
    ckpt = _load_data(path, device)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) \
            or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise ValueError(f"checkpoint {path!r} is not a cdlm checkpoint (no state_dict/hyper_parameters)")
    model_name(ckpt, path)
    return ckpt


def _data_hparams(ckpt: dict) -> dict:
    data = ckpt.get("datamodule_hyper_parameters") or {}
    return {k: v for k, v in data.items() if not k.startswith("_") and _plain(v)} if isinstance(data, dict) else {}


def resolve_device(device: str | None) -> str:
    """`device` checked to exist on this machine (None: cuda when available, else cpu); a bad or
    missing one is a one-line error naming it."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
    elif dev.type == "mps":
        ok = torch.backends.mps.is_available()
    else:
        ok = dev.type == "cpu"
    if not ok:
        raise ValueError(f"--device {device!r} is not available on this machine")
    return device


def load_checkpoint(path: str, device: str | torch.device = "cpu", expect=None, **overrides):
    """(model, data module hyperparameters) from a `.ckpt` file or an exported folder; `expect` is a
    class the model must be, `overrides` replace saved hyperparameters."""
    if Path(path).is_dir():
        return load_pretrained(path, device, expect, **overrides)
    ckpt = read_checkpoint(path, device)
    hparams = {**ckpt["hyper_parameters"], **overrides}
    model = build(model_name(ckpt, path), hparams, ckpt["state_dict"], path, device, expect)
    model.data_hparams, model.training_steps = _data_hparams(ckpt), ckpt.get("global_step")
    return model, model.data_hparams


# ------------------------------------------------------------------ the exported, pickle-free form
def load_pretrained(folder: str, device: str | torch.device = "cpu", expect=None, **overrides):
    """(model, data hyperparameters) from an exported folder, as `load_checkpoint`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(folder)
    if not (root / CONFIG).is_file() or not (root / WEIGHTS).is_file():
        raise ValueError(f"model folder {folder!r} lacks {CONFIG} or {WEIGHTS} (write one with `cdlm export`)")
    try:
        config = json.loads((root / CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{root / CONFIG} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("hyper_parameters"), dict):
        raise ValueError(f"{root / CONFIG} is not a cdlm model config")
    name = model_name({MODEL_KEY: config.get(MODEL_KEY)}, folder)
    hparams = {**config["hyper_parameters"], **overrides}
    if (root / TOKENIZER).is_file():
        hparams["tokenizer_json"] = (root / TOKENIZER).read_text(encoding="utf-8")
    try:
        state = load_file(str(root / WEIGHTS), device="cpu")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{root / WEIGHTS} is not a readable safetensors file ({err})") from None
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    model = build(name, hparams, state, folder, device, expect)
    steps = config.get("training_steps")
    model.data_hparams = {k: v for k, v in data.items() if _plain(v)}
    model.training_steps = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
    return model, model.data_hparams


class atomic_file:
    """`with atomic_file(path) as tmp:` write tmp; on success it replaces path in one rename."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            # after writing: mkstemp's 0600, or a writer that recreates the file (safetensors), would
            # hide it from a shared group
            os.chmod(self.tmp, 0o666 & ~umask)
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)  # atomic on POSIX and Windows within one file system
        else:
            self.tmp.unlink(missing_ok=True)


def write_atomically(path, write) -> None:
    """`write(file)` into a temporary file beside `path`, then rename it over `path`."""
    with atomic_file(Path(path)) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()


def _non_finite(state: dict) -> str | None:
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer and reader, made safe.

    Saving goes to a temporary file beside the target, flushed, then renamed over it: an
    interrupted save never leaves a truncated checkpoint (Lightning's own writer stages in the
    system temp directory and then *copies* across file systems, which is not atomic).
    Leftovers of a save killed outright are removed by the next save of the same file, and
    weights that are not finite are never written. Loading (resume) reads data only.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        bad = _non_finite(checkpoint.get("state_dict", {}))
        if bad is not None:
            raise FloatingPointError(f"weights turned non-finite ({bad}); not writing them over {path.name}")
        for stale in path.parent.glob(f".{path.name}.*.tmp") if path.parent.is_dir() else ():
            stale.unlink(missing_ok=True)
        write_atomically(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # also reads Lightning's own partial files (a spawned run's results): data only, no cdlm checks
        return _load_data(str(path), "cpu" if map_location is None else map_location)
