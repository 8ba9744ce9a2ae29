import contextlib

import pytest
import torch

from kernels.gated_delta_rule import chunk_gated_delta_rule, naive_recurrent_gated_delta_rule
from kernels.gated_delta_rule.naive import l2norm, naive_chunk_gated_delta_rule

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
NAMES = ("o", "state", "q", "k", "v", "g", "beta", "initial_state")
GATES = ("g", "beta")
# Relative RMS error against the float64 recurrence, by input dtype: (everything else, gate gradients).
TOL = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-3, 1e-2)}


def make_inputs(B, T, H, K, V, *, seed=0, decay=1.0, normalize_k=True):
    """float64 CPU inputs: β spans (0, 2), g = log decay in (−decay, 0]."""
    gen = torch.Generator().manual_seed(seed)
    f64 = dict(generator=gen, dtype=torch.float64)
    k = torch.randn(B, T, H, K, **f64)
    return dict(
        q=torch.randn(B, T, H, K, **f64),
        k=l2norm(k) if normalize_k else k,
        v=torch.randn(B, T, H, V, **f64),
        g=-decay * torch.rand(B, T, H, **f64),
        beta=2.0 * torch.rand(B, T, H, **f64),
        initial_state=torch.randn(B, H, K, V, **f64),
    )


def run(fn, inputs, *, dtypes=None, seed=1, **kw):
    """Forward + backward with fixed random cotangents on o and on the final state.

    Returns {name: tensor} for o, the final state and the gradient of every input, as float64 on CPU.
    """
    dtypes = dtypes or {}
    leaves = {
        n: x.detach().to(device=DEVICE, dtype=dtypes.get(n, x.dtype)).requires_grad_(True)
        for n, x in inputs.items()
    }
    o, state = fn(**leaves, output_final_state=True, **kw)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)
    dstate = torch.randn(state.shape, generator=gen, dtype=torch.float64).to(state)
    ((o * do).sum() + (state * dstate).sum()).backward()
    out = {"o": o, "state": state} | {n: x.grad for n, x in leaves.items()}
    return {n: x.detach().double().cpu() for n, x in out.items()}


def rel_rms(a, b):
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def assert_matches(out, ref, dtype):
    main, gate = TOL[dtype]
    for n in NAMES:
        assert torch.isfinite(out[n]).all(), f"{n} has NaN/Inf (an unwritten element?)"
        err = rel_rms(out[n], ref[n])
        assert err <= (gate if n in GATES else main), f"{n}: relative RMS {err:.2e}"


@contextlib.contextmanager
def poisoned_empty():
    """torch.empty fills with NaN (deterministic mode), so an element a kernel never writes shows up."""
    prev, prev_fill = (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


def triton_fn(chunk_size=16, **fixed):
    def fn(**kw):
        return chunk_gated_delta_rule(**kw, **fixed, backend="triton", chunk_size=chunk_size)

    return fn


def test_poisoning_fills_new_buffers_with_nan():
    with poisoned_empty():
        assert torch.empty(7, device=DEVICE).isnan().all()
        assert torch.empty_like(torch.ones(3, dtype=torch.bfloat16, device=DEVICE)).isnan().all()


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("T", [1, 63, 65, 100, 257])
def test_naive_chunk_matches_recurrence_float64(T, chunk_size, l2):
    inputs = make_inputs(2, T, 2, 8, 12, decay=4.0, normalize_k=not l2)
    inputs["beta"][:, ::3] = 1.999  # negative eigenvalues: I − β k kᵀ reflects
    ref = run(naive_recurrent_gated_delta_rule, {n: x for n, x in inputs.items()}, use_qk_l2norm_in_kernel=l2)
    out = run(naive_chunk_gated_delta_rule, inputs, use_qk_l2norm_in_kernel=l2, chunk_size=chunk_size)
    for n in NAMES:
        torch.testing.assert_close(out[n], ref[n], rtol=1e-10, atol=1e-10, msg=n)


@pytest.mark.parametrize(("T", "l2"), [(5, True), (19, False)])
def test_torch_backend_gradcheck(T, l2):
    inputs = make_inputs(1, T, 1, 3, 2, decay=2.0, normalize_k=not l2)
    names = list(inputs)

    def f(*args):
        return chunk_gated_delta_rule(
            **dict(zip(names, args)), output_final_state=True, use_qk_l2norm_in_kernel=l2,
            backend="torch", chunk_size=16,
        )  # fmt: skip

    args = tuple(x.clone().requires_grad_(True) for x in inputs.values())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_torch_backend_returns_float32_state_and_v_dtype_output():
    inputs = {n: x.float() for n, x in make_inputs(1, 10, 2, 4, 6).items()}
    inputs["v"] = inputs["v"].bfloat16()
    o, state = chunk_gated_delta_rule(**inputs, output_final_state=True, backend="torch")
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32


@pytest.mark.parametrize(("H", "K", "V"), [(1, 16, 32), (3, 32, 16)])
@pytest.mark.parametrize("T", [1, 63, 65, 100, 257])
def test_triton_matches_float64_recurrence(T, H, K, V):
    inputs = make_inputs(2 if T < 100 else 1, T, H, K, V)
    ref = run(naive_recurrent_gated_delta_rule, inputs)
    with poisoned_empty():  # several chunks at every T > 16, the last one partial
        out = run(triton_fn(16 if T < 100 else 64), inputs, dtypes=dict.fromkeys(inputs, torch.float32))
    assert_matches(out, ref, torch.float32)


@pytest.mark.parametrize(
    ("T", "K", "V", "chunk_size"), [(100, 16, 32, None), (40, 256, 32, None), (70, 32, 48, 32)]
)
def test_triton_l2norm_default_chunks_and_wide_keys(T, K, V, chunk_size):
    # chunk_size None: 64 for K = 16, 16 for K = 256. V = 48 is not a power of two.
    inputs = make_inputs(1, T, 2, K, V, normalize_k=False)
    ref = run(naive_recurrent_gated_delta_rule, inputs, use_qk_l2norm_in_kernel=True)
    with poisoned_empty():
        out = run(
            triton_fn(chunk_size, use_qk_l2norm_in_kernel=True),
            inputs,
            dtypes=dict.fromkeys(inputs, torch.float32),
        )
    assert_matches(out, ref, torch.float32)


def test_triton_odd_head_dims_are_padded_inside():
    # Tensor descriptors need 16-byte rows: K = 12, V = 20 run zero-padded to 16, 24 and cut back.
    inputs = make_inputs(1, 40, 2, 12, 20, normalize_k=False)
    ref = run(naive_recurrent_gated_delta_rule, inputs, use_qk_l2norm_in_kernel=True)
    with poisoned_empty():
        out = run(
            triton_fn(16, use_qk_l2norm_in_kernel=True), inputs, dtypes=dict.fromkeys(inputs, torch.float32)
        )
    assert out["o"].shape[-1] == 20 and out["state"].shape[-2:] == (12, 20)
    assert_matches(out, ref, torch.float32)


def assert_bf16_l2norm_run_matches(inputs):
    """bf16 q, k, v, β (fp32 g and state) with default chunks and in-kernel L2 norm, against the
    float64 recurrence on the same rounded inputs."""
    dtypes = {n: (torch.float32 if n in ("initial_state", "g") else torch.bfloat16) for n in inputs}
    rounded = {n: x.to(dtypes[n]).double() for n, x in inputs.items()}
    ref = run(naive_recurrent_gated_delta_rule, rounded, use_qk_l2norm_in_kernel=True)
    with poisoned_empty():
        out = run(triton_fn(None, use_qk_l2norm_in_kernel=True), rounded, dtypes=dtypes)
    assert_matches(out, ref, torch.bfloat16)


def test_triton_bf16_narrow_heads_over_several_chunks():
    # As a small G layer under autocast hands them over: K = 16, V = 32 in bf16, several chunks
    # (narrow bf16 tiles faulted on an H100 with triton 3.6; they now run 64 wide).
    inputs = make_inputs(2, 150, 2, 16, 32, normalize_k=False)
    assert_bf16_l2norm_run_matches(inputs)


def test_triton_mixed_dtypes_are_cast_inside():
    # As autocast hands them over: bf16 projections, fp32 gates, fp32 state.
    inputs = make_inputs(1, 50, 2, 16, 32)
    dtypes = dict(q=torch.bfloat16, k=torch.bfloat16, v=torch.bfloat16, g=torch.float32, beta=torch.bfloat16,
                  initial_state=torch.float32)  # fmt: skip
    rounded = {n: x.to(dtypes[n]).double() for n, x in inputs.items()}
    ref = run(naive_recurrent_gated_delta_rule, rounded)
    with poisoned_empty():
        out = run(triton_fn(), rounded, dtypes=dtypes)
    assert_matches(out, ref, torch.bfloat16)


@pytest.mark.parametrize("case", ["g=-20", "g=0", "beta~2 same key"])
def test_triton_extreme_gates_stay_finite_and_accurate(case):
    inputs = make_inputs(1, 45, 2, 16, 16)
    if case == "g=-20":
        inputs["g"].fill_(-20.0)
    elif case == "g=0":
        inputs["g"].zero_()
    else:
        inputs["k"][:] = inputs["k"][:, :1]
        inputs["beta"].fill_(1.999)
    ref = run(naive_recurrent_gated_delta_rule, inputs)
    out = run(triton_fn(), inputs, dtypes=dict.fromkeys(inputs, torch.float32))
    assert_matches(out, ref, torch.float32)


def test_triton_identical_calls_are_bitwise_identical():
    inputs = make_inputs(1, 70, 2, 16, 32)
    dtypes = dict.fromkeys(inputs, torch.float32)
    a, b = run(triton_fn(), inputs, dtypes=dtypes), run(triton_fn(), inputs, dtypes=dtypes)
    for n in NAMES:
        assert torch.equal(a[n], b[n]), n


def test_triton_unaligned_inputs_give_the_same_result():
    # Tensor descriptors need 16-byte aligned starts: a view one element into its storage is copied.
    inputs = {n: x.float().to(DEVICE) for n, x in make_inputs(1, 40, 2, 16, 16).items()}
    shifted = {}
    for n, x in inputs.items():
        buf = torch.empty(x.numel() + 1, dtype=x.dtype, device=DEVICE)
        shifted[n] = buf[1:].view(x.shape).copy_(x)
        assert shifted[n].data_ptr() % 16 != 0
    o, state = chunk_gated_delta_rule(**inputs, output_final_state=True, chunk_size=16)
    o_s, state_s = chunk_gated_delta_rule(**shifted, output_final_state=True, chunk_size=16)
    assert torch.equal(o, o_s) and torch.equal(state, state_s)


def test_triton_without_states():
    inputs = {n: x.float().to(DEVICE) for n, x in make_inputs(1, 30, 2, 16, 16).items()}
    h0 = inputs.pop("initial_state")
    o, state = chunk_gated_delta_rule(**inputs, chunk_size=16)
    assert state is None
    o_ref, _ = naive_recurrent_gated_delta_rule(**inputs)
    assert rel_rms(o.double().cpu(), o_ref.double().cpu()) < 1e-5
    o_h0, _ = chunk_gated_delta_rule(**inputs, initial_state=h0, chunk_size=16)
    assert rel_rms(o_h0.double().cpu(), o_ref.double().cpu()) > 1e-2  # the initial state is used


def test_bad_arguments_raise_value_error():
    inputs = {n: x.float() for n, x in make_inputs(1, 8, 1, 4, 4).items()}
    with pytest.raises(ValueError, match="backend"):
        chunk_gated_delta_rule(**inputs, backend="cuda")
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_gated_delta_rule(**inputs, chunk_size=24, backend="torch")
    with pytest.raises(ValueError, match="initial_state"):
        chunk_gated_delta_rule(**(inputs | {"initial_state": torch.zeros(1, 1, 4, 5)}), backend="torch")
    with pytest.raises(ValueError, match="beta"):
        chunk_gated_delta_rule(**(inputs | {"beta": torch.zeros(1, 8)}), backend="torch")


@pytest.mark.gpu
@pytest.mark.parametrize("T", [500, 1000])
def test_gpu_bf16_accuracy_long_sequences(T):
    inputs = make_inputs(2, T, 4, 128, 128, normalize_k=False, decay=0.1)
    assert_bf16_l2norm_run_matches(inputs)


@pytest.mark.gpu
@pytest.mark.parametrize(("K", "V"), [(64, 64), (128, 128), (256, 256), (32, 256)])
def test_gpu_fp32_large_heads(K, V):
    inputs = make_inputs(2, 300, 3, K, V)
    ref = run(naive_recurrent_gated_delta_rule, inputs)
    with poisoned_empty():
        out = run(triton_fn(None), inputs, dtypes=dict.fromkeys(inputs, torch.float32))
    assert_matches(out, ref, torch.float32)


@pytest.mark.gpu
def test_gpu_forward_backward_is_cuda_graph_capturable():
    inputs = {n: x.float().cuda() for n, x in make_inputs(2, 200, 4, 64, 64).items()}
    leaves = {n: x.clone().requires_grad_(True) for n, x in inputs.items()}

    def step():
        for x in leaves.values():
            x.grad = None
        o, state = chunk_gated_delta_rule(**leaves, output_final_state=True)
        (o.square().sum() + state.sum()).backward()
        return o, state

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # compile outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        o, state = step()
    graph.replay()  # capture only records; this runs it
    o_before = o.clone()
    for n, x in inputs.items():
        leaves[n].data.copy_(x * 1.01 if n == "v" else x)
    graph.replay()
    torch.cuda.synchronize()
    o_eager, _ = chunk_gated_delta_rule(**{n: x.detach() for n, x in leaves.items()}, output_final_state=True)
    assert not torch.equal(o, o_before)  # the replay read the new inputs
    torch.testing.assert_close(o, o_eager, rtol=1e-5, atol=1e-5)
    assert all(torch.isfinite(x.grad).all() for x in leaves.values())
