"""The data module: text from the embedded corpus, local files or the HF hub, tokenized into
fixed-length id tensors (sentence per example with padding, or packed running text)."""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, default_collate

from cdlm.control.attributes import AttributeVocab, parse_mr
from cdlm.data import corpus
from cdlm.data import stream as streams
from cdlm.data.stream import StreamWindows, TokenWindows, WindowDataset
from cdlm.data.tokenizer import KINDS, PAD, encode, load_tokenizer, train_tokenizer

EMBEDDED = "embedded"
EMBEDDED_SETTINGS = {"tokenizer": "word", "seq_len": 40}  # what the embedded corpus takes when not given
# the choice from the data (`choose_tokenizer`, `choose_seq_len`) when tokenizer or seq_len is not given
WORD_LEVEL_MAX_WORDS = 64  # word level only for texts this short (99% of them), as records and sentences are
PACKED_SEQ_LEN = 128  # windows of running text (packing): nanoGPT's shakespeare_char block is 256
MAX_AUTO_SEQ_LEN = 512  # longer texts are cut rather than the model made this wide
PIECE_CHARS = 1 << 20  # long running text is counted and trained on a piece of about this many characters at a time
WHOLE_TRAINING_CHARS = 1 << 22  # a text up to this long trains the tokenizer whole, as it always has
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
        n = 0
        for piece in _pieces(text):  # a running text a piece at a time: no list of all its words
            words = _WORDS.findall(piece)
            n += len(words)
            counts.update(words)
        lengths.append(n)
    p99, distinct = _quantile(lengths, 0.99), len(counts)
    if p99 > WORD_LEVEL_MAX_WORDS:
        return "bpe", f"prose: 99% of texts within {p99:,} words, more than the {WORD_LEVEL_MAX_WORDS} word level takes"
    if distinct > vocab_size:
        return "bpe", f"{distinct:,} distinct words, more than vocab_size={vocab_size:,}"
    return "word", f"short lines: 99% of texts within {p99:,} words, {distinct:,} distinct words"


def _pieces(text: str, size: int = PIECE_CHARS):
    """`text` in pieces of about `size` characters, cut after a newline (else a space) so that no
    word is split; a text this short whole."""
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind("\n", start, end) + 1 or text.rfind(" ", start, end) + 1 or end
        yield text[start:cut]
        start = cut
    yield text[start:]


def training_texts(texts: list[str]) -> list[str]:
    """What a tokenizer trains on: texts as they are, and a running text longer than
    `WHOLE_TRAINING_CHARS` in pieces (the trainer's pre-tokenization of one huge string takes
    about 100 bytes a character; pieces cut at newlines only differ where BPE would have merged
    whitespace across a line break)."""
    if all(len(t) <= WHOLE_TRAINING_CHARS for t in texts):
        return texts
    return [p for t in texts for p in (_pieces(t) if len(t) > WHOLE_TRAINING_CHARS else [t])]


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
    local = _local_file(dataset)
    if local is not None:
        path, builder = local
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


def _local_file(dataset: str) -> tuple[Path, str] | None:
    """(path, datasets builder) of a local data file, None for a hub name; ValueError for a path
    that is no readable data file."""
    path = Path(dataset)
    if not (path.suffix.lower() in _FILE_BUILDERS or path.exists()):
        return None
    if not path.is_file():
        raise ValueError(f"dataset file {dataset!r} {'is a directory' if path.is_dir() else 'does not exist'}")
    builder = _FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"dataset file {dataset!r} has unknown type; valid: {', '.join(_FILE_BUILDERS)}")
    return path, builder


def load_rows(dataset: str, text_column: str = "text", split: str = "train", config: str | None = None,
              streaming: bool = False):
    """(rows, column, lines) of one split of a local file or a hub dataset as a `datasets` dataset
    (Arrow, memory-mapped; an IterableDataset with `streaming`), for packed text that may not fit
    in memory. A .txt file comes as pieces of its text (`lines` True: end to end they are the
    file; streamed, its lines with their line breaks); json/csv/hub data as rows of `text_column`."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    local = _local_file(dataset)
    if local is None:
        if streaming:
            try:
                rows = datasets.load_dataset(dataset, config, split=split, streaming=True)
            except Exception as err:
                raise ValueError(f"dataset {dataset!r} cannot be streamed ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
        else:
            rows = _load_hub_dataset(dataset, config, split)
        lines = False
    else:
        path, builder = local
        lines = builder == "text"
        try:
            if lines and not streaming:  # pieces cut where tokenization cannot change (see text_chunks)
                rows = datasets.Dataset.from_generator(
                    streams.text_chunks, gen_kwargs=streams.file_identity(path),
                    features=datasets.Features({"text": datasets.Value("string")}))
            elif lines:  # datasets' own streaming of the lines, with their line breaks
                rows = datasets.load_dataset("text", data_files=str(path), split="train", streaming=True, keep_linebreaks=True)
            else:
                rows = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=streaming)
        except Exception as err:
            cause = err.__cause__ or err.__context__ or err
            if isinstance(cause, UnicodeDecodeError):
                raise ValueError(f"dataset file {dataset!r} is not UTF-8 text (byte {cause.start}: {cause.reason})") from None
            raise ValueError(f"could not read {dataset!r} as {builder}: {str(err).splitlines()[0]}") from None
    column = "text" if lines else text_column
    names = rows.column_names if rows.column_names is not None else list(rows.features or {})
    if names and column not in names:
        raise ValueError(f"dataset {dataset!r} has no column {column!r}; columns: {', '.join(names)}")
    return rows, column, lines


def _text_chunks(rows, column: str, name: str, start: int = 0, stop: int | None = None):
    """The Arrow chunks of a text column of a (memory-mapped) dataset, rows [start, stop): read a
    record batch at a time, never the whole column."""
    table = rows.data.table
    stop = table.num_rows if stop is None else stop
    for chunk in table.slice(start, max(0, stop - start)).column(column).chunks:
        if len(chunk):
            yield chunk


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


class EpochShuffle(DistributedSampler):
    """Each epoch, the `size` indices in a fresh random order, or with `num_samples` that many drawn
    at random with replacement (windows of a stream), from (seed, epoch) alone: an epoch can be
    replayed from any point (`skip`). The seed is drawn from the global RNG once (it follows
    `seed_everything`) and travels in checkpoints.

    Under a parallel strategy rank r of `num_replicas` takes every num_replicas-th index of the
    same epoch order, starting at r (the tail that does not divide evenly is dropped): batch b of
    every rank together is batch b of one process with the global batch, and `skip` counts this
    rank's indices, so resume stays exact. It is a `DistributedSampler` only so that Lightning
    keeps it instead of wrapping it in one (which would reshuffle it and lose `skip`).

    With `lengths` [size] (length bucketing) each run of `POOL` batches of the epoch order is
    sorted by length and cut into batches of `batch_size`, and the batches are shuffled: a batch
    holds texts of similar length, so `cut_padding` can drop most of its pad positions."""

    POOL = 50  # batches sorted together: similar lengths within a batch, still random across batches

    def __init__(self, size: int, num_samples: int | None = None, seed: int | None = None,
                 num_replicas: int = 1, rank: int = 0, lengths: torch.Tensor | None = None, batch_size: int = 1):
        # DistributedSampler.__init__ is not called: it wants a dataset and a process group, and
        # every method it would set up is overridden here
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must lie in [0, num_replicas={num_replicas}), got {rank}")
        self.size, self.num_samples = size, num_samples
        self.num_replicas, self.rank = num_replicas, rank
        self.seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
        self.epoch = self.skip = 0
        self.lengths, self.batch_size = lengths, batch_size

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def __len__(self) -> int:
        return (self.size if self.num_samples is None else self.num_samples) // self.num_replicas

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = (torch.randperm(self.size, generator=generator) if self.num_samples is None
                 else torch.randint(0, self.size, (self.num_samples,), generator=generator))
        if self.num_replicas > 1:
            order = order[self.rank : len(self) * self.num_replicas : self.num_replicas]
        if self.lengths is not None:
            order = self._bucketed(order, generator)
        skip, self.skip = self.skip, 0
        return iter(order[skip:].tolist())

    def _bucketed(self, order: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`order` regrouped into batches of similar length, in random batch order; the tail that
        fills no batch stays last (the loader drops it)."""
        full = len(order) // self.batch_size * self.batch_size
        pool = self.POOL * self.batch_size
        runs = [run[torch.argsort(self.lengths[run], stable=True)] for run in order[:full].split(pool)]
        batches = torch.cat(runs).view(-1, self.batch_size) if runs else order[:0].view(0, self.batch_size)
        batches = batches[torch.randperm(len(batches), generator=generator)]
        return torch.cat([batches.flatten(), order[full:]])


def cut_width(lengths: torch.Tensor, seq_len: int) -> int:
    """Columns a batch of texts of `lengths` keeps when cut after its longest text and its end pad."""
    return min(seq_len, int(lengths.max()) + 1)


def cut_padding(rows: list) -> list:
    """Collate sentence examples (ids, mask[, attributes]) and cut them to `cut_width`: the
    length-bucketing loader's collate."""
    ids, mask, *rest = default_collate(rows)
    keep = cut_width(mask.sum(1), ids.shape[1])
    return [ids[:, :keep], mask[:, :keep], *rest]


class ResumableLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch: Lightning saves its `state_dict` (the sampler's
    seed and epoch, and how many batches of the epoch were handed out) in each checkpoint, and a
    resumed run continues the epoch with the batch it would have drawn next. It draws worker
    seeds from its own generator, so loading data never moves the global RNG. Over a
    `StreamWindows` (streaming) the same state lives in the dataset, and an epoch is one pass."""

    def __init__(self, dataset, *args, **kwargs):  # DataLoader's own signature: Lightning rebuilds loaders from it
        super().__init__(dataset, *args, **kwargs)
        self.served = 0

    def __iter__(self):
        stream = self.dataset if isinstance(self.dataset, StreamWindows) else None
        if stream is not None:
            stream.batch_size, self.served = self.batch_size, stream.skip_batches
        else:  # each rank's EpochShuffle skips within its own share (see there)
            self.served = getattr(self.sampler, "skip", 0) // self.batch_size
        for batch in super().__iter__():
            self.served += 1  # counted as handed out, not as read ahead by workers
            yield batch
        if stream is not None:  # the pass is over: the next one is a new epoch (workers see it: not persistent)
            stream.epoch, stream.skip_batches = stream.epoch + 1, 0

    def state_dict(self) -> dict:
        if isinstance(self.dataset, StreamWindows):
            return {"seed": self.dataset.seed, "epoch": self.dataset.epoch, "batches": self.served}
        if not isinstance(self.sampler, EpochShuffle):
            return {}
        return {"seed": self.sampler.seed, "epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict) -> None:
        if state and isinstance(self.dataset, StreamWindows):
            self.dataset.seed, self.dataset.epoch, self.dataset.skip_batches = state["seed"], state["epoch"], state["batches"]
            return
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
        bucket_lengths: without packing, training batches of texts of similar length, each cut
            after its longest text and the pad that ends it (`EpochShuffle`, `cut_padding`): fewer
            pad positions computed per step. The network then rarely sees long runs of padding,
            so sample at the data's lengths with the sampler's `trim_padding`.
        num_examples: size of the embedded corpus (training part).
        corpus_seed: seed of the embedded corpus.
        num_workers: DataLoader worker processes.
        num_proc: processes of the batched `datasets.map` that tokenizes packed file and hub
            data (None: one; the tokenizer itself already runs on every core).
        streaming: packed hub (or file) data read as a stream and tokenized on the fly into
            windows (`StreamWindows`): nothing is stored, validation is the end of the first
            `sample_chars` characters (or `val_dataset`'s first `sample_chars`).
        cache_dir: where packed data's token cache lives (default: `cdlm-tokens` in the datasets
            cache, HF_DATASETS_CACHE). Packed file and hub data is tokenized once (batched
            `datasets.map`, its Arrow cache in the datasets cache) into a flat file of uint16/uint32
            ids per split, keyed by the data (a file's path, size and mtime; a hub dataset's name,
            config, split and fingerprint), the tokenizer and the split settings; windows are read
            from it memory-mapped, so memory stays bounded whatever the corpus size, and a second
            start reads the cache instead of tokenizing.
        sample_chars: characters of the training split read to choose the tokenizer and seq_len
            and to train the tokenizer; a split this small or smaller is read whole. Packed data
            caches the choice and the trained tokenizer beside its tokens.
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
        bucket_lengths: bool = False,
        batch_size: int = 64,
        val_fraction: float = 0.05,
        num_examples: int = 50000,
        corpus_seed: int = 0,
        num_workers: int = 0,
        num_proc: int | None = None,
        streaming: bool = False,
        cache_dir: str | None = None,
        sample_chars: int = 20_000_000,
    ):
        super().__init__()
        if num_proc is not None and num_proc < 1:
            raise ValueError(f"num_proc must be positive (or null for one process), got {num_proc}")
        if sample_chars < 1:
            raise ValueError(f"sample_chars must be positive, got {sample_chars}")
        if streaming and (not packing or dataset == EMBEDDED):
            raise ValueError(f"streaming=true reads packed text of a file or hub dataset: needs packing=true and a dataset, "
                             f"not {'the embedded corpus' if dataset == EMBEDDED else 'packing=false'}")
        if seq_len is not None and seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        if tokenizer is not None and tokenizer not in KINDS and not Path(tokenizer).is_file():
            raise ValueError(f"tokenizer {tokenizer!r} is neither one of {', '.join(KINDS)} nor a tokenizer.json file")
        self.save_hyperparameters()
        if bucket_lengths and packing:
            raise ValueError("bucket_lengths=true groups texts of one example each by length: needs packing=false")
        if condition_column is not None and packing:
            raise ValueError(f"condition_column={condition_column!r} needs one text per example (packing=false)")
        self._texts: tuple[list[str], list[str]] | None = None
        self._conditions: tuple[list[str], list[str]] | None = None
        self._tokenizer = None
        self._attribute_vocab: AttributeVocab | None = None
        self._sources: dict = {}  # packed data: (rows, column, lines) of the training / validation source
        self._splits: dict = {}  # packed data: where the held-out part of the training source starts
        self._prepared: dict | None = None  # packed data: the choice and the trained tokenizer (`_prep`)
        self._token_meta: dict | None = None  # packed data: the token cache (`_tokens`)
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

   # --- packed text of files and hub datasets: beyond memory ------------------------------------

    @property
    def packed_files(self) -> bool:
        """Packed text of a file or hub dataset: tokenized once into the memory-mapped token cache
        (or, with `streaming`, on the fly), never held in memory."""
        return bool(self.hparams.packing) and not self.is_embedded

    def _source(self, val: bool = False) -> tuple[str, str]:
        h = self.hparams
        return (h.val_dataset, "validation") if val else (h.dataset, "train")

    def _rows(self, val: bool = False):
        """(rows, column, lines) of the training source or of `val_dataset` (`load_rows`), loaded once."""
        if val not in self._sources:
            h = self.hparams
            name, split = self._source(val)
            self._sources[val] = load_rows(name, h.text_column, split, h.dataset_config, h.streaming)
        return self._sources[val]

    def _identity(self, val: bool = False) -> dict:
        h = self.hparams
        name, split = self._source(val)
        local = _local_file(name)
        if local is not None:  # known without reading it: a second start touches nothing
            return {**streams.file_identity(local[0]), "column": None if local[1] == "text" else h.text_column}
        identity = {"hub": name, "config": h.dataset_config, "split": split, "column": h.text_column}
        if not h.streaming:  # the loaded data's own fingerprint: a new revision is new data
            identity["fingerprint"] = getattr(self._rows(val)[0], "_fingerprint", None)
        return identity

    def _data_identity(self) -> dict:
        """What the token stream of both splits depends on, apart from the tokenizer."""
        h = self.hparams
        return {"train": self._identity(), "val": self._identity(True) if h.val_dataset else h.val_fraction,
                "streaming": h.streaming}

    def _text_sample(self) -> list[str]:
        """The training texts (one per example) that choose and train the tokenizer: the first
        `sample_chars` characters' worth; all of them for a smaller split or the embedded corpus."""
        train = self.texts()[0]
        if self.is_embedded:
            return train
        total = 0
        for n, text in enumerate(train, 1):
            total += len(text)
            if total >= self.hparams.sample_chars:
                return train[:n]
        return train

    def _packed_sample(self) -> tuple[list[str], str]:
        """(training texts to choose and train the tokenizer on, what the data is) for packed data,
        reading about `sample_chars` characters of the training split: running text as one text,
        rows as rows (as `texts()` gives them)."""
        h = self.hparams
        limit = h.sample_chars
        local = _local_file(h.dataset)
        if h.streaming:
            head, column, lines = self._stream_head()
            train = head[: self._stream_cut(head)]
            texts = ["".join(train)] if lines else [t for t in streams.clean_rows(train) if t]
            if not "".join(texts).strip():
                raise ValueError(f"dataset {h.dataset!r} holds no text")
            return texts, f"a stream, its first {sum(map(len, texts)):,} characters read to choose"
        if local is not None and local[1] == "text":  # read directly: exact, and only the head of a big file
            need = limit if h.val_dataset else math.ceil(limit / (1 - h.val_fraction)) + 1
            try:
                with open(local[0], encoding="utf-8") as f:
                    head = f.read(need)
                    whole = not f.read(1)
            except UnicodeDecodeError as err:
                raise ValueError(f"dataset file {h.dataset!r} is not UTF-8 text (byte {err.start}: {err.reason})") from None
            if whole:  # as before: the training part of the whole text
                if not head.strip():
                    raise ValueError(f"dataset {h.dataset!r} holds no text")
                text = head if h.val_dataset else head[: int(len(head) * (1 - h.val_fraction))]
                return [text], f"running text of {len(text):,} characters"
            size = local[0].stat().st_size
            return [head[:limit]], f"running text of {size:,} bytes, its first {limit:,} characters read to choose"
        rows, column, _ = self._rows()
        split = self._row_split()
        if split["single"] is not None:
            text = streams.clean_rows([rows[split["single"]][column]])[0]
            at = len(text) if h.val_dataset else int(len(text) * (1 - h.val_fraction))
            return [text[:at][:limit]], f"running text of {at:,} characters"
        texts, total, end = [], 0, split["val_start"]
        for chunk in _text_chunks(rows, column, h.dataset, 0, end):
            for text in streams.clean_rows(chunk.to_pylist()):
                if text:
                    texts.append(text)
                    total += len(text)
            if total >= limit:
                break
        if total < limit:  # every training row read: as before
            return texts, f"running text of {total:,} characters"
        return texts, f"running text of {split['train_rows']:,} rows, the first {total:,} characters read to choose"

    def _prep(self) -> dict:
        """What `resolve` and the tokenizer take from packed data: what it is, the tokenizer kind
        chosen (and why) and the tokenizer trained on the sample. Cached on disk beside the
        tokens, so that a second start (and every DDP rank) reads none of the data for it."""
        if self._prepared is None:
            h = self.hparams
            key = streams.key_of({"prep": self._data_identity(), "tokenizer": h.tokenizer, "vocab_size": h.vocab_size,
                                  "sample_chars": h.sample_chars})
            entry = streams.cache_root(h.cache_dir) / "prep" / f"{key}.json"
            prep = streams.read_json(entry)
            if prep is None:
                texts, what = self._packed_sample()
                prep, kind = {"what": what, "why": None}, h.tokenizer
                if kind is None:
                    kind, prep["why"] = choose_tokenizer(texts, h.vocab_size)
                prep["kind"] = kind
                prep["tokenizer_json"] = (train_tokenizer(training_texts(texts), kind=kind, vocab_size=h.vocab_size).to_str()
                                          if kind in KINDS else None)
                streams.write_json_atomic(entry, prep)
            self._prepared = prep
        return self._prepared

    def _row_split(self) -> dict:
        """Where the held-out part of the training rows starts, as `texts()` splits them: the last
        `val_fraction` of the non-empty rows, or the end of a single row's text. One pass over the
        Arrow column (memory-mapped), a chunk at a time."""
        if "rows" not in self._splits:
            import pyarrow as pa
            import pyarrow.compute as pc

            h = self.hparams
            rows, column, _ = self._rows()
            masks = []
            for chunk in _text_chunks(rows, column, h.dataset):
                text = pc.fill_null(pc.cast(chunk, pa.large_string()), "")
                masks.append(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0).to_numpy(zero_copy_only=False))
            nonempty = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)  # one byte a row
            where = np.flatnonzero(nonempty)
            if not len(where):
                raise ValueError(f"dataset {h.dataset!r} holds no text")
            split = {"single": None, "val_start": len(nonempty), "train_rows": len(where)}
            if len(where) == 1:
                split["single"] = int(where[0])
            elif not h.val_dataset:
                cut = int(len(where) * (1 - h.val_fraction))
                if cut < 1 or cut >= len(where):
                    raise ValueError(f"dataset {h.dataset!r} has {len(where)} texts, too few to hold out a validation split")
                split.update(val_start=int(where[cut]), train_rows=cut)
            self._splits["rows"] = split
        return self._splits["rows"]

    def _line_split(self) -> tuple[int, int, str]:
        """(piece, offset in it, its text) where the held-out end of a .txt file starts: at
        character int(total · (1 − val_fraction)), as `texts()` cuts the whole text."""
        import pyarrow.compute as pc

        h = self.hparams
        rows, column, _ = self._rows()
        chunks = list(_text_chunks(rows, column, h.dataset))
        total = sum(pc.sum(pc.utf8_length(c)).as_py() or 0 for c in chunks)
        if not total or not any(pc.sum(pc.utf8_length(pc.utf8_trim_whitespace(c))).as_py() for c in chunks):
            raise ValueError(f"dataset {h.dataset!r} holds no text")
        at, before, row = int(total * (1 - h.val_fraction)), 0, 0
        for chunk in chunks:
            lengths = pc.utf8_length(chunk).to_numpy(zero_copy_only=False)
            ends = before + np.cumsum(lengths)
            if ends[-1] > at:
                i = int(np.searchsorted(ends, at, side="right"))
                start = int(ends[i] - lengths[i])
                return row + i, at - start, chunk[i].as_py()
            before, row = int(ends[-1]), row + len(chunk)
        raise AssertionError("the split point lies inside the text")

    def _tokens(self) -> dict:
        """The token cache of packed data: built on first use (batched `datasets.map`), else reused.
        Says in one line which, with the figures."""
        if self._token_meta is None:
            import hashlib
            import time

            h = self.hparams
            tokenizer_json = self.tokenizer_json()
            key = streams.key_of({"tokens": self._data_identity(),
                                  "tokenizer": hashlib.sha256(tokenizer_json.encode()).hexdigest()})
            cache = streams.CacheFolder(streams.cache_root(h.cache_dir), key)
            meta, name = cache.meta(), Path(h.dataset).name
            if meta is None:
                start = time.perf_counter()
                meta = cache.build(lambda folder: self._write_tokens(folder, tokenizer_json))
                seconds = time.perf_counter() - start
                self._say(f"cdlm: tokens {name}: {meta['train_tokens']:,} training and {meta['val_tokens']:,} validation "
                          f"tokens ({meta['dtype']}) in {seconds:.1f} s, num_proc={h.num_proc or 1}; cached in {cache.path}")
            else:
                self._say(f"cdlm: tokens {name}: {meta['train_tokens']:,} training and {meta['val_tokens']:,} validation "
                          f"tokens from the cache {cache.path}")
            self._token_meta = {**meta, "path": str(cache.path)}
        return self._token_meta

    def _tokenized(self, val: bool, tokenizer_json: str, dtype):
        """The source's rows tokenized by a batched `datasets.map` (its result cached as Arrow in the
        datasets cache, found again by the fingerprint of the call), as an Arrow table of `ids`."""
        from datasets import Features, Sequence, Value

        rows, column, lines = self._rows(val)
        batch = streams.PIECE_BATCH if lines else streams.MAP_BATCH  # memory: a batch's encodings, and its ids until written
        out = rows.map(streams.encode_batch, batched=True, batch_size=batch, writer_batch_size=batch, num_proc=self.hparams.num_proc,
                       remove_columns=rows.column_names,
                       fn_kwargs={"tokenizer_json": tokenizer_json, "column": column, "rows": not lines},
                       features=Features({"ids": Sequence(Value(np.dtype(dtype).name))}))
        return out.data.table

    def _write_tokens(self, folder: Path, tokenizer_json: str) -> dict:
        """Fill a cache folder: train.bin and val.bin, the ids of each split end to end."""
        h = self.hparams
        tok = self.tokenizer
        dtype = streams.token_dtype(tok.get_vocab_size())
        train, val = streams.TokenWriter(folder / "train.bin", dtype), streams.TokenWriter(folder / "val.bin", dtype)

        def sep(is_val: bool) -> int:  # tokens of the newline that ends each row (json/csv/hub), cut at the split's end
            return 0 if self._rows(is_val)[2] else len(streams.encode_texts(tok, ["\n"])[0])

        def piece(text: str) -> list[int]:
            return streams.encode_texts(tok, [text])[0] if text else []

        rows, column, lines = self._rows()
        single = None if lines else self._row_split()["single"]
        if single is not None:  # one row: its text is cut by characters, as texts() cuts it
            text = streams.clean_rows([rows[single][column]])[0]
            at = len(text) if h.val_dataset else int(len(text) * (1 - h.val_fraction))
            train.write(piece(text[:at]))
            if not h.val_dataset:
                val.write(piece(text[at:]))
        else:
            table = self._tokenized(False, tokenizer_json, dtype)
            if h.val_dataset:
                train.write_arrow(table, 0, table.num_rows)
                train.cut(sep(False))
            elif lines:
                line, offset, text = self._line_split()
                train.write_arrow(table, 0, line)
                train.write(piece(text[:offset]))
                val.write(piece(text[offset:]))
                val.write_arrow(table, line + 1, table.num_rows)
            else:
                start = self._row_split()["val_start"]
                train.write_arrow(table, 0, start)
                train.cut(sep(False))
                val.write_arrow(table, start, table.num_rows)
                val.cut(sep(False))
        if h.val_dataset:
            table = self._tokenized(True, tokenizer_json, dtype)
            val.write_arrow(table, 0, table.num_rows)
            val.cut(sep(True))
        return {"dtype": np.dtype(dtype).name, "train_tokens": train.close(), "val_tokens": val.close(),
                "source": self._data_identity()}

    def _stream_head(self, val: bool = False) -> tuple[list, str, bool]:
        """(the first rows of a streamed source, up to `sample_chars` characters; column; lines)."""
        rows, column, lines = self._rows(val)
        head, total = [], 0
        try:
            for row in rows:
                value = row[column]
                head.append(value)
                total += len(value) if lines else len(streams.clean_rows([value])[0])
                if total >= self.hparams.sample_chars:
                    break
        except UnicodeDecodeError as err:
            raise ValueError(f"dataset file {self._source(val)[0]!r} is not UTF-8 text (byte {err.start}: {err.reason})") from None
        return head, column, lines

    def _stream_cut(self, head: list) -> int:
        """Rows of the head that train; the rest of the head validates (without `val_dataset`)."""
        if self.hparams.val_dataset:
            return len(head)
        cut = int(len(head) * (1 - self.hparams.val_fraction))
        if cut < 1 or cut >= len(head):
            raise ValueError(f"dataset {self.hparams.dataset!r} streams {len(head)} rows in its first "
                             f"{self.hparams.sample_chars:,} characters, too few to hold out a validation split")
        return cut

    def _stream_sets(self) -> tuple[StreamWindows, WindowDataset]:
        """Streaming: training windows tokenized on the fly, and validation windows of the held-out
        rows (the end of the head, or `val_dataset`'s head), tokenized into memory (bounded)."""
        h = self.hparams
        tok = self.tokenizer
        head, column, lines = self._stream_head()
        cut = self._stream_cut(head)
        held, val_lines = (head[cut:], lines) if not h.val_dataset else (self._stream_head(True)[0], self._rows(True)[2])
        texts = held if val_lines else [t for t in streams.clean_rows(held) if t]
        sep = [] if val_lines else streams.encode_texts(tok, ["\n"])[0]
        ids = [i for seq in streams.encode_texts(tok, texts) for i in seq + sep][: -len(sep) or None]
        val_set = WindowDataset(torch.tensor(ids, dtype=torch.long), h.seq_len, stride=h.seq_len)
        exclude = (0, 0) if h.val_dataset else (cut, len(head))
        seed = int(torch.randint(0, 2**62, ()))  # as EpochShuffle's: from the global RNG, then in checkpoints
        train_set = StreamWindows(self._rows()[0], self.tokenizer_json(), column, lines, h.seq_len, exclude, seed=seed)
        return train_set, val_set

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
        prep = self._prep() if self.packed_files else None
        train = None if prep else self._text_sample()
        if h.tokenizer is None and self._tokenizer is None:  # (a tokenizer given by set_tokenizer is kept)
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
            if h.tokenizer in KINDS and self.packed_files:
                prep = self._prep()
                if prep.get("tokenizer_json") is None or prep["kind"] != h.tokenizer:
                    raise RuntimeError(f"tokenizer {h.tokenizer!r} was not trained by _prep")  # a bug, not a user error
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
        self._token_meta = None  # the token cache is the tokenizer's
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

    def prepare_data(self) -> None:
        """Lightning calls this on one process per node before `setup` on every rank: packed data's
        token cache is built here once, and each rank then opens it."""
        if self.packed_files and not self.hparams.streaming:
            self.resolve()
            self._tokens()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.resolve()
        L_ = self.hparams.seq_len
        if self.packed_files and self.hparams.streaming:
            self.train_set, self.val_set = self._stream_sets()
        elif self.packed_files:
            meta = self._tokens()
            folder = Path(meta["path"])
            train_set = TokenWindows(folder / "train.bin", meta["dtype"], L_, stride=1)
            self.val_set = TokenWindows(folder / "val.bin", meta["dtype"], L_, stride=L_)
            self.train_set = train_set
        elif self.hparams.packing:
            train, val = self.texts()
            self.train_set, self.val_set = self._encode_stream(train, True), self._encode_stream(val, False)
        else:
            train, val = self.texts()
            cond = self.conditions() or (None, None)
            train_set = self._encode_sentences(train, cond[0])  # both checked before either is kept
            self.val_set = self._encode_sentences(val, cond[1], split="validation")
            self.train_set = train_set

    def _loader(self, ds, train: bool) -> DataLoader:
        h = self.hparams
        workers = {"num_workers": h.num_workers, "persistent_workers": h.num_workers > 0}
        if not train:
            return DataLoader(ds, batch_size=h.batch_size, shuffle=False, **workers)
        replicas, rank = self._replicas()
        if isinstance(ds, StreamWindows):
            ds.num_replicas, ds.rank, ds.seed = replicas, rank, self._shared(ds.seed)
            # workers not persistent: each pass's workers must see the dataset's new epoch
            return ResumableLoader(ds, batch_size=h.batch_size, drop_last=True, num_workers=h.num_workers)
        # windows of a stream: an epoch is as many random windows as the stream holds end to end
        epoch_size = (ds.num_tokens if isinstance(ds, TokenWindows) else len(ds.tokens)) // h.seq_len \
            if isinstance(ds, WindowDataset) else None
        bucket = h.bucket_lengths and isinstance(ds, TensorDataset)
        order = EpochShuffle(len(ds), epoch_size, num_replicas=replicas, rank=rank,
                             lengths=ds.tensors[1].sum(1) if bucket else None, batch_size=h.batch_size)
        order.seed = self._shared(order.seed)
        return ResumableLoader(ds, batch_size=h.batch_size, sampler=order, drop_last=True,
                               collate_fn=cut_padding if bucket else None,
                               generator=torch.Generator().manual_seed(order.seed), **workers)

    def _replicas(self) -> tuple[int, int]:
        """(ranks, this rank) of the trainer's parallel strategy; (1, 0) in one process."""
        trainer = getattr(self, "trainer", None)
        kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
        return (kwargs["num_replicas"], kwargs["rank"]) if kwargs else (1, 0)

    def _shared(self, seed: int) -> int:
        """Rank 0's seed on every rank: without `seed_everything` each process draws its own, and
        the ranks' shares of an epoch would overlap."""
        if self._replicas()[0] == 1:
            return seed
        return int(self.trainer.strategy.broadcast(seed, src=0))

    def train_dataloader(self) -> DataLoader:
        self.setup()
        loader = self._loader(self.train_set, train=True)
        if isinstance(self.train_set, StreamWindows):
            return loader
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
