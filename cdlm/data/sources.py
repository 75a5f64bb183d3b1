"""Where texts come from: the embedded corpus, local files (txt, json/jsonl, csv) and hub
datasets, read as lists of texts split into training and validation (`read_splits`), or as
Arrow rows for packed text beyond memory (`load_rows`)."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from cdlm.data import corpus
from cdlm.data import stream as streams
from cdlm.data.config import SourceSettings

EMBEDDED = "embedded"

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
    local = local_file(dataset)
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


def local_file(dataset: str) -> tuple[Path, str] | None:
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
    local = local_file(dataset)
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


def arrow_chunks(rows, column: str, name: str, start: int = 0, stop: int | None = None):
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


class Splits(NamedTuple):
    """(training, validation) texts, and their meaning representations with a condition column."""

    train: list[str]
    val: list[str]
    conditions: tuple[list[str], list[str]] | None


def read_splits(dataset: str, val_dataset: str | None, condition_column: str | None, whole_file: bool,
                num_examples: int, source: SourceSettings) -> Splits:
    """The texts of `dataset` split for training and validation: `val_dataset`'s, else the last
    `val_fraction` of the texts (of a single running text, of its characters) validate. The
    embedded corpus draws `num_examples` records to train and a share to validate; any
    `condition_column` gives it the generator's records."""
    conditioned = condition_column is not None
    if dataset == EMBEDDED:
        n_val = max(1, int(num_examples * source.val_fraction))
        train_pairs = corpus.generate(num_examples, seed=source.corpus_seed)
        val_pairs = corpus.generate(n_val, seed=source.corpus_seed + 1)
        conditions = ([r.to_mr() for _, r in train_pairs], [r.to_mr() for _, r in val_pairs]) if conditioned else None
        return Splits([t for t, _ in train_pairs], [t for t, _ in val_pairs], conditions)
    column, config = source.text_column, source.dataset_config
    loaded = load_texts(dataset, column, whole_file=whole_file, config=config, condition_column=condition_column)
    train, train_cond = loaded if conditioned else (loaded, None)
    if val_dataset is not None:
        loaded = load_texts(val_dataset, column, split="validation", whole_file=whole_file, config=config,
                            condition_column=condition_column)
        val, val_cond = loaded if conditioned else (loaded, None)
        return Splits(train, val, (train_cond, val_cond) if conditioned else None)
    cut = int(len(train) * (1 - source.val_fraction))
    if len(train) == 1:  # one running text: the first part trains, the rest validates
        text = train[0]
        at = int(len(text) * (1 - source.val_fraction))
        return Splits([text[:at]], [text[at:]], None)
    if cut < 1 or cut >= len(train):
        raise ValueError(f"dataset {dataset!r} has {len(train)} texts, too few to hold out a validation split")
    return Splits(train[:cut], train[cut:], (train_cond[:cut], train_cond[cut:]) if conditioned else None)
