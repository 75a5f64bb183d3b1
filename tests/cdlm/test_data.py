import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from cdlm.data import TextDataModule, load_texts

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_default_shapes_and_padding():
    dm = TextDataModule(num_examples=300, batch_size=8, seq_len=40)
    dm.setup("fit")
    ids, mask = next(iter(dm.train_dataloader()))
    assert ids.shape == mask.shape == (8, 40)
    assert mask[:, 0].all() and not mask.all()  # sentences start real and end in padding
    assert (ids[~mask] == 0).all()
    text = dm.texts()[0][0]
    assert dm.tokenizer.decode(ids[0][mask[0]].tolist()) in dm.texts()[0]
    assert len(text.split()) <= 40


def test_packed_local_text_splits_first_part_for_training(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("abcdefghij" * 100)
    dm = TextDataModule(dataset=str(path), tokenizer="char", seq_len=16, packing=True, batch_size=4, source={"val_fraction": 0.1})
    train, val = dm.texts()
    assert train[0] + val[0] == "abcdefghij" * 100 and len(val[0]) == 100
    dm.setup("fit")
    ids, mask = next(iter(dm.train_dataloader()))
    assert ids.shape == (4, 16) and mask.all()


def test_csv_column(tmp_path):
    path = tmp_path / "e2e.csv"
    path.write_text('mr,ref\n"name[a]","the a is a pub ."\n"name[b]","the b is a cafe ."\n"name[c]","c is nice ."\n')
    assert load_texts(str(path), "ref") == ["the a is a pub .", "the b is a cafe .", "c is nice ."]
    with pytest.raises(ValueError, match="no column 'text'; columns: mr, ref"):
        load_texts(str(path), "text")


def test_bad_data_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt.*holds no text"):
        load_texts(str(empty))
    with pytest.raises(ValueError, match="missing.txt.*does not exist"):
        load_texts(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="'no-such-user/no-such-dataset'.*offline"):
        load_texts("no-such-user/no-such-dataset")
    with pytest.raises(ValueError, match="seq_len must be at least 2, got 0"):
        TextDataModule(seq_len=0)


@pytest.mark.slow
def test_hub_name_fails_fast_with_the_hub_unreachable(tmp_path):
    # Online mode retries for minutes: whatever the offline variables say, an unreachable hub
    # (here a closed local port) must give one line at once, and a cached dataset must still load.
    script = """
import shutil, sys, time
from pathlib import Path
import datasets
from cdlm.data import load_texts
cache = Path(sys.argv[1])
Path("d.jsonl").write_text('{"text": "a cached row"}\\n')
datasets.load_dataset("json", data_files="d.jsonl", split="train")  # fills the cache, then poses as a hub download
built = next(cache.glob("json/*/*/*/json-train.arrow")).parent
hub = cache / "someone___cached" / "default" / built.parent.name / built.name
shutil.copytree(built, hub)
(hub / "json-train.arrow").rename(hub / "cached-train.arrow")
print(load_texts("someone/cached"))
start = time.monotonic()
try:
    load_texts("someone/some-dataset")
except ValueError as err:
    print(time.monotonic() - start)
    print(err)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_DATASETS_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    cached, seconds, message, *rest = out.stdout.splitlines() + ["", "", ""]
    assert cached == "['a cached row']", out.stderr
    assert float(seconds) < 10 and not rest[0], out.stdout
    assert message == ("dataset 'someone/some-dataset' is neither a local file nor a loadable hub dataset "
                       "(the hub at 127.0.0.1:9 is unreachable)")


def _lines(path, words_per_line):
    path.write_text("\n".join(" ".join(f"w{j}" for j in range(n)) for n in words_per_line))
    return str(path)


# 300 lines: 285 train (two of 100 words, three of 60, the rest 10), 15 validate (10 words)
LONG = [100, 100, 60, 60, 60] + [10] * 295
LONG_ERROR = ("5 of 285 training texts (1.75%) are longer than seq_len=40 tokens; truncating them would drop 180 "
              "of 3,180 tokens (5.66%). seq_len=60 fits 99% of them, seq_len=100 all; pass --data.truncate=true "
              "to cut them anyway")


def test_texts_longer_than_seq_len_stop_with_the_figures(tmp_path):
    dm = TextDataModule(dataset=_lines(tmp_path / "long.txt", LONG), seq_len=40)
    with pytest.raises(ValueError) as err:
        dm.setup()
    assert str(err.value) == LONG_ERROR
    with pytest.raises(ValueError, match="^5 of 285 training texts"):  # nothing half-built is kept
        dm.length_counts()
    dm = TextDataModule(dataset=_lines(tmp_path / "short.txt", [10] * 20), seq_len=40,
                        val_dataset=_lines(tmp_path / "val.txt", [100] * 4))
    with pytest.raises(ValueError, match=r"^4 of 4 validation texts \(100%\).* seq_len=100 fits them all; pass"):
        dm.setup()


def test_truncate_cuts_long_texts_with_a_warning(tmp_path):
    dm = TextDataModule(dataset=_lines(tmp_path / "long.txt", LONG), seq_len=40, truncate=True, batch_size=8)
    with pytest.warns(UserWarning, match=r"^5 of 285 training texts .* truncating them drops 180 of 3,180 tokens"):
        dm.setup()
    ids, mask = next(iter(dm.train_dataloader()))
    assert ids.shape == (8, 40)
    counts = dm.length_counts()
    assert counts[40] == 5 and counts[10] == 280 and sum(counts) == 285  # cut texts count at seq_len


def test_texts_that_fit_load_without_a_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextDataModule(dataset=_lines(tmp_path / "short.txt", [10, 40] * 20), seq_len=40).setup()
        TextDataModule(num_examples=2000, seq_len=40).setup()  # the embedded corpus fits its default


def test_the_spec_is_made_once_and_rebuilds_a_trained_models_data(tmp_path, capsys):
    from cdlm.data import DataSpec

    path = _lines(tmp_path / "lines.txt", [10, 12, 30] * 20)
    dm = TextDataModule(dataset=path, batch_size=4)
    spec = dm.spec
    assert spec is dm.spec and spec.seq_len == dm.hparams.seq_len == dm.hparams_initial["seq_len"]
    assert sum(spec.length_counts) == len(dm.train_set) and spec.attribute_names is None
    assert "chose tokenizer=word" in capsys.readouterr().err
    model_hparams = {"tokenizer_json": spec.tokenizer_json, "seq_len": spec.seq_len, "attribute_names": None,
                     "length_counts": spec.length_counts, "width": 8}
    again = TextDataModule.from_hparams(dict(dm.hparams), DataSpec.from_hparams(model_hparams))
    assert again.spec == spec and again.tokenizer_json() == spec.tokenizer_json
    again.setup()
    assert "chose" not in capsys.readouterr().err  # nothing chosen again: the model's spec is used


def test_flat_data_hyperparameters_of_older_checkpoints_fold_into_their_groups():
    flat = {"dataset": "embedded", "text_column": "text", "val_fraction": 0.1, "corpus_seed": 3, "num_workers": 0,
            "bucket_lengths": True, "num_examples": 100, "seq_len": 40, "tokenizer": "word"}
    dm = TextDataModule.from_hparams(flat)
    assert dm.source.val_fraction == 0.1 and dm.source.corpus_seed == 3 and dm.loading.bucket_lengths
    assert dm.hparams.source["val_fraction"] == 0.1 and "val_fraction" not in dm.hparams
    with pytest.raises(ValueError, match="unknown source setting 'colum'; valid: text_column"):
        TextDataModule(source={"colum": "x"})
