import torch

from cdlm.networks import CausalLM, NetworkConfig, ScoreNetwork, TokenEmbedding


def test_score_network_shapes_and_interpolation():
    torch.manual_seed(0)
    net = ScoreNetwork(11, 12, NetworkConfig(embed_dim=8, width=32, depth=2, heads=4))
    x_t = torch.randn(3, 12, 8)
    logits, x0 = net(x_t, torch.tensor([-5.0, 0.0, 2.0]))
    assert logits.shape == (3, 12, 11) and x0.shape == (3, 12, 8)
    # score interpolation: x0 is a convex combination of the embeddings
    E = net.embedding.table()
    assert torch.allclose(x0, torch.softmax(logits, -1) @ E, atol=1e-5)
    # self-conditioning input changes the output
    logits2, _ = net(x_t, torch.tensor([-5.0, 0.0, 2.0]), x0_prev=torch.randn(3, 12, 8))
    assert not torch.allclose(logits, logits2)


def test_embedding_norm_and_nearest_round_trip():
    emb = TokenEmbedding(20, 16)
    norms = emb.table().norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 4.0))
    ids = torch.randint(0, 20, (5, 7))
    assert torch.equal(emb.nearest(emb(ids)), ids)


def test_bidirectional_vs_causal():
    torch.manual_seed(0)
    net = ScoreNetwork(5, 6, NetworkConfig(embed_dim=4, width=16, depth=1, heads=2))
    x = torch.randn(1, 6, 4)
    y = x.clone()
    y[0, -1] += 1.0
    lam = torch.zeros(1)
    # a change at the last position reaches the first one: attention is bidirectional
    assert not torch.allclose(net(x, lam)[0][0, 0], net(y, lam)[0][0, 0])
    lm = CausalLM(5, 6, NetworkConfig(width=16, depth=1, heads=2))
    ids = torch.tensor([[1, 2, 3, 4, 1, 2]])
    ids2 = ids.clone()
    ids2[0, -1] = 3
    assert torch.allclose(lm(ids)[0, :-1], lm(ids2)[0, :-1])  # causal: the past ignores the future
