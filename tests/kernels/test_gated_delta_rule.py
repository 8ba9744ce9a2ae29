import dataclasses

import pytest
import torch

from kernels import _host
from kernels.gated_delta_rule import chunk as gdn_chunk
from kernels.gated_delta_rule import (
    chunk_gated_delta_rule,
    naive_chunk_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from tests.kernels.conftest import (
    DEVICE,
    as_float64,
    assert_close_rel,
    compile_for_hopper,
    forward_backward,
    gdn_inputs,
    placed,
    rel_rms,
    run_outside_interpreter,
    wide_batch,
)

F32, BF16 = torch.float32, torch.bfloat16


def triton_fn(chunk_size=16, **fixed):
    def fn(**kw):
        return chunk_gated_delta_rule(**kw, **fixed, backend="triton", chunk_size=chunk_size)

    return fn


def recurrence(**kw):
    return naive_recurrent_gated_delta_rule(**kw, output_final_state=True)


def check_triton(inputs, dtypes, chunk_size=16, dtype=F32, **fixed):
    """The Triton op on `inputs` in `dtypes` (one dtype, or a dict) against the float64 recurrence on the
    same rounded values, outputs and every gradient."""
    x = placed(inputs, **dtypes) if isinstance(dtypes, dict) else placed(inputs, dtypes)
    ref = forward_backward(recurrence, as_float64(x), cot_dtype=dtype, **fixed)
    got = forward_backward(triton_fn(chunk_size, **fixed), x, cot_dtype=dtype, output_final_state=True)
    assert_close_rel(got, ref, dtype)
    return got


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("T", [1, 63, 65, 100, 257])
def test_naive_chunk_matches_recurrence_float64(T, chunk_size, l2):
    inputs = gdn_inputs(2, T, 2, 8, 12, decay=4.0, normalize_k=not l2)
    inputs["beta"][:, ::3] = 1.999  # negative eigenvalues: I − β k kᵀ reflects
    ref = forward_backward(recurrence, inputs, use_qk_l2norm_in_kernel=l2)
    out = forward_backward(
        naive_chunk_gated_delta_rule, inputs, output_final_state=True, use_qk_l2norm_in_kernel=l2,
        chunk_size=chunk_size,
    )  # fmt: skip
    for n in ref:
        torch.testing.assert_close(out[n], ref[n], rtol=1e-10, atol=1e-10, msg=n)


@pytest.mark.parametrize(("T", "l2"), [(5, True), (19, False)])
def test_torch_backend_gradcheck(T, l2):
    inputs = gdn_inputs(1, T, 1, 3, 2, decay=2.0, normalize_k=not l2)
    names = list(inputs)

    def f(*args):
        return chunk_gated_delta_rule(
            **dict(zip(names, args)), output_final_state=True, use_qk_l2norm_in_kernel=l2,
            backend="torch", chunk_size=16,
        )  # fmt: skip

    args = tuple(x.clone().requires_grad_(True) for x in inputs.values())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_torch_backend_returns_float32_state_and_v_dtype_output():
    inputs = placed(gdn_inputs(1, 10, 2, 4, 6), F32, device="cpu", v=BF16)
    o, state = chunk_gated_delta_rule(**inputs, output_final_state=True, backend="torch")
    assert o.dtype == BF16 and state.dtype == F32


@pytest.mark.parametrize(("H", "K", "V"), [(1, 16, 32), (3, 32, 16)])
@pytest.mark.parametrize("T", [1, 63, 65, 100, 257])
def test_triton_matches_float64_recurrence(T, H, K, V):
    # several chunks at every T > 16, the last one partial
    check_triton(gdn_inputs(2 if T < 100 else 1, T, H, K, V), F32, chunk_size=16 if T < 100 else 64)


@pytest.mark.parametrize(
    ("T", "K", "V", "chunk_size"), [(100, 16, 32, None), (40, 256, 32, None), (70, 32, 48, 32)]
)
def test_triton_l2norm_default_chunks_and_wide_keys(T, K, V, chunk_size):
    # chunk_size None: 64 for K = 16, 16 for K = 256. V = 48 is not a power of two.
    inputs = gdn_inputs(1, T, 2, K, V, normalize_k=False)
    check_triton(inputs, F32, chunk_size, use_qk_l2norm_in_kernel=True)


def test_triton_odd_head_dims_are_padded_inside():
    # Tensor descriptors need 16-byte rows: K = 12, V = 20 run zero-padded to 16, 24 and cut back.
    got = check_triton(gdn_inputs(1, 40, 2, 12, 20, normalize_k=False), F32, use_qk_l2norm_in_kernel=True)
    assert got["out"].shape[-1] == 20 and got["state"].shape[-2:] == (12, 20)


def check_bf16_l2norm(inputs):
    """bf16 q, k, v, β (fp32 g and state) with default chunks and in-kernel L2 norm."""
    check_triton(inputs, dict(dtype=BF16, g=F32), None, BF16, use_qk_l2norm_in_kernel=True)


def test_triton_bf16_narrow_heads_over_several_chunks():
    # As a small G layer under autocast hands them over: K = 16, V = 32 in bf16, several chunks
    # (run in 64-wide tiles: narrower bf16 tiles faulted on Hopper).
    check_bf16_l2norm(gdn_inputs(2, 150, 2, 16, 32, normalize_k=False))


def test_triton_mixed_dtypes_are_cast_inside():
    # As autocast hands them over: bf16 projections, fp32 gates, fp32 state.
    check_triton(gdn_inputs(1, 50, 2, 16, 32), dict(dtype=BF16, g=F32), 16, BF16)


@pytest.mark.parametrize("case", ["g=-20", "g=0", "beta~2 same key"])
def test_triton_extreme_gates_stay_finite_and_accurate(case):
    inputs = gdn_inputs(1, 45, 2, 16, 16)
    if case == "g=-20":
        inputs["g"].fill_(-20.0)
    elif case == "g=0":
        inputs["g"].zero_()
    else:
        inputs["k"][:] = inputs["k"][:, :1]
        inputs["beta"].fill_(1.999)
    check_triton(inputs, F32)


def test_triton_identical_calls_are_bitwise_identical():
    inputs = placed(gdn_inputs(1, 70, 2, 16, 32), F32)
    a = forward_backward(triton_fn(), inputs, output_final_state=True)
    b = forward_backward(triton_fn(), inputs, output_final_state=True)
    for n in a:
        assert torch.equal(a[n], b[n]), n


def test_triton_unaligned_inputs_give_the_same_result():
    # Tensor descriptors need 16-byte aligned starts: a view one element into its storage is copied.
    inputs = placed(gdn_inputs(1, 40, 2, 16, 16), F32)
    shifted = {}
    for n, x in inputs.items():
        buf = torch.zeros(x.numel() + 1, dtype=x.dtype, device=DEVICE)
        shifted[n] = buf[1:].view(x.shape).copy_(x)
        assert shifted[n].data_ptr() % 16 != 0
    o, state = chunk_gated_delta_rule(**inputs, output_final_state=True, chunk_size=16)
    o_s, state_s = chunk_gated_delta_rule(**shifted, output_final_state=True, chunk_size=16)
    assert torch.equal(o, o_s) and torch.equal(state, state_s)


def test_triton_without_states():
    inputs = placed(gdn_inputs(1, 30, 2, 16, 16), F32)
    h0 = inputs.pop("initial_state")
    o, state = chunk_gated_delta_rule(**inputs, chunk_size=16)
    assert state is None
    o_ref, _ = naive_recurrent_gated_delta_rule(**inputs)
    assert rel_rms(o, o_ref) < 1e-5
    o_h0, _ = chunk_gated_delta_rule(**inputs, initial_state=h0, chunk_size=16)
    assert rel_rms(o_h0, o_ref) > 1e-2  # the initial state is used


def test_bad_arguments_raise_value_error():
    inputs = placed(gdn_inputs(1, 8, 1, 4, 4), F32, device="cpu")
    with pytest.raises(ValueError, match="backend"):
        chunk_gated_delta_rule(**inputs, backend="cuda")
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_gated_delta_rule(**inputs, chunk_size=24, backend="torch")
    with pytest.raises(ValueError, match="initial_state"):
        chunk_gated_delta_rule(**(inputs | {"initial_state": torch.zeros(1, 1, 4, 5)}), backend="torch")
    with pytest.raises(ValueError, match="beta"):
        chunk_gated_delta_rule(**(inputs | {"beta": torch.zeros(1, 8)}), backend="torch")


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize(("B", "H", "T", "K", "V"), [(500_000, 4, 256, 32, 64), (35_000, 2, 20, 16, 16)])
def test_grids_keep_batch_times_heads_on_axis_0(B, H, T, K, V, half):
    # CUDA takes at most 65535 programs on grid axes 1 and 2, 2³¹ − 1 on axis 0.
    cfg = gdn_chunk._launch_config(B * H, K, V, half, 64 if half else 32)
    grids = gdn_chunk._grids(cfg, B * H, T, V)
    assert set(grids) == {f.name for f in dataclasses.fields(cfg)} - {"BT"}
    for name, grid in grids.items():
        assert grid[0] >= B * H, name
        assert all(n <= limit for n, limit in zip(grid, _host.MAX_GRID)), (name, grid)


def vmapped_vs_separate(backend, n=3, **kw):
    """torch.vmap over n stacked input sets against n separate calls: outputs and gradients."""
    per = [placed(gdn_inputs(2, 37, 2, 16, 16, seed=s), F32) for s in range(n)]
    stacked = {k: torch.stack([p[k] for p in per]).requires_grad_(True) for k in per[0]}
    names = list(stacked)

    def op(*args):
        return chunk_gated_delta_rule(
            **dict(zip(names, args)), output_final_state=True, backend=backend, chunk_size=16, **kw
        )

    o, state = torch.vmap(op)(*stacked.values())
    gen = torch.Generator().manual_seed(0)
    do = torch.randn(o.shape, generator=gen).to(o)
    dstate = torch.randn(state.shape, generator=gen).to(state)
    ((o * do).sum() + (state * dstate).sum()).backward()
    for i, p in enumerate(per):
        leaves = {k: x.clone().requires_grad_(True) for k, x in p.items()}
        o_i, state_i = op(*leaves.values())
        ((o_i * do[i]).sum() + (state_i * dstate[i]).sum()).backward()
        torch.testing.assert_close(o[i], o_i, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state[i], state_i, rtol=1e-5, atol=1e-5)
        for k, leaf in leaves.items():
            torch.testing.assert_close(stacked[k].grad[i], leaf.grad, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_vmap_over_stacked_inputs_matches_separate_calls(backend):
    vmapped_vs_separate(backend, use_qk_l2norm_in_kernel=True)


def test_vmap_with_unbatched_inputs_and_no_state():
    # Inputs vmapped and not, together; no initial or final state: the vmap rule expands the shared ones.
    per = [placed(gdn_inputs(1, 20, 2, 16, 16, seed=s), F32) for s in range(2)]
    q = torch.stack([p["q"] for p in per])
    shared = {k: per[0][k] for k in ("k", "v", "g", "beta")}

    def op(q):
        return chunk_gated_delta_rule(q, **shared, chunk_size=16)[0]

    o = torch.vmap(op)(q)
    for i in range(2):
        torch.testing.assert_close(o[i], op(q[i]), rtol=1e-5, atol=1e-5)


def shared_memory_bytes(K, V, half):
    """{kernel: shared memory} of the seven kernels compiled for sm_90 under the launch configuration
    (host tensor descriptors of the tiles each takes; needs triton's ptxas, no GPU, no interpreter)."""
    BT = 64 if half else 32
    cfg = gdn_chunk._launch_config(256, K, V, half, BT)
    dt = "bf16" if half else "fp32"
    kf, kb = gdn_chunk._kernels()
    # tiles of each descriptor argument: per time-chunk [1, BT, 1, W] (W the key or value block), per
    # state [1, 1, BK, BV], T per chunk [1, 1, BT, BT]
    value = {"d_v", "d_u", "d_dlt", "d_o", "d_do", "d_ddl", "d_dd", "d_dv"}
    state = {"d_h0", "d_hs", "d_ht", "d_dht", "d_dh", "d_dh0"}
    out = {}
    prefix = "chunk_gated_delta_rule_"
    kernels = dict(
        prep=kf.chunk_gated_delta_rule_fwd_prep_kernel,
        **{n: getattr(kf, f"{prefix}{n}_kernel") for n in ("fwd_h", "fwd_o")},
        dd_local=kb.chunk_gated_delta_rule_bwd_dd_local_kernel,
        **{n: getattr(kb, f"{prefix}{n}_kernel") for n in ("bwd_dh", "bwd_wy", "bwd_qk")},
    )
    for name, fn in kernels.items():
        c = getattr(cfg, name)
        signature = {}
        for p in fn.params:
            if p.is_constexpr:
                signature[p.name] = "constexpr"
            elif p.name in ("T", "H"):
                signature[p.name] = "i32"
            elif p.name == "scale":
                signature[p.name] = "fp32"
            elif not p.name.startswith("d_"):
                signature[p.name] = "*fp32"
            else:
                shape = ([1, 1, c.BK, c.BV] if p.name in state else [1, 1, BT, BT] if p.name == "d_Ai"
                         else [1, BT, 1, c.BV] if p.name in value else [1, BT, 1, c.BK])  # fmt: skip
                signature[p.name] = f"tensordesc<{'fp32' if p.name == 'd_dkp' else dt}{shape}>"
        consts = dict(K=K, V=V, BT=BT, BK=c.BK, BV=c.BV, USE_L2NORM=True, EMU=False,
                      PRECISION=gdn_chunk._precision(torch.bfloat16 if half else torch.float32))  # fmt: skip
        consts |= {n: True for n in ("USE_H0", "STORE_HT", "USE_DHT", "STORE_DH0") if n in fn.arg_names}
        out[fn.__name__] = compile_for_hopper(fn, signature, consts, c)
    return out


@pytest.mark.slow
def test_launch_configs_compile_for_hopper_within_shared_memory():
    # Every kernel compiled for sm_90 as triton compiles it for a GPU (the interpreter checks neither
    # what the compiler refuses nor shared memory), bf16 at K = V = 128 and 32 and fp32 at K = V = 256,
    # in processes without the interpreter, side by side: within Hopper's 227 KB.
    cases = [(128, 128, True), (32, 32, True), (256, 256, False)]
    for case, shared in run_outside_interpreter(
        "tests.kernels.test_gated_delta_rule:shared_memory_bytes", cases
    ).items():
        assert len(shared) == 7 and all(0 < v <= 227 * 1024 for v in shared.values()), (case, shared)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [500, 1000])
def test_gpu_bf16_accuracy_long_sequences(T):
    check_bf16_l2norm(gdn_inputs(2, T, 4, 128, 128, normalize_k=False, decay=0.1))


@pytest.mark.gpu
@pytest.mark.parametrize(("K", "V"), [(64, 64), (128, 128), (256, 256), (32, 256)])
def test_gpu_fp32_large_heads(K, V):
    check_triton(gdn_inputs(2, 300, 3, K, V), F32, None)


@pytest.mark.gpu
def test_gpu_batch_times_heads_past_65535():
    # One program per (batch, head) for each (chunk, V-block): more than a grid axis takes.
    (B, T, H, K, V), kw = wide_batch()
    inputs = dict(
        q=torch.randn(B, T, H, K, **kw), k=torch.randn(B, T, H, K, **kw), v=torch.randn(B, T, H, V, **kw),
        g=-torch.rand(B, T, H, **kw), beta=2 * torch.rand(B, T, H, **kw),
    )  # fmt: skip
    kw = dict(use_qk_l2norm_in_kernel=True, output_final_state=True, chunk_size=16)
    ref = forward_backward(lambda **x: chunk_gated_delta_rule(**x, backend="torch", **kw), inputs)
    got = forward_backward(lambda **x: chunk_gated_delta_rule(**x, backend="triton", **kw), inputs)
    assert_close_rel(got, ref, F32)


@pytest.mark.gpu
def test_gpu_cached_launch_matches_triton_launch(monkeypatch):
    # _host.launch keeps each compiled kernel under a key of what triton specializes on (for the host
    # tensor descriptors: dtype, block shape, alignment) and launches it directly on later calls: the
    # same results, bit for bit, as triton's own launch, from the cache the second time.
    inputs = placed(gdn_inputs(2, 300, 4, 64, 64), BF16, g=F32)
    fn = triton_fn(None, use_qk_l2norm_in_kernel=True)
    first = forward_backward(fn, inputs, output_final_state=True)
    cached = len(_host._COMPILED)
    again = forward_backward(fn, inputs, output_final_state=True)
    assert len(_host._COMPILED) == cached > 0
    monkeypatch.setattr(_host, "_FAST_LAUNCH", False)
    plain = forward_backward(fn, inputs, output_final_state=True)
    for other in (again, plain):
        assert all(torch.equal(first[n], other[n]) for n in first)


@pytest.mark.gpu
def test_gpu_forward_backward_is_cuda_graph_capturable():
    inputs = placed(gdn_inputs(2, 200, 4, 64, 64), F32)
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
