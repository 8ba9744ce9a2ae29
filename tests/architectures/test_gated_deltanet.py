import pytest
import torch
import torch.nn.functional as F

from architectures import ModelConfig
from architectures.gated_deltanet import GatedDeltaNet


def small(**fields):
    base = {"vocab_size": 8, "d_model": 16, "n_heads": 2, "n_layers": 1, "pattern": "G"}
    return ModelConfig(**{**base, **fields})


def test_param_count_and_state_by_hand():
    # H = 2 heads, key head dim K = 8, value head dim V = 2 * 8 = 16.
    mixer = GatedDeltaNet(small())
    in_proj = 16 * (16 + 16 + 32 + 32 + 2 + 2)  # q, k, v, output gate, beta and decay inputs
    conv = (16 + 16 + 32) * 4  # depthwise, width 4, no bias
    decay = 2 + 2  # A_log, dt_bias
    norm = 16  # one weight over the value head dim, shared by the heads
    out = 32 * 16
    assert sum(p.numel() for p in mixer.parameters()) == in_proj + conv + decay + norm + out
    assert mixer.state_size(1) == mixer.state_size(10_000) == 2 * 8 * 16 + 3 * 64


def test_value_expansion_widens_values_only():
    mixer = GatedDeltaNet(small(gdn_expand_v=1.0))
    assert mixer.head_v_dim == mixer.head_k_dim == 8
    assert mixer.out_proj.in_features == 16


def test_initial_decay_is_in_the_papers_range():
    mixer = GatedDeltaNet(small(n_heads=4))
    mixer.init_weights(torch.Generator().manual_seed(0))
    A = mixer.A_log.exp()
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    assert ((A > 0) & (A < 16)).all()
    assert ((dt >= 1e-4) & (dt <= 0.1 + 1e-6)).all()


def reference(mixer, x, allow_neg_eigval):
    """The layer from the paper's equations, one step at a time, sharing only the weights."""
    Bsz, T, _ = x.shape
    H, K, V = mixer.n_heads, mixer.head_k_dim, mixer.head_v_dim
    qkv, gate, a, b = mixer.in_proj(x).split(mixer.split, dim=-1)
    w = mixer.conv.conv.weight[:, 0]  # [C, width]
    width = w.shape[1]
    padded = F.pad(qkv, (0, 0, width - 1, 0))
    conv = sum(padded[:, i : i + T] * w[:, i] for i in range(width))  # tap width-1 is the current step
    q, k, v = F.silu(conv).split([H * K, H * K, H * V], dim=-1)
    q, k, v = q.view(Bsz, T, H, K), k.view(Bsz, T, H, K), v.view(Bsz, T, H, V)
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    beta = torch.sigmoid(b) * (2 if allow_neg_eigval else 1)
    alpha = torch.exp(-mixer.A_log.exp() * F.softplus(a + mixer.dt_bias))
    S = x.new_zeros(Bsz, H, K, V)
    outs = []
    for t in range(T):
        kt, vt = k[:, t], v[:, t]  # [B, H, K], [B, H, V]
        S = alpha[:, t, :, None, None] * S
        error = vt - torch.einsum("bhkv,bhk->bhv", S, kt)  # [B, H, V]
        S = S + beta[:, t, :, None, None] * kt[..., None] * error[:, :, None]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]) * K**-0.5)
    o = torch.stack(outs, dim=1)  # [B, T, H, V]
    o = o / o.pow(2).mean(-1, keepdim=True).add(mixer.norm.eps).sqrt() * mixer.norm.weight
    o = o * F.silu(gate.view(Bsz, T, H, V))
    return mixer.out_proj(o.reshape(Bsz, T, H * V))


@pytest.mark.parametrize("allow_neg_eigval", [False, True])
def test_layer_matches_the_papers_equations(allow_neg_eigval):
    torch.manual_seed(0)
    mixer = GatedDeltaNet(small(allow_neg_eigval=allow_neg_eigval, d_model=12, n_heads=3))
    mixer.init_weights(torch.Generator().manual_seed(1))
    with torch.no_grad():  # larger beta and decay inputs than the init gives, to exercise both
        mixer.in_proj.weight.mul_(20)
        mixer.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), reference(mixer, x, allow_neg_eigval), atol=1e-4, rtol=1e-4)
