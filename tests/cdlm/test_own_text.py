"""Your own text end to end: `cdlm fit --data.dataset FILE` chooses the tokenizer and seq_len from
the file when they are not given, says so in one line, and the model samples."""

import json
import random

import pytest
import torch

from cdlm.cli import main
from cdlm.data import TextDataModule
from cdlm.data.choose import MAX_AUTO_SEQ_LEN, choose_seq_len, choose_tokenizer

FIT = ["--data.batch_size=16", "--model.network.width=32", "--model.network.depth=1", "--model.network.heads=2", "--model.network.embed_dim=8",
       "--model.optim.warmup_steps=5", "--model.val_samples=2", "--model.sampler.steps=4", "--trainer.max_steps=12",
       "--trainer.limit_val_batches=1", "--trainer.val_check_interval=12", "--trainer.check_val_every_n_epoch=null",
       "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--dashboard.figures=false"]
NAMES = ["anna", "bert", "cora", "dave", "elin", "finn"]
THINGS = ["tea", "bread", "soup", "rice", "fish", "cake"]


def short_lines(n: int, rng: random.Random, long_every: int = 0) -> list[str]:
    """Records of a few words, like the embedded corpus (every `long_every`-th one much longer)."""
    lines = []
    for i in range(n):
        words = [rng.choice(NAMES), "likes", rng.choice(THINGS), "and", rng.choice(THINGS), "."]
        if long_every and i % long_every == 0:
            words = words * 8
        lines.append(" ".join(words))
    return lines


def prose(words: int, rng: random.Random) -> str:
    """Running text whose vocabulary is too large for one id per word."""
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    return " ".join(rng.choice(vocab) + ("." if k % 17 == 16 else "") for k in range(words))


def test_word_level_for_short_lines_bpe_for_prose():
    rng = random.Random(0)
    assert choose_tokenizer(short_lines(200, rng), 8000)[0] == "word"
    assert choose_tokenizer([prose(2000, rng)], 8000)[0] == "bpe"  # one running text: long
    paragraphs = [" ".join(short_lines(20, rng)) for _ in range(50)]  # ~120 words a line
    kind, why = choose_tokenizer(paragraphs, 8000)
    assert kind == "bpe" and "within" in why
    many_words = prose(6000, rng).split(".")  # short lines, but thousands of distinct words
    kind, why = choose_tokenizer(many_words, 1000)
    assert kind == "bpe" and "more than vocab_size=1,000" in why


def test_seq_len_covers_99_percent_and_leaves_room_for_the_end():
    lengths = [10] * 990 + [30] * 9 + [500]
    seq_len, why = choose_seq_len(lengths)
    assert seq_len == 16 and sum(n <= seq_len for n in lengths) / len(lengths) >= 0.99
    assert why == "99% of texts within 10 tokens; 10 longer ones (up to 500) are cut"
    assert choose_seq_len([15] * 100) == (16, "99% of texts within 15 tokens")
    assert choose_seq_len([16] * 100)[0] == 24  # a pad after the longest text
    assert choose_seq_len([5000] * 100)[0] == MAX_AUTO_SEQ_LEN


def test_the_data_module_settles_its_choice(tmp_path, capsys):
    path = tmp_path / "records.txt"
    rng = random.Random(1)
    path.write_text("\n".join(short_lines(300, rng, long_every=150)) + "\n")
    dm = TextDataModule(dataset=str(path), batch_size=8)
    assert dm.hparams.seq_len is None  # nothing read yet
    assert dm.seq_len == 8 and dm.hparams.tokenizer == "word" and dm.hparams.truncate  # 2 of 285 texts are long
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "chose tokenizer=word" in line and "seq_len=8" in line
    assert dm.hparams_initial["seq_len"] == 8  # what the logger and the model link compare
    with pytest.warns(UserWarning, match="2 of 285 training texts .* longer than seq_len=8"):
        dm.setup()
    given = TextDataModule(dataset=str(path), tokenizer="char", seq_len=300)
    assert given.seq_len == 300 and given.hparams.tokenizer == "char" and not capsys.readouterr().err
    assert TextDataModule().hparams.seq_len == 40 and TextDataModule().hparams.tokenizer == "word"  # embedded


def test_a_chosen_seq_len_cuts_held_out_texts_longer_than_every_training_text(tmp_path):
    path = tmp_path / "records.txt"  # the held-out tail (the last 5%) alone holds long texts
    path.write_text("\n".join(["anna likes tea ."] * 100 + ["anna likes tea and bread and soup and fish ."] * 5) + "\n")
    dm = TextDataModule(dataset=str(path), batch_size=8)
    assert dm.seq_len == 8 and dm.hparams.truncate
    with pytest.warns(UserWarning, match="5 of 6 validation texts .* longer than seq_len=8"):
        dm.setup()  # not: "pass --data.truncate=true", for a seq_len the user never gave


@pytest.mark.slow
def test_fit_then_sample_on_a_file_of_short_lines(tmp_path, capsys):
    path = tmp_path / "records.txt"
    path.write_text("\n".join(short_lines(400, random.Random(2))) + "\n")
    ckpt = tmp_path / "ckpt"
    main(["fit", f"--data.dataset={path}", *FIT, f"--trainer.default_root_dir={tmp_path}",
          "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
          f"--trainer.callbacks.dirpath={ckpt}", "--trainer.callbacks.save_last=true"])
    chosen = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdlm: data")]
    assert len(chosen) == 1 and "tokenizer=word" in chosen[0] and "seq_len=8" in chosen[0], chosen
    state = torch.load(ckpt / "last.ckpt", weights_only=True)
    assert state["datamodule_hyper_parameters"]["seq_len"] == 8 == state["hyper_parameters"]["seq_len"]
    assert state["datamodule_hyper_parameters"]["tokenizer"] == "word"
    out = tmp_path / "samples.jsonl"
    main(["sample", "--ckpt_path", str(ckpt / "last.ckpt"), "--num_samples", "3", "--output", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["tokens"]) == 8 for r in rows)
    vocab = set(" ".join(short_lines(400, random.Random(2))).split()) | {"[PAD]", "[UNK]"}
    assert all(set(r["tokens"]) <= vocab for r in rows)  # word-level tokens of the file
    result = json.loads(_run(capsys, "eval", "--ckpt_path", str(ckpt / "last.ckpt"), "--num_samples", "4", "--nll_batches", "1"))
    assert result["nll_bits_per_token"] > 0  # the held-out split is rebuilt from the checkpoint's settled choice


@pytest.mark.slow
def test_fit_then_sample_on_running_prose_with_packing(tmp_path, capsys):
    path = tmp_path / "prose.txt"
    path.write_text(prose(6000, random.Random(3)))
    ckpt = tmp_path / "ckpt"
    masked = [a for a in FIT if not a.startswith(("--model.network.embed_dim", "--model.sampler"))]
    main(["fit", "--model=cdlm.MaskedDiffusionLM", f"--data.dataset={path}", "--data.packing=true",
          "--data.vocab_size=600", *masked, "--model.sampler.steps=8",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
          f"--trainer.callbacks.dirpath={ckpt}", "--trainer.callbacks.save_last=true"])
    chosen = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdlm: data")]
    assert len(chosen) == 1 and "tokenizer=bpe" in chosen[0] and "seq_len=128" in chosen[0], chosen
    text = _run(capsys, "sample", "--ckpt_path", str(ckpt / "last.ckpt"), "--num_samples", "2", "--steps", "8")
    assert text.strip()


def test_a_given_seq_len_reaches_the_model(tmp_path):
    path = tmp_path / "records.txt"
    path.write_text("\n".join(short_lines(200, random.Random(4))) + "\n")
    main(["fit", f"--data.dataset={path}", "--data.seq_len=12", *FIT, "--trainer.max_steps=2",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
          f"--trainer.callbacks.dirpath={tmp_path}/ckpt", "--trainer.callbacks.save_last=true"])
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert state["hyper_parameters"]["seq_len"] == 12 == state["datamodule_hyper_parameters"]["seq_len"]


def _run(capsys, *argv) -> str:
    capsys.readouterr()
    main(list(argv))
    return capsys.readouterr().out
