"""The data module's settings groups, beside its common flags: `SourceSettings` (what a kind of
dataset needs beyond its name, and how much of it is held out) and `LoadingSettings` (how the
data is read and served). A group is one constructor parameter (`--data.source.text_column ref`,
YAML `source: {text_column: ref}`) and is stored in checkpoints as plain values; checkpoints
from before the groups have their flat names folded in (`upgrade_hparams`)."""

from __future__ import annotations

from dataclasses import dataclass

from cdlm.settings import Settings, count, fold_flat_names, number, setting


@dataclass(frozen=True)
class SourceSettings(Settings):
    """What a kind of dataset needs beyond its name, and which of its texts validate."""

    what = "source setting"

    text_column: str = setting("text", "column holding the text in json/csv/hub data")
    dataset_config: str | None = setting(None, "the configuration of a hub dataset (e.g. wikitext-2-raw-v1)")
    val_fraction: float = setting(0.05, "without val_dataset, the last fraction of the training texts (of a running "
                                        "text: of its characters) held out to validate")
    corpus_seed: int = setting(0, "seed of the embedded corpus")

    def __post_init__(self):
        if not (number(self.val_fraction) and 0.0 < self.val_fraction < 1.0):
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        self._check({
            "text_column": (lambda v: isinstance(v, str) and v != "", "a column name"),
            "corpus_seed": (lambda v: count(v, 0), "a non-negative integer"),
        })


@dataclass(frozen=True)
class LoadingSettings(Settings):
    """How the data is read and served: loader workers, length bucketing, and for big files and
    hub datasets the stream, the token cache, the tokenizing processes and the head read to
    choose and train the tokenizer (docs/scaling-out.md)."""

    what = "loading setting"

    num_workers: int = setting(0, "DataLoader worker processes")
    bucket_lengths: bool = setting(False, "without packing, training batches of texts of similar length, each cut "
                                          "after its longest text and the pad that ends it: fewer pad positions per "
                                          "step (sample with the sampler's trim_padding)")
    streaming: bool = setting(False, "packed hub (or file) data read as a stream and tokenized on the fly into "
                                     "windows: nothing is stored; validation is the end of the first sample_chars "
                                     "characters (or val_dataset's first sample_chars)")
    cache_dir: str | None = setting(None, "where packed data's token cache lives (default: cdlm-tokens in the "
                                          "datasets cache, HF_DATASETS_CACHE)")
    num_proc: int | None = setting(None, "processes of the batched datasets.map that tokenizes packed file and hub "
                                         "data (null: one; the tokenizer itself already runs on every core)")
    sample_chars: int = setting(20_000_000, "characters of the training split read to choose the tokenizer and "
                                            "seq_len and to train the tokenizer; a smaller split is read whole")

    def __post_init__(self):
        self._check({
            "num_proc": (lambda v: count(v, 1), "positive (or null for one process)"),
            "sample_chars": (lambda v: count(v, 1), "positive"),
            "num_workers": (lambda v: count(v, 0), "a non-negative integer"),
            "bucket_lengths": (lambda v: isinstance(v, bool), "true or false"),
            "streaming": (lambda v: isinstance(v, bool), "true or false"),
        })


GROUPS = {"source": SourceSettings, "loading": LoadingSettings}


def upgrade_hparams(hparams: dict) -> dict:
    """A checkpoint's data hyperparameters with the flat names from before the groups folded in."""
    return fold_flat_names(hparams, {name: {n: n for n in group.names()} for name, group in GROUPS.items()})
