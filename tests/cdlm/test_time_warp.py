import torch

from cdlm.models.time_warp import LossWarp


def test_uniform_until_trained_then_dense_where_the_loss_rises():
    warp = LossWarp(bins=10, momentum=0.0, uniform_mix=0.1)
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    assert torch.allclose(warp.warp(u), u, atol=1e-9)  # linear curve: identity
    t = (torch.arange(10, dtype=torch.float64) + 0.5) / 10
    warp.update(t, torch.sigmoid((t - 0.5) * 30))  # a loss that jumps around t = 0.5
    times = warp.warp(u)
    assert torch.all(times[1:] >= times[:-1]) and times.min() >= 0 and times.max() <= 1  # monotone map
    middle = ((times > 0.3) & (times < 0.7)).double().mean()
    assert middle > 0.8  # most training time where the loss changes
    assert (times < 0.1).any() and (times > 0.9).any()  # the uniform mix keeps every level


def test_warped_training_runs_and_curve_travels_in_state_dict():
    from cdlm import DiffusionLM, TextDataModule

    dm = TextDataModule(num_examples=64, batch_size=8)
    model = DiffusionLM(tokenizer_json=dm.tokenizer_json(), network={"width": 32, "depth": 1, "heads": 2, "embed_dim": 8}, training={"time_sampling": "warped"})
    t = model.sample_times(16)
    assert t.shape == (16,) and (t >= 0).all() and (t <= 1).all()
    assert "time_warp.curve" in model.state_dict()
