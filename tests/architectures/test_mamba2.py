import pytest
import torch
import torch.nn.functional as F

from architectures import ModelConfig
from architectures.mamba2 import Mamba2


def small(**fields):
    return ModelConfig(**{
        "vocab_size": 8, "d_model": 16, "n_heads": 2, "n_layers": 1, "pattern": "M", "ssd_state": 8, **fields
    })


def test_param_count_and_state_by_hand():
    # inner width 2 * 16 = 32, H = 2 heads of P = 16, one B/C group of N = 8.
    mixer = Mamba2(small())
    in_proj = 16 * (32 + 32 + 8 + 8 + 2)  # z, x, B, C, dt
    conv = (32 + 8 + 8) * 4 + (32 + 8 + 8)  # depthwise, width 4, with bias
    per_head = 3 * 2  # A_log, dt_bias, D
    norm = 32
    out = 32 * 16
    assert sum(p.numel() for p in mixer.parameters()) == in_proj + conv + per_head + norm + out
    assert mixer.state_size(1) == mixer.state_size(10_000) == 2 * 16 * 8 + 3 * 48


def test_groups_share_B_and_C_across_heads():
    mixer = Mamba2(small(n_heads=4, ssd_groups=2))
    assert mixer.in_proj.out_features == 32 + 32 + 2 * 2 * 8 + 4


def test_initial_decay_is_in_the_papers_range():
    mixer = Mamba2(small(n_heads=4))
    mixer.init_weights(torch.Generator().manual_seed(0))
    A = mixer.A_log.exp()
    dt = F.softplus(mixer.dt_bias)
    assert ((A >= 1) & (A <= 16)).all()
    assert ((dt >= 1e-4) & (dt <= 0.1 + 1e-6)).all()
    assert (mixer.D == 1).all()


def reference(mixer, x, allow_neg_eigval):
    """The layer from the paper's equations, one step at a time, sharing only the weights."""
    Bsz, T, _ = x.shape
    H, P, G, N = mixer.n_heads, mixer.head_dim, mixer.n_groups, mixer.d_state
    z, xbc, dt = mixer.in_proj(x).split(mixer.split, dim=-1)
    w, bias = mixer.conv.conv.weight[:, 0], mixer.conv.conv.bias  # [C, width], [C]
    width = w.shape[1]
    padded = F.pad(xbc, (0, 0, width - 1, 0))
    conv = sum(padded[:, i : i + T] * w[:, i] for i in range(width)) + bias
    xs, b, c = F.silu(conv).split([H * P, G * N, G * N], dim=-1)
    xs = xs.view(Bsz, T, H, P)
    b = b.view(Bsz, T, G, N).repeat_interleave(H // G, dim=2)  # [B, T, H, N]
    c = c.view(Bsz, T, G, N).repeat_interleave(H // G, dim=2)
    dt = F.softplus(dt + mixer.dt_bias)  # [B, T, H]
    a = torch.exp(-mixer.A_log.exp() * dt)
    if allow_neg_eigval:
        a = 2 * a - 1
    S = x.new_zeros(Bsz, H, N, P)
    ys = []
    for t in range(T):
        S = a[:, t, :, None, None] * S + dt[:, t, :, None, None] * b[:, t, :, :, None] * xs[:, t, :, None]
        ys.append(torch.einsum("bhnp,bhn->bhp", S, c[:, t]) + mixer.D[:, None] * xs[:, t])
    y = torch.stack(ys, dim=1).reshape(Bsz, T, H * P) * F.silu(z)
    y = y / y.pow(2).mean(-1, keepdim=True).add(mixer.norm.eps).sqrt() * mixer.norm.weight
    return mixer.out_proj(y)


@pytest.mark.parametrize("allow_neg_eigval", [False, True])
def test_layer_matches_the_papers_equations(allow_neg_eigval):
    torch.manual_seed(0)
    mixer = Mamba2(small(allow_neg_eigval=allow_neg_eigval, d_model=12, n_heads=4, ssd_groups=2))
    mixer.init_weights(torch.Generator().manual_seed(1))
    with torch.no_grad():  # larger time steps than the init gives, so that decay matters
        mixer.in_proj.weight.mul_(20)
        mixer.dt_bias.add_(2)
        mixer.D.uniform_(-1, 1)
        mixer.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), reference(mixer, x, allow_neg_eigval), atol=1e-4, rtol=1e-4)


def test_initial_decay_follows_the_config_ranges_and_dt_rows():
    fields = dict(mamba_A_min=1.0, mamba_A_max=2.0, mamba_dt_min=0.3, mamba_dt_max=0.7, mamba_dt_std=0.5)
    mixer = Mamba2(small(n_heads=4, d_model=64, **fields))
    before = mixer.in_proj.weight.detach().clone()
    mixer.init_weights(torch.Generator().manual_seed(0))
    A, dt = mixer.A_log.exp(), F.softplus(mixer.dt_bias)
    assert ((A >= 1) & (A <= 2 + 1e-6)).all() and ((dt >= 0.3 - 1e-6) & (dt <= 0.7 + 1e-6)).all()
    dt_rows = mixer.in_proj.weight[-4:]  # the rows that make dt, after z, x, B and C
    assert 0.4 < dt_rows.std() < 0.6 and torch.equal(mixer.in_proj.weight[:-4], before[:-4])
    paper = Mamba2(small(n_heads=4, d_model=64))
    before = paper.in_proj.weight.detach().clone()
    paper.init_weights(torch.Generator().manual_seed(0))
    assert torch.equal(paper.in_proj.weight, before)  # left to the model's GPT-2 init


@pytest.mark.parametrize("fields", [dict(mamba_A_min=3.0, mamba_A_max=2.0), dict(mamba_dt_min=0.2)])
def test_inverted_initial_ranges_are_refused_naming_the_fields(fields):
    with pytest.raises(ValueError, match="mamba_A_min <= mamba_A_max and mamba_dt_min <= mamba_dt_max"):
        small(**fields)
