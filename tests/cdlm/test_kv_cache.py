"""The KV-cache decoding path of the autoregressive baseline: the same
logits as a full causal pass, and the same samples as the recompute path for a fixed seed."""

import pytest
import torch

from cdlm.networks import CausalLM, NetworkConfig


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    net = CausalLM(23, 16, NetworkConfig(width=32, depth=2, heads=4, **kw)).eval()
    return net


@pytest.mark.parametrize("positions", ["learned", "alibi", "learned_alibi", "rotary"])
def test_incremental_logits_match_a_full_pass(positions):
    net = _net(positions=positions)
    ids = torch.randint(0, 23, (3, 16))
    with torch.no_grad():
        full = net(ids)
        cache = net.new_cache()
        # a prefill of 5, a chunk of 4 after it (explicit mask), then one token at a time
        parts = [net(ids[:, :5], cache=cache), net(ids[:, 5:9], cache=cache)]
        parts += [net(ids[:, p: p + 1], cache=cache) for p in range(9, 16)]
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exceed max_len"):
        net(ids[:, :1], cache=cache)


def test_cache_buffers_are_preallocated_once():
    net = _net()
    cache = net.new_cache()
    with torch.no_grad():
        net(torch.zeros(2, 3, dtype=torch.long), cache=cache)
        ptrs = [k.data_ptr() for k in cache.k]
        net(torch.zeros(2, 1, dtype=torch.long), cache=cache)
    assert [k.data_ptr() for k in cache.k] == ptrs and cache.k[0].shape == (2, 4, 16, 8)


@pytest.mark.parametrize("prefix", [None, "the eagle"])
def test_cached_sampling_equals_recompute(tiny_ar_ckpt, prefix):
    from cdlm.checkpoints import load_checkpoint

    model, _ = load_checkpoint(str(tiny_ar_ckpt))
    cached = model.sample_ids(24, seed=3, prefix=prefix, batch_size=10).ids
    recomputed = model.sample_ids(24, seed=3, prefix=prefix, batch_size=10, use_cache=False).ids
    assert torch.equal(cached, recomputed)
    assert cached.shape == (24, model.hparams.seq_len) and (cached != model.pad_id).any()


@pytest.mark.parametrize("positions", ["alibi", "rotary"])
def test_positions_without_a_table_still_see_order(positions):
    """With no position table, only the attention terms tell the backbone where a token is: without
    them it would be permutation-equivariant. With the causal mask, early tokens see nothing after them."""
    from cdlm.networks import Backbone

    torch.manual_seed(0)
    net = Backbone(NetworkConfig(width=32, depth=2, heads=4, positions=positions), 16, conditioned=False).eval()
    assert net.position is None
    h, perm = torch.randn(2, 13, 32), torch.randperm(13)
    with torch.no_grad():
        assert not torch.allclose(net(h[:, perm]), net(h)[:, perm], atol=1e-3)
        torch.testing.assert_close(net(h[:, :4], causal=True), net(h, causal=True)[:, :4], rtol=1e-5, atol=1e-5)


def test_unknown_positions_is_one_line():
    with pytest.raises(ValueError, match="positions must be one of learned, alibi, learned_alibi, rotary, got abs"):
        _net(positions="abs")
