import torch

from architectures import ModelConfig
from architectures.attention import Attention, rotary


def small(**fields):
    base = {"vocab_size": 8, "d_model": 16, "n_heads": 2, "n_layers": 1, "pattern": "A"}
    return ModelConfig(**{**base, **fields})


def test_param_count_and_kv_cache_by_hand():
    mixer = Attention(small())
    assert sum(p.numel() for p in mixer.parameters()) == 16 * 48 + 16 * 16  # qkv + out
    assert mixer.state_size(100) == 2 * 100 * 2 * 8  # keys and values, T x H x head_dim each


def test_rope_keeps_norms_and_makes_scores_depend_on_offset_only():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, 8, generator=gen, dtype=torch.float64).expand(1, 12, 1, 8)
    k = torch.randn(1, 1, 1, 8, generator=gen, dtype=torch.float64).expand(1, 12, 1, 8)
    rq, rk = rotary(q, 10_000.0), rotary(k, 10_000.0)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    scores = (rq[0, :, 0] @ rk[0, :, 0].T)  # [T, T]: same vectors at every position
    torch.testing.assert_close(scores[5, 2], scores[9, 6])
    torch.testing.assert_close(scores[3, 3], scores[0, 0])
    assert not torch.isclose(scores[5, 2], scores[5, 3])


def test_without_positions_attention_ignores_order_of_the_past():
    torch.manual_seed(0)
    mixer = Attention(small(pos="none"))
    x = torch.randn(1, 5, 16)
    swapped = x[:, [1, 0, 2, 3, 4]]
    torch.testing.assert_close(mixer(x)[:, -1], mixer(swapped)[:, -1])
