"""Every sampler in float32 and under bf16 autocast: tokens, or a one-line error (the solvers
raise NonFiniteError on any NaN/inf state or denoiser output, so returned tokens come from finite states)."""

import pytest
import torch

import solvers
from cdlm.checkpoints import load_checkpoint
from cdlm.sampling.settings import IMPLICIT_METHODS


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load_checkpoint(str(tiny_ckpt))[0]


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("method", solvers.available())
def test_every_method_samples_finite_tokens_or_says_why(model, method, bf16):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if method in IMPLICIT_METHODS:  # refused: see IMPLICIT_WHY
            with pytest.raises(ValueError, match="implicit solver") as err:
                model.sample_ids(2, method=method, steps=4, seed=0)
            assert "\n" not in str(err.value)
            return
        gen = model.sample_ids(2, method=method, steps=4, seed=0)
    vocab = model.tokenizer.get_vocab_size()
    assert gen.ids.shape == (2, model.hparams.seq_len)
    assert int(gen.ids.min()) >= 0 and int(gen.ids.max()) < vocab and gen.nfe > 0
