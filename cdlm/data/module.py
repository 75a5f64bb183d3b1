"""The data module: text from the embedded corpus, local files or the HF hub, tokenized into
fixed-length id tensors (sentence per example with padding, or packed running text)."""

from __future__ import annotations

import math
import os
import re
import sys
import threading
from collections import Counter
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from cdlm.data import corpus
from cdlm.control.attributes import AttributeVocab, parse_mr
from cdlm.data.tokenizer import KINDS, PAD, encode, load_tokenizer, train_tokenizer

EMBEDDED = "embedded"
EMBEDDED_SETTINGS = {"tokenizer": "word", "seq_len": 40}  # what the embedded corpus takes when not given
# the choice from the data (`choose_tokenizer`, `choose_seq_len`) when tokenizer or seq_len is not given
WORD_LEVEL_MAX_WORDS = 64  # word level only for texts this short (99% of them), as records and sentences are
PACKED_SEQ_LEN = 128  # windows of running text (packing): nanoGPT's shakespeare_char block is 256
MAX_AUTO_SEQ_LEN = 512  # longer texts are cut rather than the model made this wide
_WORDS = re.compile(r"\w+|[^\w\s]+")  # what the word tokenizer's Whitespace pre-tokenizer splits into


def _quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def choose_tokenizer(texts: list[str], vocab_size: int) -> tuple[str, str]:
    """(tokenizer kind, why) for `texts`: "word" for short-line corpora whose words fit the vocabulary
    (99% of texts within `WORD_LEVEL_MAX_WORDS` words, at most `vocab_size` distinct words), else
    "bpe" (prose, running text, or too many distinct words for one id each)."""
    counts: Counter = Counter()
    lengths = []
    for text in texts:
        words = _WORDS.findall(text)
        lengths.append(len(words))
        counts.update(words)
    p99, distinct = _quantile(lengths, 0.99), len(counts)
    if p99 > WORD_LEVEL_MAX_WORDS:
        return "bpe", f"prose: 99% of texts within {p99:,} words, more than the {WORD_LEVEL_MAX_WORDS} word level takes"
    if distinct > vocab_size:
        return "bpe", f"{distinct:,} distinct words, more than vocab_size={vocab_size:,}"
    return "word", f"short lines: 99% of texts within {p99:,} words, {distinct:,} distinct words"


def choose_seq_len(lengths: list[int]) -> tuple[int, str]:
    """(seq_len, why) for texts of `lengths` tokens, one per example: the smallest multiple of 8 that
    holds 99% of them and the pad that ends them, at most `MAX_AUTO_SEQ_LEN`."""
    p99, longest = _quantile(lengths, 0.99), max(lengths)
    seq_len = min(max(8, math.ceil((p99 + 1) / 8) * 8), MAX_AUTO_SEQ_LEN)
    over = sum(n > seq_len for n in lengths)
    why = f"99% of texts within {p99:,} tokens"
    if over:
        why += f"; {over:,} longer ones (up to {longest:,}) are cut"
    return seq_len, why
_FILE_BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def load_texts(dataset: str, text_column: str = "text", split: str = "train", whole_file: bool = False,
               config: str | None = None, condition_column: str | None = None):
    """Texts of one split of a local file (txt: one line each, or the whole file as one text;
    json/jsonl/csv: `text_column`) or a hub dataset. Raises ValueError with one readable line.

    With `condition_column` (json/csv/hub only), returns (texts, conditions) from the rows
    that have both."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    path = Path(dataset)
    if path.suffix.lower() in _FILE_BUILDERS or path.exists():
        if not path.is_file():
            raise ValueError(f"dataset file {dataset!r} {'is a directory' if path.is_dir() else 'does not exist'}")
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"dataset file {dataset!r} has unknown type; valid: {', '.join(_FILE_BUILDERS)}")
        if builder == "text":  # read directly: exact text, no cache copy
            if condition_column is not None:
                raise ValueError(f"condition_column={condition_column!r} needs a json/csv/hub dataset, not {dataset!r}")
            try:
                raw = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"dataset file {dataset!r} is not UTF-8 text (byte {err.start}: {err.reason})") from None
            if whole_file:
                return _checked([raw] if raw.strip() else [], dataset)
            texts = [line.strip() for line in raw.splitlines()]
            return _checked([t for t in texts if t], dataset)
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as err:
            raise ValueError(f"could not read {dataset!r} as {builder}: {str(err).splitlines()[0]}") from None
    else:
        ds = _load_hub_dataset(dataset, config, split)
    if condition_column is None:
        return _checked(_column(ds, text_column, dataset), dataset)
    pairs = [(t, c) for t, c in zip(_column(ds, text_column, dataset, keep_empty=True),
                                     _column(ds, condition_column, dataset, keep_empty=True)) if t and c]
    _checked(pairs, dataset)
    return [t for t, _ in pairs], [c for _, c in pairs]


def _load_hub_dataset(name: str, config: str | None, split: str):
    """`datasets.load_dataset` of a hub name. With the hub unreachable it runs in offline mode
    (the local cache only): online mode would retry for minutes before failing."""
    import datasets
    from huggingface_hub import constants as hub

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    why = "the hub is offline"
    offline = datasets.config.HF_HUB_OFFLINE  # HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, read at import
    if not offline:
        reached = []

        def probe():  # HTTP rather than a bare TCP connect, so that proxies from the environment apply
            try:
                urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=2).close()
            except urllib.error.HTTPError:
                pass  # an answer all the same
            except Exception:  # refused, timed out, unresolved, or a malformed HF_ENDPOINT
                return
            reached.append(True)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(3)  # also bounds the name lookup, which the request timeout does not cover
        offline, why = not reached, f"the hub at {urlsplit(endpoint).netloc or endpoint} is unreachable"
    # both libraries read these module flags at each call, so setting them switches offline mode
    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"), (hub, "HF_HUB_OFFLINE")]
    saved = [getattr(module, flag) for module, flag in flags]
    try:
        for module, flag in flags:
            setattr(module, flag, getattr(module, flag) or offline)
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:
        if not offline:
            why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"dataset {name!r} is neither a local file nor a loadable hub dataset ({why})") from None
    finally:
        for (module, flag), value in zip(flags, saved):
            setattr(module, flag, value)


def _column(ds, column: str, name: str, keep_empty: bool = False) -> list[str]:
    if column not in ds.column_names:
        raise ValueError(f"dataset {name!r} has no column {column!r}; columns: {', '.join(ds.column_names)}")
    values = ["" if t is None else str(t).strip() for t in ds[column]]
    return values if keep_empty else [t for t in values if t]


def _checked(texts: list[str], name: str) -> list[str]:
    if not texts:
        raise ValueError(f"dataset {name!r} holds no text")
    return texts


class WindowDataset(Dataset):
    """Windows of `seq_len` tokens of one long token stream, one starting every `stride` tokens.
    Training takes stride 1 and draws a random subset of the starts each epoch (`EpochShuffle`):
    the randomness lives in the sampler, whose state a checkpoint can hold."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, stride: int):
        if len(tokens) <= seq_len:
            raise ValueError(f"text has {len(tokens)} tokens, fewer than seq_len={seq_len} + 1")
        self.tokens, self.seq_len, self.stride = tokens, seq_len, stride

    def __len__(self) -> int:
        return (len(self.tokens) - self.seq_len) // self.stride + 1

    def __getitem__(self, i: int):
        ids = self.tokens[i * self.stride : i * self.stride + self.seq_len]
        return ids, torch.ones_like(ids, dtype=torch.bool)


class EpochShuffle(Sampler[int]):
    """Each epoch, the `size` indices in a fresh random order, or with `num_samples` that many drawn
    at random with replacement (windows of a stream), from (seed, epoch) alone: an epoch can be
    replayed from any point (`skip`). The seed is drawn from the global RNG once (it follows
    `seed_everything`) and travels in checkpoints."""

    def __init__(self, size: int, num_samples: int | None = None, seed: int | None = None):
        self.size, self.num_samples = size, num_samples
        self.seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
        self.epoch = self.skip = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def __len__(self) -> int:
        return self.size if self.num_samples is None else self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = (torch.randperm(self.size, generator=generator) if self.num_samples is None
                 else torch.randint(0, self.size, (self.num_samples,), generator=generator))
        skip, self.skip = self.skip, 0
        return iter(order[skip:].tolist())


class ResumableLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch: Lightning saves its `state_dict` (the sampler's
    seed and epoch, and how many batches of the epoch were handed out) in each checkpoint, and a
    resumed run continues the epoch with the batch it would have drawn next. It draws worker
    seeds from its own generator, so loading data never moves the global RNG."""

    def __init__(self, dataset, *args, **kwargs):  # DataLoader's own signature: Lightning rebuilds loaders from it
        super().__init__(dataset, *args, **kwargs)
        self.served = 0

    def __iter__(self):
        # under DDP Lightning wraps the sampler in a distributed one, which cannot skip: resume is exact in one process
        self.served = getattr(self.sampler, "skip", 0) // self.batch_size
        for batch in super().__iter__():
            self.served += 1  # counted as handed out, not as read ahead by workers
            yield batch

    def state_dict(self) -> dict:
        if not isinstance(self.sampler, EpochShuffle):
            return {}
        return {"seed": self.sampler.seed, "epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict) -> None:
        if not state or not isinstance(self.sampler, EpochShuffle):
            return
        self.sampler.seed = state["seed"]
        done = state["batches"] >= len(self)  # saved at the epoch's last batch: the next epoch starts afresh
        self.sampler.epoch = state["epoch"] + done
        self.sampler.skip = 0 if done else state["batches"] * self.batch_size


class TextDataModule(L.LightningDataModule):
    """Text → token ids.

    Args:
        dataset: "embedded" (the built-in restaurant corpus), a local .txt/.json/.jsonl/.csv
            file, or a hub dataset name (needs the network).
        val_dataset: an optional separate validation file or hub name; otherwise the last
            `val_fraction` of the training texts is held out.
        dataset_config: the configuration of a hub dataset (e.g. "wikitext-2-raw-v1").
        text_column: column holding the text in json/csv/hub data.
        condition_column: column holding each text's meaning representation ("name[x], food[y]")
            for attribute-conditioned training (`cdlm.control.attributes`); for the embedded corpus any
            name (e.g. "mr") gives the generator's records. Batches then carry a third tensor,
            the multi-hot attributes.
        tokenizer: "word", "bpe" or "char" (trained on the training split), or a tokenizer.json path;
            None chooses from the data (`choose_tokenizer`: word level for short-line corpora,
            BPE for prose; the embedded corpus takes word level).
        vocab_size: BPE vocabulary size.
        seq_len: tokens per example; None chooses from the data: with packing 128, otherwise the
            smallest multiple of 8 that holds 99% of the training texts (`choose_seq_len`; the
            embedded corpus takes 40). A chosen seq_len turns `truncate` on: the longest 1% are
            cut, with the warning below. What was chosen is printed in one line.
        packing: False: one sentence (line) per example, padded with [PAD], so the model learns
            lengths; True: running text cut into fixed windows.
        truncate: without packing, cut texts longer than `seq_len` (with a warning giving the
            tokens lost); False stops with the figures and the `seq_len` that fits 99% of texts.
        num_examples: size of the embedded corpus (training part).
        corpus_seed: seed of the embedded corpus.
    """

    def __init__(
        self,
        dataset: str = EMBEDDED,
        val_dataset: str | None = None,
        dataset_config: str | None = None,
        text_column: str = "text",
        condition_column: str | None = None,
        tokenizer: str | None = None,
        vocab_size: int = 8000,
        seq_len: int | None = None,
        packing: bool = False,
        truncate: bool = False,
        batch_size: int = 64,
        val_fraction: float = 0.05,
        num_examples: int = 50000,
        corpus_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if seq_len is not None and seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        if tokenizer is not None and tokenizer not in KINDS and not Path(tokenizer).is_file():
            raise ValueError(f"tokenizer {tokenizer!r} is neither one of {', '.join(KINDS)} nor a tokenizer.json file")
        self.save_hyperparameters()
        if condition_column is not None and packing:
            raise ValueError(f"condition_column={condition_column!r} needs one text per example (packing=false)")
        self._texts: tuple[list[str], list[str]] | None = None
        self._conditions: tuple[list[str], list[str]] | None = None
        self._tokenizer = None
        self._attribute_vocab: AttributeVocab | None = None
        self.train_set = self.val_set = None
        if self.is_embedded:
            self.resolve()  # the corpus's own settings: nothing to read

    @property
    def is_embedded(self) -> bool:
        return self.hparams.dataset == EMBEDDED

    def texts(self) -> tuple[list[str], list[str]]:
        """(train, validation) texts, loaded once."""
        if self._texts is None:
            h = self.hparams
            conditioned = h.condition_column is not None
            if self.is_embedded:
                n_val = max(1, int(h.num_examples * h.val_fraction))
                train_pairs = corpus.generate(h.num_examples, seed=h.corpus_seed)
                val_pairs = corpus.generate(n_val, seed=h.corpus_seed + 1)
                train, val = [t for t, _ in train_pairs], [t for t, _ in val_pairs]
                if conditioned:
                    self._conditions = ([r.to_mr() for _, r in train_pairs], [r.to_mr() for _, r in val_pairs])
            else:
                loaded = load_texts(h.dataset, h.text_column, whole_file=h.packing, config=h.dataset_config,
                                    condition_column=h.condition_column)
                train, train_cond = loaded if conditioned else (loaded, None)
                if h.val_dataset is not None:
                    loaded = load_texts(h.val_dataset, h.text_column, split="validation", whole_file=h.packing,
                                        config=h.dataset_config, condition_column=h.condition_column)
                    val, val_cond = loaded if conditioned else (loaded, None)
                    if conditioned:
                        self._conditions = (train_cond, val_cond)
                else:
                    cut = int(len(train) * (1 - h.val_fraction))
                    if len(train) == 1:  # one running text: the first part trains, the rest validates
                        text = train[0]
                        at = int(len(text) * (1 - h.val_fraction))
                        train, val = [text[:at]], [text[at:]]
                    elif cut < 1 or cut >= len(train):
                        raise ValueError(f"dataset {h.dataset!r} has {len(train)} texts, too few to hold out a validation split")
                    else:
                        train, val = train[:cut], train[cut:]
                        if conditioned:
                            self._conditions = (train_cond[:cut], train_cond[cut:])
            self._texts = (train, val)
        return self._texts

    def _settle(self, key: str, value) -> None:
        """Record a value chosen for a hyperparameter given as None, where checkpoints, the logger
        and the model's link read it (Lightning compares the model's and the data's initial
        hyperparameters, so both copies)."""
        self.hparams[key] = value
        if isinstance(getattr(self, "_hparams_initial", None), dict):
            self._hparams_initial[key] = value

    def resolve(self) -> None:
        """Choose the tokenizer and seq_len from the data where they were not given (see the
        class), and say in one line what was chosen. Runs once; every use of either calls it."""
        h = self.hparams
        if h.tokenizer is not None and h.seq_len is not None:
            return
        if self.is_embedded:
            for key, value in EMBEDDED_SETTINGS.items():
                if h[key] is None:
                    self._settle(key, value)
            return
        chose = []
        train = self.texts()[0]
        if h.tokenizer is None and self._tokenizer is None:  # (a tokenizer given by set_tokenizer is kept)
            kind, why = choose_tokenizer(train, h.vocab_size)
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
        what = (f"running text of {sum(map(len, train)):,} characters" if h.packing
                else f"{len(train):,} training texts")
        self._say(f"cdlm: data {Path(h.dataset).name}: {what}; chose " + ", ".join(chose)
                  + "; set --data.tokenizer / --data.seq_len to override")

    @staticmethod
    @rank_zero_only
    def _say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    @property
    def seq_len(self) -> int:
        """Tokens per example (chosen from the data when not given)."""
        self.resolve()
        return self.hparams.seq_len

    def _build_tokenizer(self):
        if self._tokenizer is None:
            h = self.hparams
            if h.tokenizer in KINDS:
                self._tokenizer = train_tokenizer(self.texts()[0], kind=h.tokenizer, vocab_size=h.vocab_size)
            else:
                self._tokenizer = load_tokenizer(h.tokenizer)
        return self._tokenizer

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self.resolve()
        return self._build_tokenizer()

    def conditions(self) -> tuple[list[str], list[str]] | None:
        """(train, validation) meaning representations, or None without `condition_column`."""
        self.texts()
        return self._conditions

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
        """How many training examples have 0..seq_len tokens (None for packed text, which has no lengths);
        texts cut by `truncate` count at seq_len, the length the model sees."""
        if self.hparams.packing:
            return None
        self.setup()
        mask = self.train_set.tensors[1]
        return torch.bincount(mask.sum(1), minlength=self.hparams.seq_len + 1).tolist()

    def tokenizer_json(self) -> str:
        """The tokenizer as a JSON string, the form in which it travels inside checkpoints."""
        return self.tokenizer.to_str()

    def set_tokenizer(self, tokenizer) -> None:
        """Use a given tokenizer (for instance the one inside a checkpoint) instead of training one."""
        self._tokenizer = tokenizer
        self.train_set = self.val_set = None

    def _encode_sentences(self, texts: list[str], conditions: list[str] | None = None,
                          split: str = "training") -> TensorDataset:
        pad = self.tokenizer.token_to_id(PAD)
        L_ = self.hparams.seq_len
        encoded = [enc.ids for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        self._check_lengths([len(seq) for seq in encoded], split)
        ids = torch.full((len(texts), L_), pad, dtype=torch.long)
        for row, seq in enumerate(encoded):
            seq = seq[:L_]  # cuts only with truncate=True; _check_lengths stops otherwise
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        if conditions is None:
            return TensorDataset(ids, ids != pad)
        attributes = self.attribute_vocab.encode([parse_mr(c) for c in conditions], strict=False)
        return TensorDataset(ids, ids != pad, attributes)

    def _check_lengths(self, lengths: list[int], split: str) -> None:
        """Stop (with `truncate`, warn) when texts are longer than seq_len: cutting them silently
        loses their ends and teaches the model that they stop mid-sentence."""
        L_ = self.hparams.seq_len
        over = [n for n in lengths if n > L_]
        if not over:
            return
        total, lost = sum(lengths), sum(over) - L_ * len(over)
        fits, longest = sorted(lengths)[math.ceil(0.99 * len(lengths)) - 1], max(lengths)
        fitting = (f"seq_len={longest} fits them all" if fits == longest
                   else f"seq_len={fits} fits 99% of them, seq_len={longest} all")
        truncate = self.hparams.truncate
        message = (f"{len(over):,} of {len(lengths):,} {split} texts ({100 * len(over) / len(lengths):.3g}%) are longer "
                   f"than seq_len={L_} tokens; truncating them {'drops' if truncate else 'would drop'} {lost:,} of "
                   f"{total:,} tokens ({100 * lost / total:.3g}%). {fitting}")
        if not truncate:
            raise ValueError(f"{message}; pass --data.truncate=true to cut them anyway")
        rank_zero_warn(message)

    def _encode_stream(self, texts: list[str], train: bool) -> WindowDataset:
        joined = "\n".join(texts)
        tokens = torch.tensor(encode(self.tokenizer, joined), dtype=torch.long)
        return WindowDataset(tokens, self.hparams.seq_len, stride=1 if train else self.hparams.seq_len)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.resolve()
        train, val = self.texts()
        if self.hparams.packing:
            self.train_set, self.val_set = self._encode_stream(train, True), self._encode_stream(val, False)
        else:
            cond = self.conditions() or (None, None)
            train_set = self._encode_sentences(train, cond[0])  # both checked before either is kept
            self.val_set = self._encode_sentences(val, cond[1], split="validation")
            self.train_set = train_set

    def _loader(self, ds, train: bool) -> DataLoader:
        h = self.hparams
        workers = {"num_workers": h.num_workers, "persistent_workers": h.num_workers > 0}
        if not train:
            return DataLoader(ds, batch_size=h.batch_size, shuffle=False, **workers)
        # windows of a stream: an epoch is as many random windows as the stream holds end to end
        epoch_size = len(ds.tokens) // h.seq_len if isinstance(ds, WindowDataset) else None
        order = EpochShuffle(len(ds), epoch_size)
        return ResumableLoader(ds, batch_size=h.batch_size, sampler=order, drop_last=True,
                               generator=torch.Generator().manual_seed(order.seed), **workers)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        loader = self._loader(self.train_set, train=True)
        if len(loader) == 0:  # Lightning would train nothing and exit 0
            raise ValueError(f"the training split has {len(loader.sampler)} examples, fewer than "
                             f"batch_size={self.hparams.batch_size}: not one training batch")
        return loader

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
