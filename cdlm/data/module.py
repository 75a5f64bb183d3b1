"""The Lightning data module: wires a source (the embedded corpus, a local file or a hub dataset),
the tokenizer and `seq_len` chosen for it, the examples and the loaders together, and makes the
`DataSpec` the model is built from."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.data import AttributeDict
from torch.utils.data import DataLoader

from cdlm.data.attributes import AttributeVocab
from cdlm.data.choose import EMBEDDED_SETTINGS, PACKED_SEQ_LEN, choose_seq_len, choose_tokenizer
from cdlm.data.config import LoadingSettings, SourceSettings, upgrade_hparams
from cdlm.data.examples import encode_running, encode_sentences, length_counts
from cdlm.data.loaders import make_loader
from cdlm.data.packed import PackedData, say
from cdlm.data.sources import EMBEDDED, Splits, read_splits
from cdlm.data.spec import DataSpec
from cdlm.data.stream import StreamWindows, TokenWindows
from cdlm.data.tokenizer import KINDS, load_tokenizer, train_tokenizer


class TextDataModule(L.LightningDataModule):
    """Text → token ids.

    Args:
        dataset: "embedded" (the built-in restaurant corpus), a local .txt/.json/.jsonl/.csv
            file, or a hub dataset name (needs the network).
        val_dataset: an optional separate validation file or hub name; otherwise the last
            `source.val_fraction` of the training texts is held out.
        condition_column: column holding each text's meaning representation ("name[x], food[y]")
            for attribute-conditioned training (`cdlm.data.attributes`); for the embedded corpus
            any name (e.g. "mr") gives the generator's records. Batches then carry a third tensor,
            the multi-hot attribute rows.
        tokenizer: "word", "bpe" or "char" (trained on the training split), or a tokenizer.json path;
            None chooses from the data (`choose_tokenizer`: word level for short-line corpora,
            BPE for prose; the embedded corpus takes word level).
        vocab_size: BPE vocabulary size.
        seq_len: tokens per example; None chooses from the data: with packing 128, otherwise the
            smallest multiple of 8 that holds 99% of the training texts (`choose_seq_len`; the
            embedded corpus takes 40). A chosen seq_len turns `truncate` on: the longest 1% are
            cut, with the warning below. What was chosen is printed in one line.
        packing: False: one sentence (line) per example, padded with [PAD], so the model learns
            lengths; True: running text cut into fixed windows (of a file or hub dataset, through
            a token cache on disk: `PackedData`).
        truncate: without packing, cut texts longer than `seq_len` (with a warning giving the
            tokens lost); False stops with the figures and the `seq_len` that fits 99% of texts.
        batch_size: examples per batch.
        num_examples: size of the embedded corpus (training part).
        source: what a kind of dataset needs beyond its name (`SourceSettings`: text_column,
            dataset_config, val_fraction, corpus_seed).
        loading: how the data is read and served (`LoadingSettings`: num_workers, bucket_lengths,
            streaming, cache_dir, num_proc, sample_chars).
    """

    def __init__(
        self,
        dataset: str = EMBEDDED,
        val_dataset: str | None = None,
        condition_column: str | None = None,
        tokenizer: str | None = None,
        vocab_size: int = 8000,
        seq_len: int | None = None,
        packing: bool = False,
        truncate: bool = False,
        batch_size: int = 64,
        num_examples: int = 50000,
        source: SourceSettings | None = None,
        loading: LoadingSettings | None = None,
    ):
        super().__init__()
        self.source, self.loading = SourceSettings.of(source), LoadingSettings.of(loading)
        if self.loading.streaming and (not packing or dataset == EMBEDDED):
            raise ValueError(f"streaming=true reads packed text of a file or hub dataset: needs packing=true and a dataset, "
                             f"not {'the embedded corpus' if dataset == EMBEDDED else 'packing=false'}")
        if seq_len is not None and seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if tokenizer is not None and tokenizer not in KINDS and not Path(tokenizer).is_file():
            raise ValueError(f"tokenizer {tokenizer!r} is neither one of {', '.join(KINDS)} nor a tokenizer.json file")
        self.save_hyperparameters()
        self.hparams.update(source=self.source.as_dict(), loading=self.loading.as_dict())  # plain values in checkpoints
        if self.loading.bucket_lengths and packing:
            raise ValueError("bucket_lengths=true groups texts of one example each by length: needs packing=false")
        if condition_column is not None and packing:
            raise ValueError(f"condition_column={condition_column!r} needs one text per example (packing=false)")
        self.packed = PackedData(dataset, val_dataset, self.source, self.loading) if packing and dataset != EMBEDDED else None
        self._splits: Splits | None = None
        self._tokenizer = None
        self._attribute_vocab: AttributeVocab | None = None
        self._spec: DataSpec | None = None
        self.train_set = self.val_set = None
        if self.is_embedded:
            self.resolve()  # the corpus's own settings: nothing to read

    @classmethod
    def from_hparams(cls, hparams: dict, spec: DataSpec | None = None) -> TextDataModule:
        """The data module a checkpoint's data hyperparameters describe (the flat names of
        checkpoints from before the groups folded in). With `spec` (a trained model's,
        `DataSpec.from_hparams`) its tokenizer, seq_len and attributes are used, not chosen again."""
        settings = upgrade_hparams(hparams)
        if spec is not None:
            settings["seq_len"] = spec.seq_len
        data = cls(**settings)
        if spec is not None:
            data._spec = spec
            data._tokenizer = load_tokenizer(spec.tokenizer_json)
            data._attribute_vocab = AttributeVocab(spec.attribute_names) if spec.attribute_names else None
        return data

    @property
    def is_embedded(self) -> bool:
        return self.hparams.dataset == EMBEDDED

    @property
    def hparams_initial(self) -> AttributeDict:
        """The settings as given, with what was chosen from the data in place of None (`resolve`):
        what Lightning logs, and checks against the model's same-named hyperparameters (seq_len,
        which the model was given from the choice)."""
        return AttributeDict(copy.deepcopy(dict(self.hparams)))

    def texts(self) -> tuple[list[str], list[str]]:
        """(train, validation) texts, loaded once (`read_splits`)."""
        if self._splits is None:
            h = self.hparams
            self._splits = read_splits(h.dataset, h.val_dataset, h.condition_column, h.packing, h.num_examples, self.source)
        return self._splits.train, self._splits.val

    def conditions(self) -> tuple[list[str], list[str]] | None:
        """(train, validation) meaning representations, or None without `condition_column`."""
        self.texts()
        return self._splits.conditions

    # --- what the data is: chosen once, then the spec --------------------------------------------

    def _settle(self, key: str, value) -> None:
        """Record a value chosen for a hyperparameter given as None, where checkpoints, the logger
        and evaluation's rebuilt data read it."""
        self.hparams[key] = value

    def _text_sample(self) -> list[str]:
        """The training texts (one per example) that choose and train the tokenizer: the first
        `sample_chars` characters' worth; all of them for a smaller split or the embedded corpus."""
        train = self.texts()[0]
        if self.is_embedded:
            return train
        total = 0
        for n, text in enumerate(train, 1):
            total += len(text)
            if total >= self.loading.sample_chars:
                return train[:n]
        return train

    def resolve(self) -> None:
        """Choose the tokenizer and seq_len from the data where they were not given (see the
        class), and say in one line what was chosen. Runs once; every use of either calls it."""
        h = self.hparams
        if self._spec is not None or (h.tokenizer is not None and h.seq_len is not None):
            return  # (a spec is made after the choice, or given: a trained model's, `from_hparams`)
        if self.is_embedded:
            for key, value in EMBEDDED_SETTINGS.items():
                if h[key] is None:
                    self._settle(key, value)
            return
        chose = []
        prep = self.packed.prep(h.tokenizer, h.vocab_size) if self.packed else None
        train = None if prep else self._text_sample()
        if h.tokenizer is None:
            kind, why = (prep["kind"], prep["why"]) if prep else choose_tokenizer(train, h.vocab_size)
            self._settle("tokenizer", kind)
            chose.append(f"tokenizer={kind}" + (f" (vocab_size={h.vocab_size:,})" if kind == "bpe" else "") + f" [{why}]")
        if h.seq_len is None:
            if h.packing:
                seq_len, why = PACKED_SEQ_LEN, "windows of running text"
            else:
                tok = self._build_tokenizer()
                lengths = [len(e.ids) for e in tok.encode_batch(train, add_special_tokens=False)]
                seq_len, why = choose_seq_len(lengths)
                # always, not only when a training text is cut: a held-out text longer than them all
                # (that split is not measured here) is then cut with the warning, not an error
                self._settle("truncate", True)
            self._settle("seq_len", seq_len)
            chose.append(f"seq_len={seq_len} [{why}]")
        what = (prep["what"] if prep else f"running text of {sum(map(len, train)):,} characters" if h.packing
                else f"{len(self.texts()[0]):,} training texts")
        say(f"cdlm: data {Path(h.dataset).name}: {what}; chose " + ", ".join(chose)
            + "; set --data.tokenizer / --data.seq_len to override")

    @property
    def seq_len(self) -> int:
        """Tokens per example (chosen from the data when not given)."""
        self.resolve()
        return self.hparams.seq_len

    def _build_tokenizer(self):
        if self._tokenizer is None:
            h = self.hparams
            if h.tokenizer in KINDS and self.packed:
                prep = self.packed.prep(h.tokenizer, h.vocab_size)
                if prep.get("tokenizer_json") is None or prep["kind"] != h.tokenizer:
                    raise RuntimeError(f"tokenizer {h.tokenizer!r} was not trained by prep")  # a bug, not a user error
                self._tokenizer = load_tokenizer(prep["tokenizer_json"])
            elif h.tokenizer in KINDS:
                self._tokenizer = train_tokenizer(self._text_sample(), kind=h.tokenizer, vocab_size=h.vocab_size)
            else:
                self._tokenizer = load_tokenizer(h.tokenizer)
        return self._tokenizer

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self.resolve()
        return self._build_tokenizer()

    def tokenizer_json(self) -> str:
        """The tokenizer as a JSON string, the form in which it travels inside checkpoints."""
        return self.tokenizer.to_str()

    @property
    def attribute_vocab(self) -> AttributeVocab | None:
        """The attributes seen in training conditions (None without `condition_column`)."""
        if self._attribute_vocab is None and self.hparams.condition_column is not None:
            self._attribute_vocab = AttributeVocab.build(self.conditions()[0])
        return self._attribute_vocab

    def attribute_names(self) -> list[str] | None:
        """The attribute vocabulary as a list, the form in which it travels inside checkpoints."""
        vocab = self.attribute_vocab
        return None if vocab is None else vocab.names

    def length_counts(self) -> list[int] | None:
        """How many training examples have 0..seq_len tokens (None for packed text, which has no
        lengths); texts cut by `truncate` count at seq_len, the length the model sees."""
        if self.hparams.packing:
            return None
        self.setup()
        return length_counts(self.train_set, self.hparams.seq_len)

    @property
    def spec(self) -> DataSpec:
        """What the data is, made once: the tokenizer, seq_len, attributes and length counts the
        model is built from (for sentence data this tokenizes the training split)."""
        if self._spec is None:
            self._spec = DataSpec(self.tokenizer_json(), self.seq_len, self.attribute_names(), self.length_counts())
        return self._spec

    # --- examples and loaders ---------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Lightning calls this on one process per node before `setup` on every rank: packed data's
        token cache is built here once, and each rank then opens it."""
        if self.packed and not self.loading.streaming:
            self.resolve()
            self.packed.tokens(self.tokenizer)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.resolve()
        h = self.hparams
        if self.packed and self.loading.streaming:
            self.train_set, self.val_set = self.packed.stream_sets(self.tokenizer, h.seq_len)
        elif self.packed:
            meta = self.packed.tokens(self.tokenizer)
            folder = Path(meta["path"])
            train_set = TokenWindows(folder / "train.bin", meta["dtype"], h.seq_len, stride=1)
            self.val_set = TokenWindows(folder / "val.bin", meta["dtype"], h.seq_len, stride=h.seq_len)
            self.train_set = train_set
        elif h.packing:
            train, val = self.texts()
            self.train_set = encode_running(self.tokenizer, train, h.seq_len, train=True)
            self.val_set = encode_running(self.tokenizer, val, h.seq_len, train=False)
        else:
            train, val = self.texts()
            cond = self.conditions() or (None, None)
            # both checked before either is kept
            train_set = encode_sentences(self.tokenizer, train, h.seq_len, h.truncate, "training", cond[0], self.attribute_vocab)
            self.val_set = encode_sentences(self.tokenizer, val, h.seq_len, h.truncate, "validation", cond[1],
                                            self.attribute_vocab)
            self.train_set = train_set

    def _replicas(self) -> tuple[int, int]:
        """(ranks, this rank) of the trainer's parallel strategy; (1, 0) in one process."""
        kwargs = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        return (kwargs["num_replicas"], kwargs["rank"]) if kwargs else (1, 0)

    def _shared(self, seed: int) -> int:
        """Rank 0's seed on every rank: without `seed_everything` each process draws its own, and
        the ranks' shares of an epoch would overlap."""
        if self._replicas()[0] == 1:
            return seed
        return int(self.trainer.strategy.broadcast(seed, src=0))

    def train_dataloader(self) -> DataLoader:
        self.setup()
        loader = make_loader(self.train_set, True, self.hparams.batch_size, self.loading, self._replicas(), self._shared)
        if isinstance(self.train_set, StreamWindows):
            return loader
        if len(loader) == 0:  # Lightning would train nothing and exit 0
            raise ValueError(f"the training split has {len(loader.sampler)} examples, fewer than "
                             f"batch_size={self.hparams.batch_size}: not one training batch")
        return loader

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return make_loader(self.val_set, False, self.hparams.batch_size, self.loading)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
