"""Packed text of files and hub datasets beyond memory: the head read to choose and train the
tokenizer (cached beside the tokens), the held-out split found without loading the column, and
the token cache built once by a batched `datasets.map` (or, streaming, windows tokenized on the
fly). The mechanics (cache folders, writers, window datasets) are in stream.py."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from cdlm.data import stream as streams
from cdlm.data.choose import choose_tokenizer, training_texts
from cdlm.data.config import LoadingSettings, SourceSettings
from cdlm.data.sources import arrow_chunks, load_rows, local_file
from cdlm.data.stream import StreamWindows, WindowDataset
from cdlm.data.tokenizer import KINDS, train_tokenizer


@rank_zero_only
def say(line: str) -> None:
    """One line on stderr for the user, from one process only."""
    print(line, file=sys.stderr, flush=True)


class PackedData:
    """The packed text of `dataset` (and `val_dataset`): never held in memory, tokenized once into
    the memory-mapped token cache, or with `loading.streaming` on the fly."""

    def __init__(self, dataset: str, val_dataset: str | None, source: SourceSettings, loading: LoadingSettings):
        self.dataset, self.val_dataset, self.source, self.loading = dataset, val_dataset, source, loading
        self._sources: dict = {}  # (rows, column, lines) of the training / validation source
        self._split: dict | None = None  # where the held-out part of the training rows starts
        self._prepared: dict | None = None  # the choice and the trained tokenizer (`prep`)
        self._token_meta: dict | None = None  # the token cache (`tokens`)

    def _source(self, val: bool = False) -> tuple[str, str]:
        return (self.val_dataset, "validation") if val else (self.dataset, "train")

    def rows(self, val: bool = False):
        """(rows, column, lines) of the training source or of `val_dataset` (`load_rows`), loaded once."""
        if val not in self._sources:
            name, split = self._source(val)
            self._sources[val] = load_rows(name, self.source.text_column, split, self.source.dataset_config,
                                           self.loading.streaming)
        return self._sources[val]

    def _identity(self, val: bool = False) -> dict:
        name, split = self._source(val)
        local = local_file(name)
        if local is not None:  # known without reading it: a second start touches nothing
            return {**streams.file_identity(local[0]), "column": None if local[1] == "text" else self.source.text_column}
        identity = {"hub": name, "config": self.source.dataset_config, "split": split, "column": self.source.text_column}
        if not self.loading.streaming:  # the loaded data's own fingerprint: a new revision is new data
            identity["fingerprint"] = getattr(self.rows(val)[0], "_fingerprint", None)
        return identity

    def identity(self) -> dict:
        """What the token stream of both splits depends on, apart from the tokenizer."""
        return {"train": self._identity(), "val": self._identity(True) if self.val_dataset else self.source.val_fraction,
                "streaming": self.loading.streaming}

    def _sample(self) -> tuple[list[str], str]:
        """(training texts to choose and train the tokenizer on, what the data is), reading about
        `sample_chars` characters of the training split: running text as one text, rows as rows
        (as `read_splits` gives them)."""
        limit, fraction = self.loading.sample_chars, self.source.val_fraction
        local = local_file(self.dataset)
        if self.loading.streaming:
            head, column, lines = self.stream_head()
            train = head[: self.stream_cut(head)]
            texts = ["".join(train)] if lines else [t for t in streams.clean_rows(train) if t]
            if not "".join(texts).strip():
                raise ValueError(f"dataset {self.dataset!r} holds no text")
            return texts, f"a stream, its first {sum(map(len, texts)):,} characters read to choose"
        if local is not None and local[1] == "text":  # read directly: exact, and only the head of a big file
            need = limit if self.val_dataset else math.ceil(limit / (1 - fraction)) + 1
            try:
                with open(local[0], encoding="utf-8") as f:
                    head = f.read(need)
                    whole = not f.read(1)
            except UnicodeDecodeError as err:
                raise ValueError(f"dataset file {self.dataset!r} is not UTF-8 text (byte {err.start}: {err.reason})") from None
            if whole:  # as before: the training part of the whole text
                if not head.strip():
                    raise ValueError(f"dataset {self.dataset!r} holds no text")
                text = head if self.val_dataset else head[: int(len(head) * (1 - fraction))]
                return [text], f"running text of {len(text):,} characters"
            size = local[0].stat().st_size
            return [head[:limit]], f"running text of {size:,} bytes, its first {limit:,} characters read to choose"
        rows, column, _ = self.rows()
        split = self.row_split()
        if split["single"] is not None:
            text = streams.clean_rows([rows[split["single"]][column]])[0]
            at = len(text) if self.val_dataset else int(len(text) * (1 - fraction))
            return [text[:at][:limit]], f"running text of {at:,} characters"
        texts, total, end = [], 0, split["val_start"]
        for chunk in arrow_chunks(rows, column, self.dataset, 0, end):
            for text in streams.clean_rows(chunk.to_pylist()):
                if text:
                    texts.append(text)
                    total += len(text)
            if total >= limit:
                break
        if total < limit:  # every training row read: as before
            return texts, f"running text of {total:,} characters"
        return texts, f"running text of {split['train_rows']:,} rows, the first {total:,} characters read to choose"

    def prep(self, tokenizer: str | None, vocab_size: int) -> dict:
        """What the data is ("what"), the tokenizer kind chosen where `tokenizer` is None ("kind",
        "why") and the tokenizer trained on the sample ("tokenizer_json", for a kind). Cached on
        disk beside the tokens, so that a second start (and every DDP rank) reads none of the
        data for it."""
        if self._prepared is None:
            key = streams.key_of({"prep": self.identity(), "tokenizer": tokenizer, "vocab_size": vocab_size,
                                  "sample_chars": self.loading.sample_chars})
            entry = streams.cache_root(self.loading.cache_dir) / "prep" / f"{key}.json"
            prep = streams.read_json(entry)
            if prep is None:
                texts, what = self._sample()
                prep, kind = {"what": what, "why": None}, tokenizer
                if kind is None:
                    kind, prep["why"] = choose_tokenizer(texts, vocab_size)
                prep["kind"] = kind
                prep["tokenizer_json"] = (train_tokenizer(training_texts(texts), kind=kind, vocab_size=vocab_size).to_str()
                                          if kind in KINDS else None)
                streams.write_json_atomic(entry, prep)
            self._prepared = prep
        return self._prepared

    def row_split(self) -> dict:
        """Where the held-out part of the training rows starts, as `read_splits` splits them: the
        last `val_fraction` of the non-empty rows, or the end of a single row's text. One pass
        over the Arrow column (memory-mapped), a chunk at a time."""
        if self._split is None:
            import pyarrow as pa
            import pyarrow.compute as pc

            rows, column, _ = self.rows()
            masks = []
            for chunk in arrow_chunks(rows, column, self.dataset):
                text = pc.fill_null(pc.cast(chunk, pa.large_string()), "")
                masks.append(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0).to_numpy(zero_copy_only=False))
            nonempty = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)  # one byte a row
            where = np.flatnonzero(nonempty)
            if not len(where):
                raise ValueError(f"dataset {self.dataset!r} holds no text")
            split = {"single": None, "val_start": len(nonempty), "train_rows": len(where)}
            if len(where) == 1:
                split["single"] = int(where[0])
            elif not self.val_dataset:
                cut = int(len(where) * (1 - self.source.val_fraction))
                if cut < 1 or cut >= len(where):
                    raise ValueError(f"dataset {self.dataset!r} has {len(where)} texts, too few to hold out a validation split")
                split.update(val_start=int(where[cut]), train_rows=cut)
            self._split = split
        return self._split

    def _line_split(self) -> tuple[int, int, str]:
        """(piece, offset in it, its text) where the held-out end of a .txt file starts: at
        character int(total · (1 − val_fraction)), as `read_splits` cuts the whole text."""
        import pyarrow.compute as pc

        rows, column, _ = self.rows()
        chunks = list(arrow_chunks(rows, column, self.dataset))
        total = sum(pc.sum(pc.utf8_length(c)).as_py() or 0 for c in chunks)
        if not total or not any(pc.sum(pc.utf8_length(pc.utf8_trim_whitespace(c))).as_py() for c in chunks):
            raise ValueError(f"dataset {self.dataset!r} holds no text")
        at, before, row = int(total * (1 - self.source.val_fraction)), 0, 0
        for chunk in chunks:
            lengths = pc.utf8_length(chunk).to_numpy(zero_copy_only=False)
            ends = before + np.cumsum(lengths)
            if ends[-1] > at:
                i = int(np.searchsorted(ends, at, side="right"))
                start = int(ends[i] - lengths[i])
                return row + i, at - start, chunk[i].as_py()
            before, row = int(ends[-1]), row + len(chunk)
        raise AssertionError("the split point lies inside the text")

    def tokens(self, tokenizer) -> dict:
        """The token cache of the data under `tokenizer`: built on first use (batched
        `datasets.map`), else reused. Says in one line which, with the figures."""
        if self._token_meta is None:
            import hashlib
            import time

            tokenizer_json = tokenizer.to_str()
            key = streams.key_of({"tokens": self.identity(),
                                  "tokenizer": hashlib.sha256(tokenizer_json.encode()).hexdigest()})
            cache = streams.CacheFolder(streams.cache_root(self.loading.cache_dir), key)
            meta, name = cache.meta(), Path(self.dataset).name
            if meta is None:
                start = time.perf_counter()
                meta = cache.build(lambda folder: self._write_tokens(folder, tokenizer, tokenizer_json))
                seconds = time.perf_counter() - start
                say(f"cdlm: tokens {name}: {meta['train_tokens']:,} training and {meta['val_tokens']:,} validation "
                    f"tokens ({meta['dtype']}) in {seconds:.1f} s, num_proc={self.loading.num_proc or 1}; cached in {cache.path}")
            else:
                say(f"cdlm: tokens {name}: {meta['train_tokens']:,} training and {meta['val_tokens']:,} validation "
                    f"tokens from the cache {cache.path}")
            self._token_meta = {**meta, "path": str(cache.path)}
        return self._token_meta

    def _tokenized(self, val: bool, tokenizer_json: str, dtype):
        """The source's rows tokenized by a batched `datasets.map` (its result cached as Arrow in the
        datasets cache, found again by the fingerprint of the call), as an Arrow table of `ids`."""
        from datasets import Features, Sequence, Value

        rows, column, lines = self.rows(val)
        batch = streams.PIECE_BATCH if lines else streams.MAP_BATCH  # memory: a batch's encodings, and its ids until written
        out = rows.map(streams.encode_batch, batched=True, batch_size=batch, writer_batch_size=batch,
                       num_proc=self.loading.num_proc, remove_columns=rows.column_names,
                       fn_kwargs={"tokenizer_json": tokenizer_json, "column": column, "rows": not lines},
                       features=Features({"ids": Sequence(Value(np.dtype(dtype).name))}))
        return out.data.table

    def _write_tokens(self, folder: Path, tok, tokenizer_json: str) -> dict:
        """Fill a cache folder: train.bin and val.bin, the ids of each split end to end."""
        dtype = streams.token_dtype(tok.get_vocab_size())
        train, val = streams.TokenWriter(folder / "train.bin", dtype), streams.TokenWriter(folder / "val.bin", dtype)

        def sep(is_val: bool) -> int:  # tokens of the newline that ends each row (json/csv/hub), cut at the split's end
            return 0 if self.rows(is_val)[2] else len(streams.encode_texts(tok, ["\n"])[0])

        def piece(text: str) -> list[int]:
            return streams.encode_texts(tok, [text])[0] if text else []

        rows, column, lines = self.rows()
        single = None if lines else self.row_split()["single"]
        if single is not None:  # one row: its text is cut by characters, as read_splits cuts it
            text = streams.clean_rows([rows[single][column]])[0]
            at = len(text) if self.val_dataset else int(len(text) * (1 - self.source.val_fraction))
            train.write(piece(text[:at]))
            if not self.val_dataset:
                val.write(piece(text[at:]))
        else:
            table = self._tokenized(False, tokenizer_json, dtype)
            if self.val_dataset:
                train.write_arrow(table, 0, table.num_rows)
                train.cut(sep(False))
            elif lines:
                line, offset, text = self._line_split()
                train.write_arrow(table, 0, line)
                train.write(piece(text[:offset]))
                val.write(piece(text[offset:]))
                val.write_arrow(table, line + 1, table.num_rows)
            else:
                start = self.row_split()["val_start"]
                train.write_arrow(table, 0, start)
                train.cut(sep(False))
                val.write_arrow(table, start, table.num_rows)
                val.cut(sep(False))
        if self.val_dataset:
            table = self._tokenized(True, tokenizer_json, dtype)
            val.write_arrow(table, 0, table.num_rows)
            val.cut(sep(True))
        return {"dtype": np.dtype(dtype).name, "train_tokens": train.close(), "val_tokens": val.close(),
                "source": self.identity()}

    def stream_head(self, val: bool = False) -> tuple[list, str, bool]:
        """(the first rows of a streamed source, up to `sample_chars` characters; column; lines)."""
        rows, column, lines = self.rows(val)
        head, total = [], 0
        try:
            for row in rows:
                value = row[column]
                head.append(value)
                total += len(value) if lines else len(streams.clean_rows([value])[0])
                if total >= self.loading.sample_chars:
                    break
        except UnicodeDecodeError as err:
            raise ValueError(f"dataset file {self._source(val)[0]!r} is not UTF-8 text (byte {err.start}: {err.reason})") from None
        return head, column, lines

    def stream_cut(self, head: list) -> int:
        """Rows of the head that train; the rest of the head validates (without `val_dataset`)."""
        if self.val_dataset:
            return len(head)
        cut = int(len(head) * (1 - self.source.val_fraction))
        if cut < 1 or cut >= len(head):
            raise ValueError(f"dataset {self.dataset!r} streams {len(head)} rows in its first "
                             f"{self.loading.sample_chars:,} characters, too few to hold out a validation split")
        return cut

    def stream_sets(self, tok, seq_len: int) -> tuple[StreamWindows, WindowDataset]:
        """Streaming: training windows tokenized on the fly, and validation windows of the held-out
        rows (the end of the head, or `val_dataset`'s head), tokenized into memory (bounded)."""
        head, column, lines = self.stream_head()
        cut = self.stream_cut(head)
        held, val_lines = (head[cut:], lines) if not self.val_dataset else (self.stream_head(True)[0], self.rows(True)[2])
        texts = held if val_lines else [t for t in streams.clean_rows(held) if t]
        sep = [] if val_lines else streams.encode_texts(tok, ["\n"])[0]
        ids = [i for seq in streams.encode_texts(tok, texts) for i in seq + sep][: -len(sep) or None]
        val_set = WindowDataset(torch.tensor(ids, dtype=torch.long), seq_len, stride=seq_len)
        exclude = (0, 0) if self.val_dataset else (cut, len(head))
        seed = int(torch.randint(0, 2**62, ()))  # as EpochShuffle's: from the global RNG, then in checkpoints
        train_set = StreamWindows(self.rows()[0], tok.to_str(), column, lines, seq_len, exclude, seed=seed)
        return train_set, val_set
