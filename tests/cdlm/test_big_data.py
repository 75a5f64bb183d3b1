"""Packed text beyond memory: the memory-mapped token cache (the same ids as encoding the text in
memory, built once and reused, rebuilt when the file changes), the bounded sample that chooses
the tokenizer, streaming, and the epoch order sharded by rank with exact resume."""

import json
import pickle
import random
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from cdlm.data import TextDataModule
from cdlm.data.loaders import EpochShuffle, ResumableLoader
from cdlm.data.stream import StreamWindows, TokenWindows
from cdlm.data.tokenizer import encode

WORDS = ["".join(random.Random(i).choice("abcdefgh") for _ in range(2 + i % 6)) for i in range(400)]


def _lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def _packed(tmp_path, path, **kwargs) -> TextDataModule:
    settings = {"packing": True, "seq_len": 16, "batch_size": 4, "vocab_size": 400}
    loading = {"cache_dir": str(tmp_path / "cache"), **kwargs.pop("loading", {})}
    return TextDataModule(dataset=str(path), **{**settings, **kwargs}, loading=loading)


def _ids(ds) -> list[int]:
    return ds.tokens.long().tolist()


@pytest.mark.parametrize("tokenizer", ["char", None])  # None: chosen (BPE for running text)
def test_a_text_file_is_tokenized_as_the_text_in_memory(tmp_path, tokenizer):
    path = tmp_path / "book.txt"  # blank lines and spaces around line breaks, which BPE merges across them
    lines = _lines(6000)
    lines[10::97] = [" " + line + "  " for line in lines[10::97]]
    path.write_text("\n".join(lines) + "\n\n\n")
    dm = _packed(tmp_path, path, tokenizer=tokenizer)
    dm.setup()
    assert isinstance(dm.train_set, TokenWindows) and isinstance(dm.val_set, TokenWindows)
    train, val = dm.texts()  # the in-memory split: the last 5% of the characters validate
    assert _ids(dm.train_set) == encode(dm.tokenizer, train[0])
    assert _ids(dm.val_set) == encode(dm.tokenizer, val[0])
    assert dm.train_set.array.dtype.name == "uint16"
    ids, mask = next(iter(dm.train_dataloader()))
    assert ids.shape == (4, 16) and ids.dtype == torch.long and mask.all()
    assert len(pickle.dumps(dm.train_set)) < 2000  # workers get the file's name, never its tokens


def test_json_rows_are_joined_by_newlines_as_in_memory(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = _lines(1500, seed=1) + [""] * 3  # empty rows are skipped, as texts() skips them
    path.write_text("\n".join(json.dumps({"body": r, "n": i}) for i, r in enumerate(rows)))
    for tokenizer in ("char", "word"):  # the newline is a token of char, none of word level
        dm = _packed(tmp_path, path, tokenizer=tokenizer, source={"text_column": "body"})
        dm.setup()
        train, val = dm.texts()
        assert _ids(dm.train_set) == encode(dm.tokenizer, "\n".join(train))
        assert _ids(dm.val_set) == encode(dm.tokenizer, "\n".join(val))


def test_a_second_start_reuses_the_cache_and_a_changed_file_is_tokenized_again(tmp_path, capsys, monkeypatch):
    import datasets

    path = tmp_path / "book.txt"
    path.write_text("\n".join(_lines(2000)))
    first = _packed(tmp_path, path)
    first.setup()
    assert "validation tokens (uint16) in" in capsys.readouterr().err

    def no(*args, **kwargs):
        raise AssertionError("read the data again")

    monkeypatch.setattr(datasets, "load_dataset", no)  # neither the file, nor the tokenizer's training, nor map
    monkeypatch.setattr("cdlm.data.packed.train_tokenizer", no)
    second = _packed(tmp_path, path)
    second.setup()
    err = capsys.readouterr().err
    assert "validation tokens from the cache" in err and "chose tokenizer=bpe" in err
    assert second.tokenizer_json() == first.tokenizer_json() and _ids(second.train_set) == _ids(first.train_set)
    monkeypatch.undo()

    path.write_text("\n".join(_lines(2000, seed=5)))  # new content (size and mtime change)
    third = _packed(tmp_path, path)
    third.setup()
    assert "from the cache" not in capsys.readouterr().err
    assert _ids(third.train_set) == encode(third.tokenizer, third.texts()[0][0])


def test_two_map_processes_give_the_same_tokens(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n".join(_lines(3000, seed=2)))
    one, two = _packed(tmp_path / "a", path, tokenizer="char"), _packed(tmp_path / "b", path, tokenizer="char", loading={"num_proc": 2})
    one.setup(), two.setup()
    assert _ids(one.train_set) == _ids(two.train_set) and _ids(one.val_set) == _ids(two.val_set)


def test_the_tokenizer_is_chosen_and_trained_on_a_bounded_head(tmp_path, capsys):
    path = tmp_path / "big.txt"
    head = "anna likes tea .\n" * 200  # 3,400 characters of few words ...
    path.write_text(head + "\n".join(_lines(3000, seed=3)))  # ... then many
    dm = _packed(tmp_path, path, tokenizer="word", seq_len=None, loading={"sample_chars": 1000})
    dm.setup()
    assert "its first 1,000 characters read to choose" in capsys.readouterr().err
    assert set(dm.tokenizer.get_vocab()) == {"[PAD]", "[UNK]", "anna", "likes", "tea", "."}  # the head's words only
    assert dm.train_set.num_tokens > 10_000  # yet every line is tokenized


def test_epoch_order_is_sharded_by_rank_and_resumes_exactly():
    single = list(EpochShuffle(103, seed=7))
    ranks = [list(EpochShuffle(103, seed=7, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 51 and not set(ranks[0]) & set(ranks[1])
    for b in range(51 // 4):  # batch b of both ranks (4 each) is batch b of one process (8)
        assert sorted(ranks[0][4 * b: 4 * b + 4] + ranks[1][4 * b: 4 * b + 4]) == sorted(single[8 * b: 8 * b + 8])
    assert list(EpochShuffle(103, seed=7, num_replicas=1)) == single  # one process: the order it always had
    with pytest.raises(ValueError, match="rank must lie in \\[0, num_replicas=2\\), got 2"):
        EpochShuffle(10, num_replicas=2, rank=2)


def test_memory_mapped_windows_resume_exactly_mid_epoch(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n".join(_lines(1500, seed=4)))
    for rank in (0, 1):
        def loader():
            dm = _packed(tmp_path, path, tokenizer="char")
            dm.setup()
            ds = dm.train_set
            order = EpochShuffle(len(ds), ds.num_tokens // 16, seed=3, num_replicas=2, rank=rank)
            return ResumableLoader(ds, batch_size=4, sampler=order, drop_last=True)

        whole = [b[0] for b in loader()]
        first = loader()
        it = iter(first)
        seen = [next(it)[0] for _ in range(5)]
        state = first.state_dict()
        assert state["batches"] == 5
        resumed = loader()
        resumed.load_state_dict(state)
        rest = [b[0] for b in resumed]
        assert len(seen) + len(rest) == len(whole)
        assert all(torch.equal(a, b) for a, b in zip(seen + rest, whole))


def test_streaming_a_local_file_windows_on_the_fly_and_resumes(tmp_path, capsys):
    path = tmp_path / "book.txt"
    lines = _lines(3000, seed=6)
    path.write_text("\n".join(lines) + "\n")
    dm = _packed(tmp_path, path, tokenizer="char", loading={"streaming": True, "sample_chars": 20_000})
    dm.setup()
    assert isinstance(dm.train_set, StreamWindows) and len(dm.val_set) > 0
    loader = dm.train_dataloader()
    batches = [b[0] for b in loader]
    assert all(b.shape == (4, 16) for b in batches)
    held, tok = dm.train_set.exclude, dm.tokenizer
    text = "".join(line + "\n" for i, line in enumerate(lines) if not held[0] <= i < held[1])
    seen = Counter(tuple(w.tolist()) for b in batches for w in b)
    stream = encode(tok, text)  # line by line equals the whole text for char level
    windows = Counter(tuple(stream[i: i + 16]) for i in range(0, len(stream) - 15, 16))
    assert not seen - windows  # every window drawn is one of the stream's, none twice ...
    assert seen.total() == windows.total() // 4 * 4  # ... and all but the last partial batch are drawn
    # resume: the loader's state skips the batches served, the rest follow as in one pass
    state = {"seed": dm.train_set.seed, "epoch": 0, "batches": 7}
    again = dm.train_dataloader()
    again.load_state_dict(state)
    rest = [b[0] for b in again]
    assert all(torch.equal(a, b) for a, b in zip(rest, batches[7:])) and len(rest) == len(batches) - 7
    # two ranks: disjoint shares of the same windows
    shares = []
    for rank in (0, 1):
        ds = StreamWindows(dm.train_set.rows, dm.tokenizer_json(), "text", True, 16, held, seed=1,
                           num_replicas=2, rank=rank)
        shares.append(Counter(tuple(w.tolist()) for w, _ in ds))
    # a partition of all but the last incomplete pair, equal per rank: no rank steps (and all-reduces) alone
    assert not (shares[0] + shares[1]) - windows  # (as multisets: a window may occur more than once)
    assert shares[0].total() == shares[1].total() == windows.total() // 2
    # DataLoader workers each read the whole stream (datasets would hand a worker only its shards)
    # and take their share of the windows: two workers deliver what one process does
    ds = StreamWindows(dm.train_set.rows, dm.tokenizer_json(), "text", True, 16, held, seed=1)
    two = Counter(tuple(w.tolist()) for b in DataLoader(ds, batch_size=1, num_workers=2) for w in b[0])
    assert not two - windows and two.total() == windows.total() // 2 * 2


def test_bad_big_data_options_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="^num_proc must be positive \\(or null for one process\\), got 0$"):
        TextDataModule(dataset="x.txt", loading={"num_proc": 0})
    with pytest.raises(ValueError, match="^sample_chars must be positive, got 0$"):
        TextDataModule(dataset="x.txt", loading={"sample_chars": 0})
    with pytest.raises(ValueError, match="needs packing=true and a dataset, not packing=false"):
        TextDataModule(dataset="x.txt", loading={"streaming": True})
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n" * 10)
    with pytest.raises(ValueError, match="^dataset file .*bad.txt' is not UTF-8 text"):
        _packed(tmp_path, bad).setup()
