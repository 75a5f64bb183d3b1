import json

import pytest
import torch

from cdlm.checkpoints import load_checkpoint
from cdlm.cli import main
from cdlm.evaluation import generative_perplexity


def test_ar_checkpoint_samples_and_scores(tiny_ar_ckpt):
    model, data_hparams = load_checkpoint(str(tiny_ar_ckpt))
    assert type(model).__name__ == "AutoregressiveLM" and data_hparams["dataset"] == "embedded"
    gen = model.sample_ids(5, seed=0)
    assert gen.ids.shape == (5, 40) and torch.equal(gen.ids, model.sample_ids(5, seed=0).ids)
    # exact NLL: the sum of per-token terms, and perplexity of a text equals exp(mean NLL)
    text = "the eagle is a pub ."
    ppl = generative_perplexity(model, [text])
    assert 1.0 < ppl < model.tokenizer.get_vocab_size() * 4


def test_eval_reports_issue4_keys(tiny_ckpt, tiny_ar_ckpt, capsys):
    main(["eval", "--ckpt_path", str(tiny_ckpt), "--num_samples", "8", "--steps", "3",
          "--reference_ckpt", str(tiny_ar_ckpt), "--nll_batches", "1"])
    diff = json.loads(capsys.readouterr().out)
    main(["eval", "--ckpt_path", str(tiny_ar_ckpt), "--num_samples", "8", "--reference_ckpt", str(tiny_ar_ckpt),
          "--nll_batches", "1"])
    ar = json.loads(capsys.readouterr().out)
    for result in (diff, ar):
        for key in ("nll_bits_per_token", "nll_bits_per_char", "gen_ppl", "distinct_1", "distinct_2", "distinct_3",
                    "unique", "novel", "validity", "nfe", "method", "steps"):
            assert key in result, key
        assert result["nll_bits_per_token"] > 0 and result["gen_ppl"] > 1
    # bits per token and per character describe the same total
    assert diff["nll_bits_per_char"] < diff["nll_bits_per_token"]


def test_ar_takes_a_prefix_and_rejection_samples_other_constraints(tiny_ar_ckpt, capsys):
    model, _ = load_checkpoint(str(tiny_ar_ckpt))
    ids = model.sample_ids(3, seed=0, prefix="the eagle").ids
    assert (ids[:, :2] == torch.tensor([model.tokenizer.token_to_id(w) for w in ("the", "eagle")])).all()
    with pytest.raises(ValueError, match="cannot take anchors"):
        model.sample_ids(2, anchors={1: "pub"})
    main(["eval", "--ckpt_path", str(tiny_ar_ckpt), "--num_samples", "4", "--anchor", "0=the", "--time_budget", "2",
          "--nll_batches", "0"])
    result = json.loads(capsys.readouterr().out)
    assert result["rejection_tried"] >= 64 and 0 <= result["rejection_acceptance"] <= 1
    if result["rejection_kept"]:
        assert result["constraint_satisfaction"] == 1.0
