"""Looped backbones: weight-tied passes equal a deeper stack holding copies of the same block."""

import copy

import pytest
import torch

from cdlm.data.corpus import corpus_texts
from cdlm.data.tokenizer import train_tokenizer
from cdlm.networks import Backbone, CausalLM, NetworkConfig


def test_a_loop_is_the_stack_run_again():
    torch.manual_seed(0)
    looped = Backbone(NetworkConfig(width=32, depth=2, heads=2, loops=3), 12, conditioned=False)
    deep = Backbone(NetworkConfig(width=32, depth=6, heads=2), 12, conditioned=False)
    deep.position, deep.norm = looped.position, looped.norm
    deep.blocks = torch.nn.ModuleList(copy.deepcopy(looped.blocks[i % 2]) for i in range(6))
    h = torch.randn(3, 12, 32)
    assert torch.allclose(looped(h), deep(h), atol=1e-6)
    assert not torch.allclose(looped(h), Backbone(NetworkConfig(width=32, depth=2, heads=2), 12, conditioned=False)(h), atol=1e-3)
    assert sum(p.numel() for p in looped.parameters()) < sum(p.numel() for p in deep.parameters())


def test_looped_kv_cache_matches_recompute():
    torch.manual_seed(0)
    net = CausalLM(50, 10, NetworkConfig(width=32, depth=2, heads=2, loops=2)).eval()
    ids = torch.randint(0, 50, (2, 10))
    full = net(ids)
    cache = net.new_cache()
    steps = [net(ids[:, i: i + 1], cache=cache) for i in range(10)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("kind", ["AutoregressiveLM", "MaskedDiffusionLM", "DiffusionLM"])
def test_models_take_loops_and_reject_bad_counts(kind):
    import cdlm

    tok = train_tokenizer(corpus_texts(50, seed=0), kind="word").to_str()
    cls = getattr(cdlm, kind)
    model = cls(tokenizer_json=tok, seq_len=12, network={"width": 32, "depth": 1, "heads": 2, "loops": 2}, val_samples=0)
    assert model.net.backbone.loops == 2
    with pytest.raises(ValueError, match="loops must be a positive integer, got 0"):
        cls(tokenizer_json=tok, seq_len=12, network={"width": 32, "depth": 1, "heads": 2, "loops": 0}, val_samples=0)


def test_a_looped_model_costs_the_compute_of_the_deep_one():
    """bench_scaling turns a budget into steps by FLOPs a token: loops run the blocks again."""
    import sys
    from pathlib import Path

    import cdlm

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_throughput import train_flops_per_token

    tok = train_tokenizer(corpus_texts(50, seed=0), kind="word").to_str()
    shape = dict(tokenizer_json=tok, seq_len=12, val_samples=0)
    looped = cdlm.AutoregressiveLM(network={"width": 32, "heads": 2, "depth": 2, "loops": 3}, **shape)
    deep = cdlm.AutoregressiveLM(network={"width": 32, "heads": 2, "depth": 6}, **shape)
    assert train_flops_per_token("ar", looped, 12) == train_flops_per_token("ar", deep, 12)
