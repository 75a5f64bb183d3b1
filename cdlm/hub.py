"""Sharing models the Hugging Face Hub's way. A model folder holds `model.safetensors`,
`config.json`, `tokenizer.json` and a model card (`README.md`: what the model is, its
hyperparameters, data, training steps and measured metrics, with the Hub's YAML header).
`save_pretrained` writes one, `from_pretrained` reads one from a local folder or from a hub id
("user/name", at a `revision`) through the hub's own cache, and `push_to_hub` uploads one.
Nothing here runs code a file names: loading goes through `cdlm.checkpoints.load_pretrained`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from cdlm.checkpoints import CONFIG, FORMAT_VERSION, MODEL_KEY, TOKENIZER, WEIGHTS, atomic_file, load_checkpoint, load_pretrained

CARD = "README.md"
FILES = (WEIGHTS, CONFIG, TOKENIZER, CARD)
_KIND_TEXT = {
    "continuous": "a continuous embedding-space diffusion language model: tokens are learned vectors, denoised "
                  "from Gaussian noise over the whole sequence by ODE/SDE solvers and rounded back to tokens",
    "masked": "a masked (absorbing-state) diffusion language model (MDLM/LLaDA): every position starts masked "
              "and is unmasked over a few steps",
    "autoregressive": "an autoregressive (left-to-right) transformer language model, the baseline of the "
                      "diffusion models on the same backbone",
}


def model_card(model, data_hparams: dict | None = None, training_steps: int | None = None,
               metrics: dict | None = None) -> str:
    """The model card's text: the Hub's YAML metadata, then what the model is, how it was made and
    what it scored (`metrics`, e.g. from `cdlm eval`)."""
    from huggingface_hub import ModelCard, ModelCardData

    kind = model.kind
    data = data_hparams or {}
    dataset = data.get("dataset")
    card_data = ModelCardData(library_name="cdlm", pipeline_tag="text-generation",
                              tags=["cdlm", "diffusion-language-model" if kind != "autoregressive" else "autoregressive",
                                    kind])
    hparams = {k: v for k, v in model.hparams.items() if k not in ("tokenizer_json", "length_counts")}
    lines = [
        f"# {type(model).__name__}", "",
        f"A cdlm model: {_KIND_TEXT.get(kind, kind)}.", "",
        "```python", "import cdlm", "", "model = cdlm.load(\"THIS_FOLDER_OR_HUB_ID\")",
        "print(model.generate(4))", "```", "",
        "## Training", "",
        f"- data: {dataset if dataset else 'the embedded corpus'}"
        + (f" ({data.get('tokenizer')} tokenizer, sequences of {data.get('seq_len')})" if data.get("tokenizer") else ""),
        f"- training steps: {training_steps if training_steps is not None else 'not recorded'}",
        f"- tokens in the vocabulary: {model.tokenizer.get_vocab_size() if kind != 'classifier' else 'none'}", "",
        "## Hyperparameters", "", "```json", json.dumps(hparams, indent=1, default=str), "```", "",
    ]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    return str(ModelCard("---\n" + card_data.to_yaml() + "\n---\n\n" + "\n".join(lines)))


def save_pretrained(model, folder, data_hparams: dict | None = None, training_steps: int | None = None,
                    metrics: dict | None = None, overwrite: bool = False) -> Path:
    """Write `model` into `folder` (created if missing): weights, config, tokenizer and model card,
    each replaced in one rename, with the permissions of the user's umask."""
    from safetensors.torch import save_file

    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{str(folder)!r} is a file, not a folder")
    clash = [n for n in FILES if (out / n).exists()]
    if clash and not overwrite:
        raise ValueError(f"{str(folder)!r} already holds {', '.join(clash)}; pass --overwrite to replace them")
    data_hparams = (model.data_hparams or {}) if data_hparams is None else data_hparams
    training_steps = model.training_steps if training_steps is None else training_steps
    hparams = dict(model.hparams)
    tokenizer = hparams.pop("tokenizer_json", None)
    config = {"format_version": FORMAT_VERSION, MODEL_KEY: type(model).__name__, "hyper_parameters": hparams,
              "data": data_hparams, "training_steps": training_steps}
    # shared storage (tied weights) cannot be written twice by safetensors: each tensor its own copy
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", MODEL_KEY: type(model).__name__})
    with atomic_file(out / CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    if tokenizer is not None:
        with atomic_file(out / TOKENIZER) as tmp:
            tmp.write_text(tokenizer, encoding="utf-8")
    with atomic_file(out / CARD) as tmp:
        tmp.write_text(model_card(model, data_hparams, training_steps, metrics), encoding="utf-8")
    return out


def export(ckpt_path: str, out_dir: str, overwrite: bool = False, metrics: dict | None = None) -> Path:
    """`cdlm export`: the model of a `.ckpt` written as a model folder (`save_pretrained`)."""
    model, _ = load_checkpoint(ckpt_path)
    return save_pretrained(model, out_dir, metrics=metrics, overwrite=overwrite)


def is_hub_id(name: str) -> bool:
    """"user/name", as the Hub names models (a path that exists is a path, and a `.ckpt` a file)."""
    parts = str(name).split("/")
    return len(parts) == 2 and not str(name).endswith(".ckpt") and all(
        p and not p.startswith(".") and p.replace("-", "").replace("_", "").replace(".", "").isalnum() for p in parts)


def resolve(path_or_id: str, revision: str | None = None, cache_dir: str | None = None) -> str:
    """A local path as it is; a hub id as the folder of its files in the hub's cache (downloaded
    when missing, unless HF_HUB_OFFLINE=1, which reads the cache alone)."""
    if Path(path_or_id).exists() or not is_hub_id(path_or_id):
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub ids (user/name), not to the path {path_or_id!r}")
        return str(path_or_id)  # a missing file is reported by the loader, in its words
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path_or_id, revision=revision, cache_dir=cache_dir, allow_patterns=list(FILES),
                                 library_name="cdlm")
    except Exception as err:  # offline and not cached, no such repo, no such revision: one line
        at = f" at revision {revision!r}" if revision else ""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path_or_id!r} is neither a local file or folder nor a model the hub gives{at} ({first})") from None


def load(path_or_id: str, device: str = "cpu", revision: str | None = None, cache_dir: str | None = None,
         expect=None):
    """The model a `.ckpt` file, a model folder or a hub id holds, of whichever class (`expect`:
    a class it must be)."""
    source = resolve(path_or_id, revision, cache_dir)
    if Path(source).is_dir():
        return load_pretrained(source, device, expect)[0]
    return load_checkpoint(source, device, expect)[0]


def push_to_hub(model, repo_id: str, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str | None = None, metrics: dict | None = None):
    """Upload `model` as a model folder to the hub repository `repo_id` (created if missing);
    returns the commit's information."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, metrics=metrics)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision,
                                 commit_message=commit_message or f"Upload {type(model).__name__} with cdlm")

