import pytest
import torch

from kernels.ssd import chunk_ssd, naive_recurrent_ssd

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GRAD_NAMES = ("x", "dt", "A", "B", "C", "D", "initial_state")


def make_inputs(n_batch, seq_len, num_heads, n_groups, dim_k, dim_v, *, seed=0, dtype=torch.float64,
                device="cpu", dt_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batch, seq_len, num_heads, dim_v, generator=g, dtype=torch.float64)
    dt = torch.nn.functional.softplus(torch.randn(n_batch, seq_len, num_heads, generator=g,
                                                  dtype=torch.float64) - 1.0) * dt_scale
    A = -(0.2 + 2.0 * torch.rand(num_heads, generator=g, dtype=torch.float64))
    B = torch.randn(n_batch, seq_len, n_groups, dim_k, generator=g, dtype=torch.float64) / dim_k**0.5
    C = torch.randn(n_batch, seq_len, n_groups, dim_k, generator=g, dtype=torch.float64) / dim_k**0.5
    D = torch.randn(num_heads, generator=g, dtype=torch.float64)
    h0 = torch.randn(n_batch, num_heads, dim_k, dim_v, generator=g, dtype=torch.float64)
    out = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, initial_state=h0)
    return {k: v.to(device=device, dtype=dtype if k != "initial_state" else torch.float32
                    if dtype != torch.float64 else dtype) for k, v in out.items()}


def run(fn, inputs, neg, seed=1):
    """Forward + backward with a fixed random cotangent on y and on the final state."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    y, s = fn(**leaves, output_final_state=True, allow_neg_eigval=neg)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y)
    ds = torch.randn(s.shape, generator=g, dtype=torch.float64).to(s)
    ((y * dy).sum() + (s * ds).sum()).backward()
    return y.detach(), s.detach(), {k: leaves[k].grad for k in GRAD_NAMES}


def rel_rms(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def torch_backend(**kw):
    return chunk_ssd(**kw, backend="torch")


@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize("seq_len", [1, 63, 100, 257])
def test_chunked_torch_matches_recurrence_float64(seq_len, neg):
    inputs = make_inputs(2, seq_len, 4, 2, 8, 12)
    y_ref, s_ref, g_ref = run(naive_recurrent_ssd, inputs, neg)
    y, s, grads = run(torch_backend, inputs, neg)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)
    for name in GRAD_NAMES:
        torch.testing.assert_close(grads[name], g_ref[name], rtol=1e-9, atol=1e-9, msg=name)


def test_negative_eigenvalues_flip_the_state_sign():
    # dt·A very negative makes a_t → -1 under allow_neg_eigval: the state alternates sign.
    inputs = make_inputs(1, 6, 1, 1, 2, 2)
    inputs["dt"] = torch.full_like(inputs["dt"], 50.0)
    inputs["x"][:, 1:] = 0.0
    inputs["C"][:] = inputs["C"][:, :1]
    inputs["initial_state"].zero_()
    y, _ = naive_recurrent_ssd(**inputs, allow_neg_eigval=True)
    y = y - inputs["D"][:, None] * inputs["x"]
    assert torch.all(y[0, 1:, 0] * y[0, :-1, 0] < 0)
    y_std, _ = naive_recurrent_ssd(**inputs, allow_neg_eigval=False)
    assert y_std[0, 1:].abs().max() < 1e-12


@pytest.mark.parametrize("neg", [False, True])
def test_torch_backend_gradcheck(neg):
    inputs = make_inputs(1, 5, 2, 1, 3, 2)
    names = list(inputs)

    def f(*args):
        y, s = chunk_ssd(**dict(zip(names, args)), output_final_state=True, allow_neg_eigval=neg,
                         backend="torch")
        return y, s

    args = [v.clone().requires_grad_(True) for v in inputs.values()]
    assert torch.autograd.gradcheck(f, args)


def test_bad_shapes_raise_value_error():
    inputs = make_inputs(1, 4, 3, 1, 4, 4)
    inputs["A"] = inputs["A"][:2]
    with pytest.raises(ValueError, match="A must be"):
        chunk_ssd(**inputs, backend="torch")
    with pytest.raises(ValueError, match="backend"):
        chunk_ssd(**make_inputs(1, 4, 3, 1, 4, 4), backend="cuda")
