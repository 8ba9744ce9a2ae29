import ast
import os
import subprocess
import sys

import pytest
import torch
import triton

from kernels.ssd import chunk_ssd, naive_chunk_ssd, naive_recurrent_ssd

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GRAD_NAMES = ("x", "dt", "A", "B", "C", "D", "initial_state")
# (B, T, H, G, K, V): T = 1, 63, 100, 257; K ≠ V; G < H; V split into several blocks (H·B small).
AWKWARD = [(1, 1, 2, 1, 8, 12), (2, 63, 4, 2, 16, 32), (2, 100, 2, 2, 32, 8), (1, 257, 4, 1, 8, 20)]


def make_inputs(n_batch, seq_len, num_heads, n_groups, dim_k, dim_v, *, seed=0, dtype=torch.float64,
                device="cpu", dta=None):
    """Random SSD inputs; with dta=(lo, hi) every dt·A lies in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(generator=g, dtype=torch.float64)
    x = torch.randn(n_batch, seq_len, num_heads, dim_v, **f64)
    dt = torch.nn.functional.softplus(torch.randn(n_batch, seq_len, num_heads, **f64) - 1.0)
    A = -(0.2 + 2.0 * torch.rand(num_heads, **f64))
    if dta is not None:
        lo, hi = dta
        dt = (hi + (lo - hi) * torch.rand(n_batch, seq_len, num_heads, **f64)) / A
    B = torch.randn(n_batch, seq_len, n_groups, dim_k, **f64) / dim_k**0.5
    C = torch.randn(n_batch, seq_len, n_groups, dim_k, **f64) / dim_k**0.5
    D = torch.randn(num_heads, **f64)
    h0 = torch.randn(n_batch, num_heads, dim_k, dim_v, **f64)
    out = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, initial_state=h0)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return {k: v.to(device=device, dtype=state_dtype if k == "initial_state" else dtype)
            for k, v in out.items()}


def run(fn, inputs, neg, cot_dtype, seed=1, final_state=True):
    """Forward + backward with a fixed random cotangent (rounded to cot_dtype) on y and the state."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    y, s = fn(**leaves, output_final_state=final_state, allow_neg_eigval=neg)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(cot_dtype).to(y)
    loss = (y * dy).sum()
    if final_state:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=torch.float64).to(s)).sum()
    loss.backward()
    return y.detach(), None if s is None else s.detach(), {k: leaves[k].grad for k in inputs}


def reference(inputs, neg, cot_dtype, final_state=True):
    """The float64 recurrence on the very same (already rounded) inputs."""
    inputs64 = {k: v.detach().double() for k, v in inputs.items()}
    return run(naive_recurrent_ssd, inputs64, neg, cot_dtype, final_state=final_state)


def rel_rms(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def triton_backend(**kw):
    return chunk_ssd(**kw, backend="triton")


def torch_backend(**kw):
    return chunk_ssd(**kw, backend="torch")


@pytest.fixture
def poisoned(monkeypatch):
    """Every torch.empty comes back full of NaN, so an element a kernel fails to write shows up."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", empty)


def assert_all_close(got, ref, tol, tol_decay=None):
    (y, s, grads), (y_ref, s_ref, g_ref) = got, ref
    errors = {"y": rel_rms(y, y_ref)}
    if s_ref is not None:
        errors["final_state"] = rel_rms(s, s_ref)
    errors |= {f"d{k}": rel_rms(grads[k], g_ref[k]) for k in g_ref}
    limits = {k: (tol_decay or tol) if k in ("ddt", "dA") else tol for k in errors}
    assert all(torch.isfinite(t).all() for t in [y, *grads.values()] + ([] if s is None else [s]))
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= limits[k]}
    assert not bad, f"relative RMS error above {tol}: {bad}"


@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize("seq_len", [1, 63, 100, 257])
def test_chunked_torch_matches_recurrence_float64(seq_len, neg):
    inputs = make_inputs(2, seq_len, 4, 2, 8, 12)
    y_ref, s_ref, g_ref = run(naive_recurrent_ssd, inputs, neg, torch.float64)
    y, s, grads = run(torch_backend, inputs, neg, torch.float64)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)
    for name in GRAD_NAMES:
        torch.testing.assert_close(grads[name], g_ref[name], rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize("shape", AWKWARD, ids=[f"T{s[1]}" for s in AWKWARD])
def test_triton_matches_recurrence_fp32(shape, neg, poisoned):
    inputs = make_inputs(*shape, dtype=torch.float32, device=DEVICE, seed=shape[1])
    got = run(triton_backend, inputs, neg, torch.float32)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert_all_close(got, reference(inputs, neg, torch.float32), tol=1e-4)


@pytest.mark.parametrize(("neg", "forward"),
                         [(False, "walk_decay"), (True, "decay_kernel"), (True, "one_launch")])
def test_triton_split_tiles_match_recurrence(neg, forward, poisoned, monkeypatch):
    # Every kernel split into several K- and V-blocks (the o and dx kernels walk K in three blocks, the
    # dB/dC kernel sums the dx kernel's V-block shares of d dt), as the launch configuration does at
    # large K and V on a GPU. The forward: the walk forms the chunk decays, or their own kernel does,
    # or the walk (all of K, three V-blocks) gives y as well.
    from kernels._host import KernelConfig
    from kernels.ssd import chunk

    small = KernelConfig(BK=16, BV=16, num_warps=4, num_stages=2)
    fwd_hy = KernelConfig(BK=64, BV=16, num_warps=4, num_stages=2) if forward == "one_launch" else None
    # the output kernel: all of K in one block, or walking it
    o = KernelConfig(BK=64 if forward == "walk_decay" else 16, BV=16, num_warps=4, num_stages=2)
    cfg = chunk.LaunchConfig(BT=32, fwd_h=small, fwd_o=o, bwd_dh=small, bwd_dx=small, bwd_dqk=small,
                             fwd_hy=fwd_hy)
    monkeypatch.setattr(chunk, "_launch_config", lambda *args: cfg)
    monkeypatch.setattr(chunk, "WALK_DECAY_MAX_CHUNKS", 0 if forward == "decay_kernel" else 16)
    inputs = make_inputs(2, 75, 4, 2, 40, 36, dtype=torch.float32, device=DEVICE, seed=5)
    assert_all_close(run(triton_backend, inputs, neg, torch.float32),
                     reference(inputs, neg, torch.float32), tol=1e-4)


@pytest.mark.parametrize("neg", [False, True])
def test_triton_without_optional_inputs(neg, poisoned):
    inputs = make_inputs(2, 70, 2, 1, 16, 16, dtype=torch.float32, device=DEVICE)
    del inputs["D"], inputs["initial_state"]
    got = run(triton_backend, inputs, neg, torch.float32, final_state=False)
    assert got[1] is None
    assert_all_close(got, reference(inputs, neg, torch.float32, final_state=False), tol=1e-4)


@pytest.mark.parametrize("neg", [False, True])
def test_triton_no_nan_with_strong_decay(neg, poisoned):
    # dt·A ∈ [−20, −5] per step: the chunk's cumulative log decay Γ reaches ~−1280 in fp32, so every
    # decay exp(Γ_i − Γ_j) carries a relative error up to ~BT·|Γ|·2⁻²⁴ from rounding Γ alone; dA sums
    # such terms with cancellation (one head's dA is ~1% of its terms), so its bound is 1e-3 (the
    # interpreter gives 5e-5, an H100 2.4e-4, fp32 autograd through the torch path 4.8e-3).
    inputs = make_inputs(1, 130, 2, 1, 16, 16, dtype=torch.float32, device=DEVICE, dta=(-20.0, -5.0))
    assert_all_close(run(triton_backend, inputs, neg, torch.float32),
                     reference(inputs, neg, torch.float32), tol=1e-4, tol_decay=1e-3)


def test_triton_decay_near_zero_keeps_dt_gradient():
    # allow_neg_eigval with dt·A ≈ −ln 2 puts |a_t| ≲ 1e-2, where d log|a_t| / dt = 2 e^x / a_t is
    # large; the kernel must keep dL/d dt accurate. The bound for dt and A is 1e-3, not 1e-4, because
    # rounding the product dt·A to fp32 moves a_t ≈ 1e-4 by ~1e-3 relative in any fp32 implementation
    # (autograd through the fp32 torch path errs ~3e-3 here).
    inputs = make_inputs(1, 64, 2, 1, 16, 16, dtype=torch.float32, device=DEVICE, dta=(-0.70, -0.686))
    assert_all_close(run(triton_backend, inputs, True, torch.float32),
                     reference(inputs, True, torch.float32), tol=1e-4, tol_decay=1e-3)


def test_triton_mixed_dtypes():
    # bf16 x and B with fp32 dt, A, C, D: cast inside; y and each gradient keep their input's dtype.
    # (The interpreter truncates on bf16 stores, hence the looser bound than on a GPU.)
    inputs = make_inputs(1, 40, 2, 1, 16, 16, device=DEVICE, dtype=torch.float32)
    inputs["x"], inputs["B"] = inputs["x"].bfloat16(), inputs["B"].bfloat16()
    got = run(triton_backend, inputs, True, torch.bfloat16)
    assert got[0].dtype == torch.bfloat16 and got[2]["B"].dtype == torch.bfloat16
    assert got[2]["C"].dtype == torch.float32
    assert_all_close(got, reference(inputs, True, torch.bfloat16), tol=1e-2)


def test_triton_inference_path_matches_autograd_path():
    inputs = make_inputs(2, 90, 2, 2, 16, 16, dtype=torch.float32, device=DEVICE)
    with torch.no_grad():
        y, s = chunk_ssd(**inputs, output_final_state=True, allow_neg_eigval=True)
    y_grad, s_grad, _ = run(triton_backend, inputs, True, torch.float32)
    torch.testing.assert_close(y, y_grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s, s_grad, rtol=1e-6, atol=1e-6)


def test_negative_eigenvalues_flip_the_state_sign():
    # dt·A very negative makes a_t → −1 under allow_neg_eigval: the state alternates sign.
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


@pytest.mark.parametrize("backend", ["chunked", "recurrence"])
@pytest.mark.parametrize("neg", [False, True])
def test_gradcheck_float64(neg, backend):
    inputs = make_inputs(1, 5, 2, 1, 3, 2)
    names = list(inputs)

    def f(*args):
        kw = dict(zip(names, args))
        if backend == "chunked":  # chunks of 2: state passing across three chunks, one partial
            return naive_chunk_ssd(**kw, output_final_state=True, allow_neg_eigval=neg, chunk_size=2)
        return naive_recurrent_ssd(**kw, output_final_state=True, allow_neg_eigval=neg)

    assert torch.autograd.gradcheck(f, [v.clone().requires_grad_(True) for v in inputs.values()])


def test_bad_inputs_raise_value_error(monkeypatch):
    inputs = make_inputs(1, 4, 3, 1, 4, 4)
    with pytest.raises(ValueError, match="A must be"):
        chunk_ssd(**(inputs | {"A": inputs["A"][:2]}), backend="torch")
    with pytest.raises(ValueError, match="backend"):
        chunk_ssd(**inputs, backend="cuda")
    with pytest.raises(ValueError, match="n_groups"):
        chunk_ssd(**(inputs | {"B": inputs["B"].repeat(1, 1, 2, 1), "C": inputs["C"].repeat(1, 1, 2, 1)}))
    if DEVICE == "cpu":
        with monkeypatch.context() as m:
            m.delenv("TRITON_INTERPRET", raising=False)
            with pytest.raises(ValueError, match="CUDA tensors"):
                chunk_ssd(**inputs)
    big = make_inputs(1, 2, 1, 1, 300, 4, device=DEVICE)
    with pytest.raises(ValueError, match="K <= 256|K \\(d_state\\)"):
        chunk_ssd(**big)


def shared_memory_bytes(dim_k, dim_v, bf16, names=None):
    """{kernel: shared memory} of the SSD kernels (all, or those whose names end in one of names)
    compiled for sm_90 under chunk_ssd's launch configuration (needs triton's ptxas, no GPU, and
    TRITON_INTERPRET unset)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels._host import KernelConfig
    from kernels.ssd import chunk

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
        (kb.chunk_ssd_bwd_dx_kernel, common | dict(BK=cfg.bwd_dx.BK, BV=cfg.bwd_dx.BV, HAS_D=True), cfg.bwd_dx),
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
                fp32 = bf16 is False or p.name in ("A", "D", "gam", "sig", "dtc", "red", "h0", "ht", "dht",
                                               "dh0", "ddt_part", "dA", "dD")
                signature[p.name] = "*fp32" if fp32 else "*bf16"
        kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts),
                                target=GPUTarget("cuda", 90, 32),
                                options=dict(num_warps=kc.num_warps, num_stages=kc.num_stages))
        out[fn.__name__] = kernel.metadata.shared
    return out


@pytest.mark.slow
def test_launch_configs_fit_hopper_shared_memory():
    # The largest tiles of each dtype, compiled for sm_90 in processes without the interpreter, side by
    # side: every kernel's shared memory within Hopper's 227 KB. bf16 at K = V = 128 all kernels; fp32
    # the dB/dC kernel at K = V = 128 (its largest tiles), the all-of-K kernels at K = 256 and the
    # one-launch forward walk at K = V = 64 (compiled in plain Python, this also checks what the
    # interpreter cannot: e.g. names used outside the scope the compiler gives them).
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip("triton without its bundled ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = {}
    cases = [(128, 128, False, ("dqk_kernel",)), (256, 96, False, ("o_kernel", "dx_kernel")),
             (128, 128, True, None), (64, 64, False, ("fwd_hy_kernel", "fwd_y_kernel"))]
    for dims in cases:
        code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_ssd; "
                f"print(test_ssd.shared_memory_bytes(*{dims}))")
        procs[dims] = subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for dims, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (dims, err[-2000:])
        shared = ast.literal_eval(out.strip().splitlines()[-1])
        assert len(shared) == (9 if dims[3] is None else len(dims[3]))
        assert all(0 <= v <= 227 * 1024 for v in shared.values()), (dims, shared)


@pytest.mark.gpu
@pytest.mark.parametrize("neg", [False, True])
# the first: the walk in pairs of chunks (17 chunks: the last pair has one), the last: the one-launch forward
@pytest.mark.parametrize("shape", [(2, 1050, 4, 2, 64, 64), (1, 300, 4, 4, 128, 128), (1, 200, 2, 1, 256, 96),
                                   (3, 200, 4, 2, 32, 48)])
def test_triton_bf16_accuracy_on_gpu(shape, neg, poisoned):
    inputs = make_inputs(*shape, dtype=torch.bfloat16, device="cuda", seed=3)
    got = run(triton_backend, inputs, neg, torch.bfloat16)
    assert_all_close(got, reference(inputs, neg, torch.bfloat16), tol=5e-3, tol_decay=1e-2)


@pytest.mark.gpu
def test_cached_launch_matches_triton_launch_and_tracks_alignment(monkeypatch):
    # chunk._launch keeps each compiled kernel under a key of what triton specializes on and launches it
    # directly on later calls: the same results, bit for bit, as triton's own launch (the kernels have no
    # atomics), from the cache (no new entries the second time), and an x two bytes off 16-byte
    # alignment gets kernels of its own (one compiled for aligned pointers would misread it).
    from kernels.ssd import chunk

    inputs = make_inputs(2, 300, 4, 2, 32, 48, dtype=torch.bfloat16, device="cuda", seed=7)
    first = run(triton_backend, inputs, False, torch.bfloat16)
    cached = len(chunk._COMPILED)
    again = run(triton_backend, inputs, False, torch.bfloat16)
    assert len(chunk._COMPILED) == cached > 0
    monkeypatch.setattr(chunk, "_FAST_LAUNCH", False)
    plain = run(triton_backend, inputs, False, torch.bfloat16)
    monkeypatch.setattr(chunk, "_FAST_LAUNCH", True)
    for other in (again, plain):
        assert torch.equal(first[0], other[0]) and torch.equal(first[1], other[1])
        assert all(torch.equal(first[2][k], other[2][k]) for k in GRAD_NAMES)
    buf = torch.empty(inputs["x"].numel() + 1, device="cuda", dtype=torch.bfloat16)
    x_off = buf[1:].view(inputs["x"].shape)
    x_off.copy_(inputs["x"])
    assert x_off.data_ptr() % 16 != 0
    with torch.no_grad():
        y_ref, s_ref = chunk_ssd(**inputs, output_final_state=True)
        y_off, s_off = chunk_ssd(**(inputs | dict(x=x_off)), output_final_state=True)
    assert len(chunk._COMPILED) > cached
    assert torch.equal(y_off, y_ref) and torch.equal(s_off, s_ref)


@pytest.mark.gpu
@pytest.mark.parametrize("neg", [False, True])
def test_triton_fp32_accuracy_on_gpu(neg, poisoned):
    inputs = make_inputs(2, 1000, 4, 1, 64, 32, dtype=torch.float32, device="cuda", seed=4)
    assert_all_close(run(triton_backend, inputs, neg, torch.float32),
                     reference(inputs, neg, torch.float32), tol=1e-4)
