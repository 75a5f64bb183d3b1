"""Token streams beyond memory: packed text tokenized once into a memory-mapped array of token ids
(a cache folder keyed by the data and the tokenizer), and windows read from it; or, streaming,
windows tokenized on the fly.

`PackedData` (packed.py) decides what to tokenize; this module holds the mechanics: cache
keys and atomic writes, the batched `datasets.map` function, the memmap writer and the two
window datasets."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

FORMAT = 1  # bump when what a cache folder holds changes: old folders are then never read
MAP_BATCH = 1000  # rows per `datasets.map` batch (and per on-the-fly encode in streaming)
PIECE_BATCH = 64  # pieces of a .txt file per batch: about 1M characters, whose encodings take ~100 MB
STREAM_SHUFFLE_WINDOWS = 1024  # streaming: windows are drawn at random from a buffer this large


def cache_root(cache_dir: str | None) -> Path:
    """Where token caches live: `cache_dir`, else beside the datasets cache (HF_DATASETS_CACHE)."""
    if cache_dir is not None:
        return Path(cache_dir)
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "cdlm-tokens"


def key_of(parts: dict) -> str:
    """A stable hash of what determines a cache entry (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_identity(path: Path) -> dict:
    """A local file as the cache knows it: where it is, its size and its modification time (a
    content hash would read the whole file on every start)."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_json_atomic(path: Path, value: dict) -> None:
    """Write, then rename: a reader (another rank, a later start) sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def token_dtype(vocab_size: int):
    """The narrowest unsigned type that holds every id: half the disk and page cache of int32."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


CHUNK_CHARS = 1 << 14  # a .txt file is tokenized in pieces of about this many characters
_SAFE_CUT = re.compile(r"\S\n(?=\S)")  # a newline between two non-space characters


def text_chunks(path: str, size: int, mtime_ns: int, chunk_chars: int = CHUNK_CHARS):
    """The text of a file (read as `Path.read_text` reads it: UTF-8, universal newlines) in
    pieces of about `chunk_chars` characters, each a row {"text": piece}: concatenated they are
    the file. A piece ends only at a newline between two non-space characters, because
    byte-level BPE's pre-tokenizer (GPT-2's pattern) joins runs of whitespace across line breaks:
    cut there, the pieces' tokens end to end are exactly the whole text's. (`size` and `mtime_ns`
    are not read: they make the datasets cache of these rows the file's version.)"""
    with open(path, encoding="utf-8") as f:
        buffer, start = "", 0
        while True:
            block = f.read(1 << 20)
            buffer = buffer[start:] + block
            start = 0
            while len(buffer) - start > chunk_chars:
                found = _SAFE_CUT.search(buffer, start + chunk_chars)
                if found is None:  # no safe cut yet: read on
                    break
                yield {"text": buffer[start : found.end()]}
                start = found.end()
            if not block:
                break
        if buffer[start:]:
            yield {"text": buffer[start:]}


_TOKENIZERS: dict[str, object] = {}  # per process (map workers included): one tokenizer per JSON


def _tokenizer(tokenizer_json: str):
    tok = _TOKENIZERS.get(tokenizer_json)
    if tok is None:
        from tokenizers import Tokenizer

        tok = _TOKENIZERS[tokenizer_json] = Tokenizer.from_str(tokenizer_json)
    return tok


def encode_texts(tok, texts: list[str]) -> list[list[int]]:
    fast = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: they are never used here
    return [e.ids for e in fast(texts, add_special_tokens=False)]


def clean_rows(values) -> list[str]:
    """Rows as `load_texts` reads them: None as empty, stripped."""
    return ["" if v is None else str(v).strip() for v in values]


def encode_batch(batch: dict, tokenizer_json: str, column: str, rows: bool) -> dict:
    """The `datasets.map` function (batched; top level so that worker processes can import it, and
    given the tokenizer as a JSON string so that datasets' fingerprint of the call is stable and
    its Arrow cache is found again).

    Pieces of a .txt file (`rows=False`, `text_chunks`) are encoded as they are: end to end, their
    ids are the whole text's. Rows (json/csv/hub) are stripped and each non-empty one ends in the
    encoding of a newline: the stream is `"\\n".join(rows)` plus a trailing separator the writer
    cuts."""
    tok = _tokenizer(tokenizer_json)
    if not rows:
        return {"ids": encode_texts(tok, batch[column])}
    texts = clean_rows(batch[column])
    sep = encode_texts(tok, ["\n"])[0]
    return {"ids": [ids + sep if text else [] for ids, text in zip(encode_texts(tok, texts), texts)]}


class TokenWriter:
    """Appends token ids to a flat binary file by plain writes (no writable memmap: its dirty
    pages would count against the process's memory until flushed)."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._file = open(path, "wb")

    def write(self, ids) -> None:
        array = np.asarray(ids, dtype=self.dtype)
        self._file.write(array.tobytes())
        self.count += len(array)

    def write_arrow(self, table, start: int, stop: int) -> None:
        """Rows [start, stop) of an Arrow table's `ids` list column, one record batch at a time."""
        column = table.slice(start, max(0, stop - start)).column("ids")
        for chunk in column.chunks:
            values = chunk.flatten().to_numpy(zero_copy_only=False)
            self.write(values)

    def cut(self, n: int) -> None:
        """Drop the last `n` ids written (the separator after the last row)."""
        n = min(n, self.count)
        self._file.flush()
        self._file.truncate((self.count - n) * self.dtype.itemsize)
        self._file.seek(0, os.SEEK_END)
        self.count -= n

    def close(self) -> int:
        self._file.close()
        return self.count


class CacheFolder:
    """One cache entry: a folder written under a temporary name and renamed when complete, so a
    half-built entry (a killed first start) is never read; `meta.json` describes it."""

    def __init__(self, root: Path, key: str):
        self.root, self.key = root, key
        self.path = root / key

    def meta(self) -> dict | None:
        meta = read_json(self.path / "meta.json")
        return meta if meta and meta.get("format") == FORMAT else None

    def build(self, fill) -> dict:
        """`fill(folder) -> meta` writes the entry's files into a fresh folder; returns its meta."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{self.key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            meta = {"format": FORMAT, **fill(tmp)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            try:
                os.replace(tmp, self.path)
            except OSError:  # another process finished the same entry first: keep theirs
                if self.meta() is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.meta()


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


class TokenWindows(WindowDataset):
    """`WindowDataset` over a memory-mapped token file: windows are read from disk as they are
    drawn, so memory stays bounded whatever the corpus size. The map is opened lazily and
    reopened after pickling (DataLoader workers), never copied."""

    def __init__(self, path: str | Path, dtype: str, seq_len: int, stride: int):
        self.path, self.dtype = str(path), np.dtype(dtype)
        self._array = None
        n = os.path.getsize(self.path) // self.dtype.itemsize
        if n <= seq_len:
            raise ValueError(f"text has {n} tokens, fewer than seq_len={seq_len} + 1")
        self.num_tokens, self.seq_len, self.stride = n, seq_len, stride

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            # copy-on-write: a tensor view is writable (torch warns on read-only arrays) but never writes the file
            self._array = np.memmap(self.path, dtype=self.dtype, mode="c", shape=(self.num_tokens,))
        return self._array

    @property
    def tokens(self) -> torch.Tensor:
        """The whole stream as a tensor view of the map (nothing is read until indexed)."""
        return torch.from_numpy(self.array)

    def __len__(self) -> int:
        return (self.num_tokens - self.seq_len) // self.stride + 1

    def __getitem__(self, i: int):
        start = i * self.stride
        ids = torch.from_numpy(self.array[start : start + self.seq_len].astype(np.int64))
        return ids, torch.ones_like(ids, dtype=torch.bool)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


class StreamWindows(IterableDataset):
    """Windows of `seq_len` tokens cut from rows tokenized on the fly, for data that is read as a
    stream (`datasets` streaming): nothing is stored, each epoch reads the stream again.

    Windows do not overlap; they are drawn at random from a buffer of `STREAM_SHUFFLE_WINDOWS`
    (seeded by seed and epoch), and kept by rank and DataLoader worker (window k goes to
    k mod (ranks · workers)), so every rank reads the whole stream and keeps its share. The
    order is a function of (seed, epoch), so a resumed run skips the `skip` windows it served
    and goes on with the next one: exact, at the price of reading the skipped part again."""

    def __init__(self, rows, tokenizer_json: str, column: str, lines: bool, seq_len: int,
                 exclude: tuple[int, int] = (0, 0), seed: int = 0, shuffle: bool = True,
                 num_replicas: int = 1, rank: int = 0):
        self.rows, self.tokenizer_json, self.column, self.lines = rows, tokenizer_json, column, lines
        self.seq_len, self.exclude, self.seed, self.shuffle = seq_len, exclude, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = self.skip_batches = 0
        self.batch_size = 1

    def _windows(self):
        """Every window of the stream in order (rows [exclude) left out: the held-out part)."""
        buffer: list[int] = []
        batch: list[str] = []
        lo, hi = self.exclude

        def flush():
            texts = batch if self.lines else clean_rows(batch)
            tok = _tokenizer(self.tokenizer_json)
            sep = [] if self.lines else encode_texts(tok, ["\n"])[0]
            for ids, text in zip(encode_texts(tok, texts), texts):
                if text:
                    buffer.extend(ids + sep)
            batch.clear()

        for index, row in enumerate(self._all_rows()):
            if lo <= index < hi:
                continue
            batch.append(row[self.column])
            if len(batch) == MAP_BATCH:
                flush()
                while len(buffer) >= self.seq_len:
                    yield buffer[: self.seq_len]
                    del buffer[: self.seq_len]
        flush()
        while len(buffer) >= self.seq_len:
            yield buffer[: self.seq_len]
            del buffer[: self.seq_len]

    def _all_rows(self):
        """Every row, in every worker: a `datasets` stream iterated plainly inside a DataLoader
        worker hands it only its own shards, and the windows are shared out in `__iter__`."""
        if not hasattr(self.rows, "iter"):
            yield from self.rows
            return
        for batch in self.rows.iter(batch_size=MAP_BATCH):
            yield from ({self.column: text} for text in batch[self.column])

    def _shuffled(self):
        if not self.shuffle:
            yield from self._windows()
            return
        rng = random.Random(self.seed + self.epoch)
        pool = []
        for window in self._windows():
            if len(pool) < STREAM_SHUFFLE_WINDOWS:
                pool.append(window)
                continue
            j = rng.randrange(len(pool))
            yield pool[j]
            pool[j] = window
        rng.shuffle(pool)
        yield from pool

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        share, mine = self.num_replicas * workers, self.rank * workers + worker
        # the DataLoader takes batches from its workers in turn: this worker handed out every
        # workers-th of the `skip_batches` batches already served
        skip = (max(0, self.skip_batches - worker) + workers - 1) // workers * self.batch_size
        kept, held = 0, None
        for k, window in enumerate(self._shuffled()):
            if k % share == mine:
                held = window
            if k % share != share - 1 or held is None:
                continue
            # only complete groups of `share` windows are handed out: every rank and worker gets as
            # many, so no rank runs a step (and an all-reduce) the others never join
            window, held = held, None
            kept += 1
            if kept > skip:
                ids = torch.tensor(window, dtype=torch.long)
                yield ids, torch.ones_like(ids, dtype=torch.bool)
