"""The continuous samplers against an exact denoiser. For i.i.d. tokens from a known skewed unigram,
the per-token posterior (`cdlm.networks.PosteriorNetwork`) is the exact x0 denoiser of the data, so
every solver of `generate`, with restarts and with each rounding, must sample that unigram at
temperature 1: a chi-square test of the sampled token counts. Lower temperatures must sharpen it."""

import pytest
import torch
from scipy.stats import chisquare

import solvers
from cdlm.models.config import make_sde
from cdlm.networks import PosteriorNetwork, TokenEmbedding
from cdlm.sampling.continuous import generate
from cdlm.sampling.plan import Plan
from cdlm.sampling.settings import SamplerConfig

V, D, L, N = 12, 16, 32, 64  # 2,048 tokens a test
UNIGRAM = torch.tensor([0.3, 0.18, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02, 0.015, 0.005])
SLOW = {"torchdiffeq:implicit_adams", "torchdiffeq:dopri8", "torchsde:milstein", "torchsde:srk"}
# implicit integrators build a finite-difference Jacobian, a network call per coordinate: refused
IMPLICIT = {"torchdiffeq:scipy_solver", "scipy:Radau", "scipy:BDF", "scipy:LSODA"}
# steps each method needs here; reversible Heun is far off at 20 (near uniform) and right at 100
STEPS = {"torchsde:reversible_heun": 100}


@pytest.fixture(scope="module")
def exact():
    torch.manual_seed(0)
    return PosteriorNetwork(TokenEmbedding(V, D), UNIGRAM.log()), make_sde("log_linear", -6.0, 2.0)


def sample_counts(net, sde, seed: int = 0, **settings) -> torch.Tensor:
    sampler = SamplerConfig(**{"steps": 50, "score_temperature": 1.0, **settings})
    gen = generate(net, sde, sampler, Plan.build(N, L), generator=torch.Generator().manual_seed(seed))
    return torch.bincount(gen.ids.reshape(-1), minlength=V).double()


def assert_unigram(counts: torch.Tensor, what: str) -> None:
    p = chisquare(counts.numpy(), (UNIGRAM.double() * counts.sum()).numpy()).pvalue
    assert p > 1e-3, f"{what}: token counts {counts.tolist()} are not the unigram's (chi-square p = {p:.2g})"


@pytest.mark.parametrize("method", [m if m not in SLOW else pytest.param(m, marks=pytest.mark.slow)
                                    for m in solvers.available() if m not in IMPLICIT])
def test_every_solver_samples_the_unigram_at_temperature_one(exact, method):
    steps = STEPS.get(method, 20 if ":" in method else 50)  # the external integrators: 20 (cost)
    assert_unigram(sample_counts(*exact, method=method, steps=steps), method)


@pytest.mark.parametrize("method", sorted(IMPLICIT))
def test_implicit_integrators_are_refused_naming_an_explicit_one(exact, method):
    with pytest.raises(ValueError, match="implicit solver.*scipy:RK45"):
        sample_counts(*exact, method=method, steps=10)


@pytest.mark.parametrize("rounding", ["logits", "nearest", "last"])
@pytest.mark.parametrize("restarts", [0, 3])
def test_restarts_and_each_rounding_keep_the_unigram(exact, rounding, restarts):
    counts = sample_counts(*exact, method="ddim", rounding=rounding, restarts=restarts, restart_steps=5,
                           restart_log_snr=-2.0, restart_log_snr_end=0.0)
    assert_unigram(counts, f"ddim, {restarts} restarts, rounding {rounding}")


def test_a_lower_temperature_sharpens_towards_the_frequent_tokens(exact):
    top = lambda c: float(c[:3].sum() / c.sum())  # noqa: E731  (the three most frequent tokens)
    assert top(sample_counts(*exact, method="ddim", score_temperature=0.5)) > top(UNIGRAM) + 0.05


def test_sampling_noise_is_not_the_stream_that_initialised_the_model():
    """Seeded with the seed that initialised the weights, sample 0's starting noise was the initial
    embedding table: position p pointed at token p, and the sample opened with every token once."""
    from cdlm.networks import TokenEmbedding
    from cdlm.sampling.base import noise_generator

    torch.manual_seed(0)  # as seed_everything(0) before the model is built
    emb = TokenEmbedding(65, 16)
    positions = torch.arange(65)
    replayed = torch.randn(128, 16, generator=torch.Generator().manual_seed(0))[:65]
    assert torch.equal(emb.nearest(replayed), positions)  # the coincidence a plain seed makes
    own = torch.randn(128, 16, generator=noise_generator(0))[:65]
    assert (emb.nearest(own) == positions).float().mean() < 0.1
