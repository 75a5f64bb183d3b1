"""Context diagnostics (`cdlm.diagnostics`) on cases with known answers: the per-token posterior is
Bayes' rule; a denoiser that is that posterior gains nothing from context and is blind to order;
oracles of a deterministic sequence gain all that the sequence allows, and lose it when shuffled."""

import math

import pytest
import torch
from torch import nn

from cdlm import AutoregressiveLM, DiffusionLM, MaskedDiffusionLM, TextDataModule
from cdlm.diagnostics import diagnose, format_table, shuffled, unigram_log_prior
from cdlm.networks import PosteriorNetwork, TokenEmbedding

CYCLE = 4  # the deterministic sequence repeats this many distinct tokens


@pytest.fixture(scope="module")
def dm():
    dm = TextDataModule(num_examples=64, batch_size=8)
    dm.setup("fit")
    return dm


def tiny(dm, cls, **kw):
    args = dict(network={"width": 32, "depth": 1, "heads": 2}, val_samples=0, **kw)
    if cls is DiffusionLM:
        args["network"]["embed_dim"] = 16
    return cls(tokenizer_json=dm.tokenizer_json(), seq_len=dm.hparams.seq_len, **args)


def cycle_ids(model, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of the cycle t0 t1 t2 t3 t0 ... from random phases [rows, L], the cycle's token ids)."""
    tokens = torch.arange(5, 5 + CYCLE)
    phase = torch.randint(0, CYCLE, (rows, 1), generator=torch.Generator().manual_seed(0))
    return tokens[(phase + torch.arange(model.hparams.seq_len)) % CYCLE], tokens


def test_the_per_token_posterior_is_bayes_rule():
    torch.manual_seed(0)
    emb = TokenEmbedding(7, 5, normalize=False)  # unequal norms: the |e|² term matters
    log_prior = torch.randn(7).log_softmax(-1)
    net = PosteriorNetwork(emb, log_prior)
    x_t, lam = torch.randn(3, 4, 5), torch.tensor([-2.0, 0.0, 1.5])
    logits, x0 = net(x_t, lam)
    alpha, var = torch.sigmoid(lam.double()).sqrt(), torch.sigmoid(-lam.double())
    E = emb.table().double()
    sq = ((x_t.double()[..., None, :] - alpha[:, None, None, None] * E) ** 2).sum(-1)
    exact = torch.softmax(log_prior.double() - sq / (2 * var[:, None, None, None].squeeze(-1)), -1)
    torch.testing.assert_close(torch.softmax(logits.double(), -1), exact, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x0.double(), exact @ E, rtol=1e-4, atol=1e-5)


def test_the_per_token_posterior_itself_gains_nothing_and_ignores_order(dm):
    model = tiny(dm, DiffusionLM)
    ids = dm.val_set.tensors[0][:32]
    log_prior = unigram_log_prior([dm.train_set.tensors[0]], model.tokenizer.get_vocab_size())
    model.ema = PosteriorNetwork(model.ema.embedding, log_prior)
    d = diagnose(model, ids, log_prior, num_times=4)
    assert d["context_bits"] == pytest.approx(0.0, abs=1e-9)
    assert all(abs(r["gap_bits"]) < 1e-6 for r in d["rows"])
    assert abs(d["order_bits"]) < 0.1  # shuffling moves only which noise each token draws
    # from nearly the unigram at log-SNR -6 down to nearly certain at +1
    bits = [r["posterior_bits"] for r in d["rows"]]
    assert bits == sorted(bits, reverse=True) and bits[0] > 0.9 * d["unigram_bits"] and bits[-1] < 0.5 * bits[0]
    assert "per-token posterior" in format_table(d)


class CycleOracle(nn.Module):
    """Knows the cycle: autoregressive, the token after its input; masked, each masked position
    from the nearest unmasked one. Nothing known: uniform over the cycle."""

    def __init__(self, tokens: torch.Tensor, vocab: int, mask_id: int | None = None):
        super().__init__()
        self.tokens, self.vocab, self.mask_id = tokens, vocab, mask_id
        self.index = {int(t): i for i, t in enumerate(tokens)}

    def _logits(self, chosen: list[list[int | None]]) -> torch.Tensor:
        logits = torch.full((len(chosen), len(chosen[0]), self.vocab), -1e4)
        for b, row in enumerate(chosen):
            for i, k in enumerate(row):
                if k is None:
                    logits[b, i, self.tokens] = 0.0
                else:
                    logits[b, i, self.tokens[k]] = 30.0
        return logits

    def forward(self, ids: torch.Tensor, attribute_rows=None, cache=None) -> torch.Tensor:
        rows = ids.tolist()
        if self.mask_id is None:  # autoregressive: input i is token i-1
            return self._logits([[None if t not in self.index else (self.index[t] + 1) % CYCLE for t in r] for r in rows])
        out = []
        for r in rows:
            seen = [j for j, t in enumerate(r) if t != self.mask_id]
            out.append([None if not seen else (self.index[r[j]] + i - j) % CYCLE
                        for i, j in ((i, min(seen, key=lambda j: abs(j - i))) for i in range(len(r)))] if seen
                       else [None] * len(r))
        return self._logits(out)


@pytest.mark.parametrize("cls", [AutoregressiveLM, MaskedDiffusionLM])
def test_an_oracle_of_a_deterministic_sequence_gains_all_it_allows(dm, cls):
    model = tiny(dm, cls)
    ids, tokens = cycle_ids(model, 64)
    V = model.tokenizer.get_vocab_size()
    oracle = CycleOracle(tokens, V, None if cls is AutoregressiveLM else model.mask_id)
    if cls is AutoregressiveLM:
        model.net = oracle
    else:
        model.ema = oracle
    log_prior = torch.full((V,), -1e9)
    log_prior[tokens] = -math.log(CYCLE)
    d = diagnose(model, ids, log_prior, num_times=16)
    L = model.hparams.seq_len
    # only the first token (AR), or the all-masked draw (masked: chance 1/L in the NELBO's count
    # of masked tokens, a Monte Carlo estimate: std about 0.008 here), costs log2(4) = 2 bits
    assert d["reference_bits"] == pytest.approx(2.0)
    assert d["nll_bits"] == pytest.approx(2.0 / L, abs=0.03)
    assert d["context_bits"] == pytest.approx(2.0 - 2.0 / L, abs=0.03)
    assert d["order_bits"] > 1.0  # a shuffled cycle is no longer predictable


def test_shuffling_keeps_padding_and_each_row_s_tokens():
    ids = torch.tensor([[4, 5, 6, 7, 0, 0], [9, 8, 7, 6, 5, 4]])
    real = ids != 0
    mixed = shuffled(ids, real, torch.Generator().manual_seed(1))
    assert torch.equal(mixed[0, 4:], ids[0, 4:])
    assert all(sorted(m.tolist()) == sorted(i.tolist()) for m, i in zip(mixed, ids))
    assert not torch.equal(mixed, ids)


def test_cli_diagnose_prints_a_table_and_one_json_line(tiny_ckpt, capsys):
    import json

    from cdlm.cli import main

    main(["diagnose", "--ckpt_path", str(tiny_ckpt), "--batches", "1", "--num_times", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["kind"] == "continuous" and len(result["rows"]) == 8
    assert {"context_bits", "order_bits", "nll_bits", "reference_bits", "unigram_bits"} <= set(result)
    assert out[0].startswith("continuous: context_bits") and out[2].startswith("| log_snr |")


def test_cli_diagnose_rejects_bad_values_in_one_line(tiny_ckpt, capsys):
    from tests.cdlm.conftest import fails

    assert "--batches must be a positive integer, got 0" in fails(capsys, "diagnose", "--ckpt_path", str(tiny_ckpt),
                                                                   "--batches", "0")
