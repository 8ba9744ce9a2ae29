import pytest
import torch
import triton

from kernels import _host
from kernels._host import KernelConfig
from kernels.ssd import chunk, chunk_ssd, naive_chunk_ssd, naive_recurrent_ssd
from tests.kernels.conftest import (
    as_float64,
    assert_close_rel,
    compile_for_hopper,
    forward_backward,
    placed,
    rel_rms,
    run_outside_interpreter,
    ssd_inputs,
    wide_batch,
)

F32, BF16 = torch.float32, torch.bfloat16
# (B, T, H, G, K, V): T = 1, 63, 100, 257; K ≠ V; G < H; V split into several blocks (H·B small).
AWKWARD = [(1, 1, 2, 1, 8, 12), (2, 63, 4, 2, 16, 32), (2, 100, 2, 2, 32, 8), (1, 257, 4, 1, 8, 20)]


def triton_backend(**kw):
    return chunk_ssd(**kw, backend="triton")


def torch_backend(**kw):
    return chunk_ssd(**kw, backend="torch")


def check_triton(inputs, neg, dtype=F32, final_state=True, **tol):
    """The Triton op against the float64 recurrence on the same rounded inputs, outputs and every
    gradient; returns the Triton op's."""
    kw = dict(cot_dtype=dtype, output_final_state=final_state, allow_neg_eigval=neg)
    got = forward_backward(triton_backend, inputs, **kw)
    assert_close_rel(got, forward_backward(naive_recurrent_ssd, as_float64(inputs), **kw), dtype, **tol)
    return got


@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize("seq_len", [1, 63, 100, 257])
def test_chunked_torch_matches_recurrence_float64(seq_len, neg):
    inputs = ssd_inputs(2, seq_len, 4, 2, 8, 12)
    kw = dict(output_final_state=True, allow_neg_eigval=neg)
    ref = forward_backward(naive_recurrent_ssd, inputs, **kw)
    got = forward_backward(torch_backend, inputs, **kw)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-9, atol=1e-9, msg=n)


@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize("shape", AWKWARD, ids=[f"T{s[1]}" for s in AWKWARD])
def test_triton_matches_recurrence_fp32(shape, neg):
    got = check_triton(placed(ssd_inputs(*shape, seed=shape[1]), F32), neg)
    assert set(got) == {"out", "state", "dx", "ddt", "dA", "dB", "dC", "dD", "dinitial_state"}


def test_triton_keeps_output_dtypes():
    inputs = placed(ssd_inputs(1, 20, 2, 1, 8, 8), F32)
    y, s = chunk_ssd(**inputs, output_final_state=True)
    assert y.dtype == F32 and s.dtype == F32


@pytest.mark.parametrize(
    ("neg", "forward"), [(False, "walk_decay"), (True, "decay_kernel"), (True, "one_launch")]
)
def test_triton_split_tiles_match_recurrence(neg, forward, monkeypatch):
    # Every kernel split into several K- and V-blocks (the o and dx kernels walk K in three blocks, the
    # dB/dC kernel sums the dx kernel's V-block shares of d dt), as the launch configuration does at
    # large K and V on a GPU. The forward: the walk forms the chunk decays, or their own kernel does
    # (and the walk takes chunks in pairs, over an odd number of chunks), or the walk (all of K, three
    # V-blocks) gives y as well.
    small = KernelConfig(BK=16, BV=16, num_warps=4, num_stages=2)
    fwd_hy = KernelConfig(BK=64, BV=16, num_warps=4, num_stages=2) if forward == "one_launch" else None
    # the output kernel: all of K in one block, or walking it
    o = KernelConfig(BK=64 if forward == "walk_decay" else 16, BV=16, num_warps=4, num_stages=2)
    cfg = chunk.LaunchConfig(BT=32, fwd_h=small, fwd_o=o, bwd_dh=small, bwd_dx=small, bwd_dqk=small,
                             fwd_hy=fwd_hy)  # fmt: skip
    monkeypatch.setattr(chunk, "_launch_config", lambda *args: cfg)
    monkeypatch.setattr(chunk, "WALK_DECAY_MAX_CHUNKS", 0 if forward == "decay_kernel" else 16)
    check_triton(placed(ssd_inputs(2, 75, 4, 2, 40, 36, seed=5), F32), neg)


@pytest.mark.parametrize("neg", [False, True])
def test_triton_without_optional_inputs(neg):
    inputs = placed(ssd_inputs(2, 70, 2, 1, 16, 16), F32)
    del inputs["D"], inputs["initial_state"]
    got = check_triton(inputs, neg, final_state=False)
    assert "state" not in got


@pytest.mark.parametrize("neg", [False, True])
def test_triton_no_nan_with_strong_decay(neg):
    # dt·A ∈ [−20, −5] per step: the chunk's cumulative log decay Γ reaches ~−1280 in fp32, so every
    # decay exp(Γ_i − Γ_j) carries a relative error up to ~BT·|Γ|·2⁻²⁴ from rounding Γ alone; dA sums
    # such terms with cancellation (one head's dA is ~1% of its terms), so its bound is 1e-3; fp32
    # autograd through the torch path does worse.
    inputs = placed(ssd_inputs(1, 130, 2, 1, 16, 16, dta=(-20.0, -5.0)), F32)
    check_triton(inputs, neg, gate_tol=1e-3)


def test_triton_decay_near_zero_keeps_dt_gradient():
    # allow_neg_eigval with dt·A ≈ −ln 2 puts |a_t| ≲ 1e-2, where d log|a_t| / dt = 2 e^x / a_t is
    # large; the kernel must keep dL/d dt accurate. The bound for dt and A is 1e-3, not 1e-4, because
    # rounding the product dt·A to fp32 moves a_t ≈ 1e-4 by ~1e-3 relative in any fp32 implementation.
    inputs = placed(ssd_inputs(1, 64, 2, 1, 16, 16, dta=(-0.70, -0.686)), F32)
    check_triton(inputs, True, gate_tol=1e-3)


def test_triton_mixed_dtypes():
    # bf16 x and B with fp32 dt, A, C, D: cast inside; y and each gradient keep their input's dtype.
    # (The interpreter truncates on bf16 stores, hence the looser bound than on a GPU.)
    inputs = placed(ssd_inputs(1, 40, 2, 1, 16, 16), F32, x=BF16, B=BF16)
    y, _ = chunk_ssd(**inputs)
    assert y.dtype == BF16
    leaves = {n: x.clone().requires_grad_(True) for n, x in inputs.items()}
    chunk_ssd(**leaves)[0].float().sum().backward()
    assert leaves["B"].grad.dtype == BF16 and leaves["C"].grad.dtype == F32
    check_triton(inputs, True, BF16, tol=1e-2, gate_tol=1e-2)


def test_triton_inference_path_matches_autograd_path():
    inputs = placed(ssd_inputs(2, 90, 2, 2, 16, 16), F32)
    with torch.no_grad():
        y, s = chunk_ssd(**inputs, output_final_state=True, allow_neg_eigval=True)
    got = forward_backward(triton_backend, inputs, output_final_state=True, allow_neg_eigval=True)
    torch.testing.assert_close(y.double().cpu(), got["out"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s.double().cpu(), got["state"], rtol=1e-6, atol=1e-6)


def test_negative_eigenvalues_flip_the_state_sign():
    # dt·A very negative makes a_t → −1 under allow_neg_eigval: the state alternates sign.
    inputs = ssd_inputs(1, 6, 1, 1, 2, 2)
    inputs["dt"] = torch.full_like(inputs["dt"], 50.0)
    inputs["x"][:, 1:] = 0.0
    inputs["C"][:] = inputs["C"][:, :1]
    inputs["initial_state"].zero_()
    y, _ = naive_recurrent_ssd(**inputs, allow_neg_eigval=True)
    y = y - inputs["D"][:, None] * inputs["x"]
    assert torch.all(y[0, 1:, 0] * y[0, :-1, 0] < 0)
    y_std, _ = naive_recurrent_ssd(**inputs, allow_neg_eigval=False)
    assert y_std[0, 1:].abs().max() < 1e-12


@pytest.mark.parametrize("backend", ["chunked", "recurrence"])
@pytest.mark.parametrize("neg", [False, True])
def test_gradcheck_float64(neg, backend):
    inputs = ssd_inputs(1, 5, 2, 1, 3, 2)
    names = list(inputs)

    def f(*args):
        kw = dict(zip(names, args))
        if backend == "chunked":  # chunks of 2: state passing across three chunks, one partial
            return naive_chunk_ssd(**kw, output_final_state=True, allow_neg_eigval=neg, chunk_size=2)
        return naive_recurrent_ssd(**kw, output_final_state=True, allow_neg_eigval=neg)

    assert torch.autograd.gradcheck(f, [v.clone().requires_grad_(True) for v in inputs.values()])


def test_bad_inputs_raise_value_error(monkeypatch):
    inputs = ssd_inputs(1, 4, 3, 1, 4, 4)
    with pytest.raises(ValueError, match="A must be"):
        chunk_ssd(**(inputs | {"A": inputs["A"][:2]}), backend="torch")
    with pytest.raises(ValueError, match="backend"):
        chunk_ssd(**inputs, backend="cuda")
    with pytest.raises(ValueError, match="n_groups"):
        chunk_ssd(**(inputs | {"B": inputs["B"].repeat(1, 1, 2, 1), "C": inputs["C"].repeat(1, 1, 2, 1)}))
    if not torch.cuda.is_available():
        with monkeypatch.context() as m:
            m.delenv("TRITON_INTERPRET", raising=False)
            with pytest.raises(ValueError, match="CUDA tensors"):
                chunk_ssd(**inputs)
    big = placed(ssd_inputs(1, 2, 1, 1, 300, 4), F32)
    with pytest.raises(ValueError, match="K \\(d_state\\)"):
        chunk_ssd(**big)


@pytest.mark.parametrize("n_rows", [1, 8])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize(
    ("B", "H", "T", "K", "V"), [(500_000, 4, 256, 64, 64), (35_000, 2, 20, 16, 16), (4, 16, 8192, 128, 128)]
)
def test_grids_keep_batch_times_heads_on_axis_0(B, H, T, K, V, bf16, n_rows):
    # CUDA takes at most 65535 programs on grid axes 1 and 2, 2³¹ − 1 on axis 0; every forward structure
    # (one launch at T ≤ 512, the pairs walk at T = 8192), and A, D as n_rows rows (vmapped).
    cfg = chunk._launch_config(B * H, K, V, bf16)
    grids = chunk._grids(cfg, B, T, H, 1, K, V, 2 * n_rows * H)
    for name, grid in grids.items():
        assert grid[0] >= B * (1 if name == "bwd_dqk" else H), name  # dB/dC: programs per B/C group
        assert all(n <= limit for n, limit in zip(grid, _host.MAX_GRID)), (name, grid)
    with pytest.raises(ValueError, match="exceeds CUDA's limits"):
        _host.check_grid((2**31, 1, 1))


def vmapped_vs_separate(backend, per, in_dims, neg=True):
    """torch.vmap of chunk_ssd over the inputs of `per` (n dicts of [B, ...] inputs; a name with in_dim
    None is taken from the first dict, shared) against one call per dict: outputs and every gradient."""
    names = list(per[0])
    batched = {
        k: (torch.stack([p[k] for p in per]) if d == 0 else per[0][k]).clone().requires_grad_(True)
        for k, d in zip(names, in_dims)
    }

    def op(*args):
        return chunk_ssd(**dict(zip(names, args)), output_final_state=True, allow_neg_eigval=neg,
                         backend=backend)  # fmt: skip

    y, s = torch.vmap(op, in_dims=in_dims)(*batched.values())
    gen = torch.Generator().manual_seed(0)
    dy, ds = torch.randn(y.shape, generator=gen).to(y), torch.randn(s.shape, generator=gen).to(s)
    ((y * dy).sum() + (s * ds).sum()).backward()
    shared = {k: torch.zeros_like(batched[k]) for k, d in zip(names, in_dims) if d is None}
    for i, p in enumerate(per):
        leaves = {k: (p[k] if k not in shared else per[0][k]).clone().requires_grad_(True) for k in names}
        y_i, s_i = op(*leaves.values())
        ((y_i * dy[i]).sum() + (s_i * ds[i]).sum()).backward()
        torch.testing.assert_close(y[i], y_i, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s[i], s_i, rtol=1e-5, atol=1e-5)
        for k, leaf in leaves.items():
            if k in shared:
                shared[k] += leaf.grad
            else:
                torch.testing.assert_close(batched[k].grad[i], leaf.grad, rtol=1e-4, atol=1e-5, msg=k)
    for k, g in shared.items():  # a shared input's gradient sums over the vmapped slices
        torch.testing.assert_close(batched[k].grad, g, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_vmap_over_stacked_inputs_matches_separate_calls(backend):
    # As packed models call it: every input vmapped, A and D (per-head parameters) too.
    per = [placed(ssd_inputs(2, 37, 4, 2, 16, 16, seed=s), F32) for s in range(3)]
    vmapped_vs_separate(backend, per, (0,) * 7)


def test_vmap_with_shared_parameters_or_inputs():
    # A, D shared by the slices (not vmapped), and separately x, B shared while A and D are vmapped.
    per = [placed(ssd_inputs(1, 20, 2, 1, 16, 16, seed=s), F32) for s in range(2)]
    vmapped_vs_separate("triton", per, (0, 0, None, 0, 0, None, 0))
    vmapped_vs_separate("triton", per, (None, 0, 0, None, 0, 0, 0), neg=False)


def test_nested_vmap_folds_both_dimensions():
    # vmap inside vmap: the inner rule folds its dimension into the batch (A and D become rows), the
    # outer one folds again (rows of rows).
    inputs = placed(ssd_inputs(2, 12, 2, 1, 8, 8), F32)
    grid = {k: torch.stack([torch.stack([x * (1 + 0.1 * i + 0.01 * j) for j in range(3)]) for i in range(2)])
            for k, x in inputs.items()}  # fmt: skip

    def op(*args):
        return chunk_ssd(*args, output_final_state=True)

    y, s = torch.vmap(torch.vmap(op))(*grid.values())
    for i in range(2):
        for j in range(3):
            y_ij, s_ij = op(*(x[i, j] for x in grid.values()))
            torch.testing.assert_close(y[i, j], y_ij, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(s[i, j], s_ij, rtol=1e-5, atol=1e-5)


def test_per_row_decays_match_separate_calls():
    # The internal form a vmapped A and D take: [NA, H] rows, batch b reading row b // (B / NA).
    inputs = placed(ssd_inputs(4, 30, 2, 1, 16, 16), F32)
    A = torch.stack([inputs["A"], 2 * inputs["A"]])
    D = torch.stack([inputs["D"], -inputs["D"]])
    y, s, _ = chunk._apply(*(inputs[k] for k in ("x", "dt")), A, inputs["B"], inputs["C"], D,
                           inputs["initial_state"], True, True)  # fmt: skip
    for r in range(2):
        part = {k: (v if k in ("A", "D") else v[2 * r : 2 * r + 2]) for k, v in inputs.items()}
        part |= dict(A=A[r], D=D[r])
        y_r, s_r = chunk_ssd(**part, output_final_state=True, allow_neg_eigval=True)
        assert rel_rms(y[2 * r : 2 * r + 2], y_r) < 1e-6 and rel_rms(s[2 * r : 2 * r + 2], s_r) < 1e-6


def shared_memory_bytes(dim_k, dim_v, bf16, names=None):
    """{kernel: shared memory} of the SSD kernels (all, or those whose names end in one of names)
    compiled for sm_90 under chunk_ssd's launch configuration (needs triton's ptxas, no GPU, and
    TRITON_INTERPRET unset)."""
    kf, kb = chunk._kernels()
    cfg = chunk._launch_config(2, dim_k, dim_v, bf16)
    common = dict(K=dim_k, V=dim_v, BT=cfg.BT, NEG=True, BF16=bf16, PRECISION=chunk._precision(bf16))
    n_v = triton.cdiv(dim_v, cfg.bwd_dx.BV)
    walk = common | dict(USE_H0=True, STORE_HT=True)
    hy = cfg.fwd_hy or cfg.fwd_h  # the one-launch forward where the configuration has one
    launches = [
        (kf.chunk_ssd_decay_kernel, dict(BT=cfg.BT, NEG=True), KernelConfig(0, 0, 4, 3)),
        (kf.chunk_ssd_fwd_h_kernel, walk | dict(BK=cfg.fwd_h.BK, BV=cfg.fwd_h.BV), cfg.fwd_h),
        (kf.chunk_ssd_fwd_hy_kernel, walk | dict(BK=hy.BK, BV=hy.BV, HAS_D=True), hy),
        (kf.chunk_ssd_fwd_y_kernel, walk | dict(BK=hy.BK, BV=hy.BV, HAS_D=True), hy),
        (kf.chunk_ssd_fwd_h_pairs_kernel, walk | dict(BK=cfg.fwd_h.BK, BV=cfg.fwd_h.BV), cfg.fwd_h),
        (kf.chunk_ssd_fwd_o_kernel, common | dict(BK=cfg.fwd_o.BK, BV=cfg.fwd_o.BV, HAS_D=True), cfg.fwd_o),
        (kb.chunk_ssd_bwd_dh_kernel,
         common | dict(BK=cfg.bwd_dh.BK, BV=cfg.bwd_dh.BV, USE_DHT=True, STORE_DH0=True), cfg.bwd_dh),
        (kb.chunk_ssd_bwd_dx_kernel, common | dict(BK=cfg.bwd_dx.BK, BV=cfg.bwd_dx.BV, HAS_D=True),
         cfg.bwd_dx),
        (kb.chunk_ssd_bwd_dqk_kernel,
         common | dict(BK=cfg.bwd_dqk.BK, BV=cfg.bwd_dqk.BV, NV=triton.cdiv(dim_v, cfg.bwd_dqk.BV), NVX=n_v,
                       HAS_D=True, RB=512), cfg.bwd_dqk),
    ]  # fmt: skip
    out = {}
    for fn, consts, kc in launches:
        if names is not None and not fn.__name__.endswith(tuple(names)):
            continue
        signature = {}
        for p in fn.params:
            if p.is_constexpr:
                signature[p.name] = "constexpr"
            elif p.name in ("T", "NB", "H", "G", "NB_A"):
                signature[p.name] = "i32"
            else:
                fp32 = bf16 is False or p.name in (
                    "A",
                    "D",
                    "gam",
                    "sig",
                    "dtc",
                    "red",
                    "h0",
                    "ht",
                    "dht",
                    "dh0",
                    "ddt_part",
                    "dA",
                    "dD",
                )
                signature[p.name] = "*fp32" if fp32 else "*bf16"
        out[fn.__name__] = compile_for_hopper(fn, signature, consts, kc)
    return out


@pytest.mark.slow
def test_launch_configs_fit_hopper_shared_memory():
    # The largest tiles of each dtype, compiled for sm_90 in processes without the interpreter, side by
    # side: every kernel's shared memory within Hopper's 227 KB. bf16 at K = V = 128 all kernels; fp32
    # the dB/dC kernel at K = V = 128 (its largest tiles), the all-of-K kernels at K = 256 and the
    # one-launch forward walk at K = V = 64 (compiled in plain Python, this also checks what the
    # interpreter cannot: e.g. names used outside the scope the compiler gives them).
    cases = [
        (128, 128, False, ("dqk_kernel",)),
        (256, 96, False, ("o_kernel", "dx_kernel")),
        (128, 128, True, None),
        (64, 64, False, ("fwd_hy_kernel", "fwd_y_kernel")),
    ]
    for case, shared in run_outside_interpreter("tests.kernels.test_ssd:shared_memory_bytes", cases).items():
        assert len(shared) == (9 if case[3] is None else len(case[3]))
        assert all(0 <= v <= 227 * 1024 for v in shared.values()), (case, shared)


@pytest.mark.gpu
@pytest.mark.parametrize("neg", [False, True])
# the first: the walk in pairs of chunks (17 chunks: the last pair has one), the last: the one-launch forward
@pytest.mark.parametrize(
    "shape",
    [(2, 1050, 4, 2, 64, 64), (1, 300, 4, 4, 128, 128), (1, 200, 2, 1, 256, 96), (3, 200, 4, 2, 32, 48)],
)
def test_triton_bf16_accuracy_on_gpu(shape, neg):
    check_triton(placed(ssd_inputs(*shape, seed=3), BF16), neg, BF16)


@pytest.mark.gpu
@pytest.mark.parametrize("neg", [False, True])
def test_triton_fp32_accuracy_on_gpu(neg):
    check_triton(placed(ssd_inputs(2, 1000, 4, 1, 64, 32, seed=4), F32), neg)


@pytest.mark.gpu
def test_gpu_batch_times_heads_past_65535():
    # One program per (batch, head) for each chunk: more than a grid axis takes; A, D per row too.
    (B, T, H, K, V), kw = wide_batch()
    inputs = dict(
        x=torch.randn(B, T, H, V, **kw), dt=torch.rand(B, T, H, **kw), A=-torch.rand(H, **kw) - 0.2,
        B=torch.randn(B, T, 1, K, **kw) / 4, C=torch.randn(B, T, 1, K, **kw) / 4, D=torch.randn(H, **kw),
    )  # fmt: skip
    kw = dict(output_final_state=True, allow_neg_eigval=True)
    ref = forward_backward(torch_backend, inputs, **kw)
    assert_close_rel(forward_backward(triton_backend, inputs, **kw), ref, F32)
    per = [dict(inputs, x=inputs["x"] * (1 + i)) for i in range(2)]
    vmapped_vs_separate("triton", [{k: v[: B // 2] if v.dim() > 1 else v for k, v in p.items()} for p in per],
                        (0,) * 6)  # fmt: skip


@pytest.mark.gpu
def test_cached_launch_matches_triton_launch_and_tracks_alignment(monkeypatch):
    # _host.launch keeps each compiled kernel under a key of what triton specializes on and launches it
    # directly on later calls: the same results, bit for bit, as triton's own launch (the kernels have no
    # atomics), from the cache (no new entries the second time), and an x two bytes off 16-byte
    # alignment gets kernels of its own (one compiled for aligned pointers would misread it).
    inputs = placed(ssd_inputs(2, 300, 4, 2, 32, 48, seed=7), BF16)
    kw = dict(cot_dtype=BF16, output_final_state=True)
    first = forward_backward(triton_backend, inputs, **kw)
    cached = len(_host._COMPILED)
    again = forward_backward(triton_backend, inputs, **kw)
    assert len(_host._COMPILED) == cached > 0
    monkeypatch.setattr(_host, "_FAST_LAUNCH", False)
    plain = forward_backward(triton_backend, inputs, **kw)
    monkeypatch.setattr(_host, "_FAST_LAUNCH", True)
    for other in (again, plain):
        assert all(torch.equal(first[n], other[n]) for n in first)
    buf = torch.zeros(inputs["x"].numel() + 1, device="cuda", dtype=BF16)
    x_off = buf[1:].view(inputs["x"].shape)
    x_off.copy_(inputs["x"])
    assert x_off.data_ptr() % 16 != 0
    with torch.no_grad():
        y_ref, s_ref = chunk_ssd(**inputs, output_final_state=True)
        y_off, s_off = chunk_ssd(**(inputs | dict(x=x_off)), output_final_state=True)
    assert len(_host._COMPILED) > cached
    assert torch.equal(y_off, y_ref) and torch.equal(s_off, s_ref)
