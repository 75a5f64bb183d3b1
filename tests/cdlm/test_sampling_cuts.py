"""The sampling cost cuts: the skipped x0 is exact; trimming padding and grouping by length
are opt-in (they change samples) and keep every sample's length and place."""

from functools import partial
from pathlib import Path

import pytest
import torch

from cdlm.checkpoints import load_checkpoint
from cdlm.models.absorbing import alpha
from cdlm.networks import MaskedNetwork, NetworkConfig
from cdlm.sampling.base import content_lengths, network_length
from cdlm.sampling.denoiser import NetworkCall
from cdlm.sampling.masked import generate
from cdlm.sampling.plan import Plan
from cdlm.sampling.settings import MaskedSamplerConfig

DATA = Path(__file__).resolve().parents[1] / "data"

LINEAR = partial(alpha, "mask_linear")  # the masked process the samplers step through


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(str(DATA / "golden_diffusion.ckpt"))[0]


def widths(net):
    """Record the sequence length of every network call."""
    seen = []
    handle = net.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    return seen, handle


def check_lengths(ids, lengths, pad_id):
    after = torch.arange(ids.shape[1])[None] >= lengths[:, None]
    assert (ids[after] == pad_id).all() and not (ids[~after] == pad_id).any()


def test_helpers():
    known = torch.tensor([[5, -1, 0, 0], [-1, 0, -1, 0], [0, 0, 0, 0]])
    assert content_lengths(known, 0).tolist() == [2, 3, 0]
    assert network_length(known, 0) == 3 and network_length(known[:, :3], 0) is None and network_length(None, 0) is None
    assert network_length(known[2:], 0) == 1  # never an empty sequence
    order = Plan.build(3, 4, lengths=torch.tensor([3, 1, 3]), pad_id=0).length_order()
    assert order.tolist() == [1, 0, 2]  # stable
    assert Plan.build(2, 4, lengths=torch.tensor([2, 2]), pad_id=0).length_order() is None


@pytest.mark.parametrize("options", [dict(length="data"), dict(length=12, anchors={2: "pub"}),
                                     dict(length="data", self_condition_scale=2.0)])
def test_skipping_the_unused_x0_is_exact(model, monkeypatch, options):
    fast = [model.sample_ids(4, seed=s, steps=4, **options).ids for s in (0, 1)]
    monkeypatch.setattr(NetworkCall, "skip_unused_x0", False)
    slow = [model.sample_ids(4, seed=s, steps=4, **options).ids for s in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))


def test_trim_padding_runs_the_network_on_the_longest_content(model):
    lengths = model.data_lengths(8, seed=3)
    seen, handle = widths(model.ema)
    try:
        gen = model.sample_ids(8, seed=3, steps=3, length="data", trim_padding=True)
    finally:
        handle.remove()
    assert set(seen) == {int(lengths.max())} and gen.ids.shape == (8, model.hparams.seq_len)
    check_lengths(gen.ids, lengths, model.pad_id)
    # nothing to cut: the same samples as without
    full = dict(seed=0, steps=3, length=model.hparams.seq_len)
    assert torch.equal(model.sample_ids(3, trim_padding=True, **full).ids, model.sample_ids(3, **full).ids)


def test_group_lengths_keeps_each_samples_length_and_place(model):
    lengths = model.data_lengths(12, seed=5)
    seen, handle = widths(model.ema)
    try:
        gen = model.sample_ids(12, seed=5, steps=3, length="data", trim_padding=True, group_lengths=True, batch_size=4)
    finally:
        handle.remove()
    check_lengths(gen.ids, lengths, model.pad_id)
    expected = {int(g.max()) for g in lengths.sort().values.split(4)}
    assert set(seen) == expected
    again = model.sample_ids(12, seed=5, steps=3, length="data", trim_padding=True, group_lengths=True, batch_size=4)
    assert torch.equal(gen.ids, again.ids)  # deterministic for a seed
    # one length for all: nothing to sort, the ungrouped samples
    assert torch.equal(model.sample_ids(4, seed=1, steps=3, length=9, group_lengths=True, batch_size=2).ids,
                       model.sample_ids(4, seed=1, steps=3, length=9, batch_size=2).ids)


@pytest.mark.parametrize("method", ["ancestral", "low_confidence", "semi_ar"])
def test_masked_cuts(method):
    torch.manual_seed(0)
    net = MaskedNetwork(12, 10, NetworkConfig(width=16, depth=1, heads=2)).eval()
    lengths = torch.tensor([3, 9, 5, 2, 7, 4])
    sampler = MaskedSamplerConfig(method=method, steps=10, block_length=4)
    plan = Plan.build(6, 10, lengths=lengths, pad_id=0)
    run = lambda batch_size=256, **cuts: generate(net, LINEAR, sampler.replace(**cuts), plan,  # noqa: E731
                                                  generator=torch.Generator().manual_seed(0), batch_size=batch_size)
    seen, handle = widths(net)
    try:
        grouped = run(trim_padding=True, group_lengths=True, batch_size=3)
    finally:
        handle.remove()
    assert set(seen) == {4, 9}  # sorted: [2, 3, 4 | 5, 7, 9]
    check_lengths(grouped.ids, lengths, 0)
    assert not (grouped.ids == net.mask_id).any()
    trimmed = run(trim_padding=True)
    check_lengths(trimmed.ids, lengths, 0)
    # lengths that fill the sequence: nothing to cut, the same samples
    full = Plan.build(6, 10, lengths=torch.full((6,), 10), pad_id=0)
    a = generate(net, LINEAR, sampler.replace(trim_padding=True, group_lengths=True), full,
                 generator=torch.Generator().manual_seed(1), batch_size=3)
    b = generate(net, LINEAR, sampler, full, generator=torch.Generator().manual_seed(1), batch_size=3)
    assert torch.equal(a.ids, b.ids)


def test_bad_switches_are_one_line_errors(model):
    with pytest.raises(ValueError, match="trim_padding must be true or false"):
        model.sample_ids(2, trim_padding="yes")
    with pytest.raises(ValueError, match="group_lengths must be true or false"):
        MaskedSamplerConfig(group_lengths=1)
