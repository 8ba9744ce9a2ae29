"""Chunked SSD: launch configs and grids, the host side of the Triton kernels (`triton_fwd.py`,
`triton_bwd.py`, imported on first use), their autograd.Function, and the public `chunk_ssd`.

Forward (1 to 3 launches): up to 8 chunks with all of K in one block, the walk gives y itself in one
launch (`chunk_ssd_fwd_hy_kernel`, or `chunk_ssd_fwd_y_kernel` when nothing is kept for a backward).
Otherwise `chunk_ssd_fwd_h_kernel` (up to 8 chunks, forming the chunk decays itself) or the decay
kernel and `chunk_ssd_fwd_h_pairs_kernel` (two chunks a step) walk the chunks in order and store each
chunk's start state, and `chunk_ssd_fwd_o_kernel` computes every chunk's output in parallel.
Backward (3 launches): `chunk_ssd_bwd_dh_kernel` walks the chunks in reverse for the gradient of each
chunk's end state; `chunk_ssd_bwd_dx_kernel` gives dx, d dt and per-chunk partial sums of dA and dD;
`chunk_ssd_bwd_dqk_kernel` dB and dC, owning all heads of a B/C group so that the group sum happens in
registers, and finishes the dx kernel's sums. The derivation is in README.md.
"""

import functools
from dataclasses import dataclass

import torch

from kernels import _host
from kernels._host import KernelConfig, cdiv, launch, pow2
from kernels.ssd.naive import naive_chunk_ssd

# Up to this many chunks the forward state walk forms the chunk decays itself (no decay kernel; past it
# the walk takes two chunks a step, chunk_ssd_fwd_h_pairs_kernel), and up to ONE_LAUNCH_MAX_CHUNKS (with
# all of K in one block) it gives y as well (no output kernel)
WALK_DECAY_MAX_CHUNKS = 8
ONE_LAUNCH_MAX_CHUNKS = 8


@functools.cache
def _kernels():
    """The forward and backward kernel modules (triton is imported on the first call)."""
    return _host.import_kernels("kernels.ssd.triton_fwd"), _host.import_kernels("kernels.ssd.triton_bwd")


@dataclass(frozen=True)
class LaunchConfig:
    BT: int  # chunk length
    fwd_h: KernelConfig  # the state walks: chunk_ssd_fwd_h_kernel, chunk_ssd_fwd_h_pairs_kernel
    fwd_o: KernelConfig  # chunk_ssd_fwd_o_kernel
    bwd_dh: KernelConfig  # chunk_ssd_bwd_dh_kernel
    bwd_dx: KernelConfig  # chunk_ssd_bwd_dx_kernel
    bwd_dqk: KernelConfig  # chunk_ssd_bwd_dqk_kernel
    # the one-launch forward (chunk_ssd_fwd_hy_kernel, chunk_ssd_fwd_y_kernel) for short walks; None: never
    fwd_hy: KernelConfig | None = None


@functools.lru_cache(maxsize=256)
def _launch_config(n_bh: int, dim_k: int, dim_v: int, bf16: bool) -> LaunchConfig:
    """Tiles, warps and pipeline stages per kernel, chosen by timing every kernel at the four benchmark
    shapes (`bench_ssd.py --sweep` and `--tail`; the numbers are in README.md and RESULTS.md).

    The state walks pipeline 3 stages (the next chunk's loads overlap the dot); the forward walk takes
    64 × 32 tiles with 4 warps; the reverse walk 64 × 32 / 4 warps with few (batch, head) pairs and
    64 × 64 / 8 warps with many. The chunk-parallel kernels: 4 warps, V-blocks of 64; the output kernel
    holds all of K, the dx kernel walks it in blocks of 64; 8 warps past K = 128 (chunks of 32). The dB/dC
    kernel: 4 warps at K, V ≤ 64, 8 warps and 3 stages when it walks two V-blocks per head, one stage
    for fp32 tiles (two would overflow shared memory at K = V = 128). The one-launch forward: all of K
    (≤ 64) in the walk, V-blocks of up to 64. fp32 inputs reuse the tiles; the interpreter ignores it all.
    """
    BK, BV = pow2(dim_k), pow2(dim_v)
    BT = 64 if BK <= 128 else 32
    SK, SV = min(64, BK), min(64, BV)
    wide = 8 if SK * SV >= 4096 else 4
    fwd_h = KernelConfig(SK, min(32, SV), 4, 3)
    if n_bh * cdiv(dim_k, SK) * cdiv(dim_v, SV) >= 256:
        bwd_dh = KernelConfig(SK, SV, wide, 3)
    else:
        bwd_dh = KernelConfig(SK, min(32, SV), 4, 3)
    warps = 4 if BK <= 128 else 8
    fwd_o = KernelConfig(BK, min(64, BV), warps, 2)
    bwd_dx = KernelConfig(min(64, BK), min(64, BV), warps, 3)
    if not bf16:
        bwd_dqk = KernelConfig(min(64, BK), min(64, BV), 8, 1)
    elif BK > 64 or BV > 64:
        bwd_dqk = KernelConfig(min(64, BK), min(64, BV), 8, 3)
    else:
        bwd_dqk = KernelConfig(BK, BV, 4, 1 if BK * BV <= 1024 else 2)
    fwd_hy = KernelConfig(BK, min(64, BV), 4, 2 if BK * BV <= 1024 else 3) if BK <= 64 else None
    return LaunchConfig(BT, fwd_h, fwd_o, bwd_dh, bwd_dx, bwd_dqk, fwd_hy)


def _forward_plan(cfg: LaunchConfig, NT: int) -> tuple[bool, bool]:
    """(one launch: the walk gives y; the walk forms the chunk decays: no decay kernel)."""
    one_launch = cfg.fwd_hy is not None and NT <= ONE_LAUNCH_MAX_CHUNKS
    return one_launch, one_launch or NT <= WALK_DECAY_MAX_CHUNKS


def _grids(cfg: LaunchConfig, n_batch: int, seq_len: int, num_heads: int, n_groups: int, dim_k: int,
           dim_v: int, n_sums: int) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """The grid of every launch; batch × heads (with the chunks, where a kernel is chunk-parallel)
    always on axis 0. n_sums: the dB/dC launch's programs ahead of the chunks' (sums of dA and dD)."""
    NT, n_bh = cdiv(seq_len, cfg.BT), n_batch * num_heads
    walk = cfg.fwd_hy if _forward_plan(cfg, NT)[0] else cfg.fwd_h
    return dict(
        decay=(NT * n_bh,),
        fwd_h=(n_bh, cdiv(dim_k, walk.BK), cdiv(dim_v, walk.BV)),
        fwd_o=(NT * n_bh, cdiv(dim_v, cfg.fwd_o.BV)),
        bwd_dh=(n_bh, cdiv(dim_k, cfg.bwd_dh.BK), cdiv(dim_v, cfg.bwd_dh.BV)),
        bwd_dx=(NT * n_bh, cdiv(dim_v, cfg.bwd_dx.BV)),
        bwd_dqk=(n_sums + NT * n_batch * n_groups, cdiv(dim_k, cfg.bwd_dqk.BK)),
    )


def _bf16_operands(*tensors: torch.Tensor) -> bool:
    return all(t.dtype == torch.bfloat16 for t in tensors)


def _precision(bf16: bool) -> str:
    # fp32 inputs get fp32 products, as under the interpreter; bf16 operands ignore it
    return "tf32" if bf16 else "ieee"


def _setup(x, A, B, C, allow_neg_eigval):
    """Launch config, chunk count, the constexprs every kernel takes, and NB_A: the batches sharing a
    row of A and D ([H] is one row for all; [NA, H] one row per B / NA batches)."""
    n_batch, seq_len, num_heads, dim_v = x.shape
    dim_k = B.shape[3]
    bf16 = _bf16_operands(x, B, C)
    cfg = _launch_config(n_batch * num_heads, dim_k, dim_v, bf16)
    common = dict(K=dim_k, V=dim_v, BT=cfg.BT, NEG=allow_neg_eigval, BF16=bf16, PRECISION=_precision(bf16))
    n_rows = 1 if A.dim() == 1 else A.shape[0]
    return cfg, cdiv(seq_len, cfg.BT), common, n_batch // n_rows


def chunk_ssd_fwd(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval, save_states=True):
    """y, the final state, and (save_states) what the backward reads: h, Γ and σ."""
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    n_bh = n_batch * num_heads
    cfg, NT, common, NB_A = _setup(x, A, B, C, allow_neg_eigval)
    grids = _grids(cfg, n_batch, seq_len, num_heads, n_groups, dim_k, dim_v, 0)
    kf, _ = _kernels()
    dev, f32 = x.device, torch.float32
    one_launch, decay_in_walk = _forward_plan(cfg, NT)
    save_states = save_states or not one_launch  # the output kernel reads them
    if save_states:
        # Γ per chunk, and dt in the same layout (for contiguous loads)
        gam, dtc = torch.empty(2, n_batch, num_heads, NT * cfg.BT, device=dev, dtype=f32)
        sig = torch.empty_like(gam) if allow_neg_eigval else gam  # σ per chunk
        # chunk-start states in the operand dtype: the carried state itself stays fp32 in registers
        h = torch.empty(
            n_bh * NT, dim_k, dim_v, device=dev, dtype=torch.bfloat16 if common["BF16"] else f32
        )  # [B, NT, H] stack of [K, V] (_state_row)
    else:
        gam = sig = dtc = h = None
    y = torch.empty(x.shape, device=dev, dtype=x.dtype)
    ht = torch.empty(n_batch, num_heads, dim_k, dim_v, device=dev, dtype=f32) if output_final_state else None
    h0 = x if initial_state is None else initial_state  # placeholders where a flag turns a pointer off
    walk = dict(USE_H0=initial_state is not None, STORE_HT=output_final_state, **common)
    if one_launch:
        c = cfg.fwd_hy
        walk |= dict(BK=c.BK, BV=c.BV, HAS_D=D is not None)
        tail = (h0, x if ht is None else ht, y, seq_len, num_heads, n_groups, NB_A)
        if save_states:
            args = (x, dt, A, B, C, x if D is None else D, gam, sig, dtc, h0, h, *tail[1:])
            launch(kf.chunk_ssd_fwd_hy_kernel, grids["fwd_h"], args, c, **walk)
        else:
            launch(kf.chunk_ssd_fwd_y_kernel, grids["fwd_h"], (x, dt, A, B, C, x if D is None else D, *tail),
                   c, **walk)  # fmt: skip
        return y, ht, h, gam, sig
    c = cfg.fwd_h
    walk |= dict(BK=c.BK, BV=c.BV)
    if decay_in_walk:
        launch(
            kf.chunk_ssd_fwd_h_kernel, grids["fwd_h"],
            (x, dt, A, B, gam, sig, dtc, h0, h, x if ht is None else ht, seq_len, num_heads, n_groups, NB_A),
            c, **walk,
        )  # fmt: skip
    else:  # the long walk, two chunks a step, after the decay kernel
        launch(
            kf.chunk_ssd_decay_kernel, grids["decay"], (dt, A, gam, sig, dtc, seq_len, num_heads, NB_A),
            BT=cfg.BT, NEG=allow_neg_eigval,
        )  # fmt: skip
        launch(
            kf.chunk_ssd_fwd_h_pairs_kernel, grids["fwd_h"],
            (x, B, gam, sig, dtc, h0, h, x if ht is None else ht, seq_len, num_heads, n_groups),
            c, **walk,
        )  # fmt: skip
    c = cfg.fwd_o
    launch(
        kf.chunk_ssd_fwd_o_kernel, grids["fwd_o"],
        (x, dtc, B, C, x if D is None else D, gam, sig, h, y, seq_len, num_heads, n_groups, NB_A),
        c, BK=c.BK, BV=c.BV, HAS_D=D is not None, **common,
    )  # fmt: skip
    return y, ht, h, gam, sig


def chunk_ssd_bwd(x, dt, A, B, C, D, initial_state, h, gam, sig, dy, dht, allow_neg_eigval):
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    cfg, NT, common, NB_A = _setup(x, A, B, C, allow_neg_eigval)
    # one program per value of dA and dD ahead of the chunks' programs of the dB/dC launch
    n_sums = A.numel() * (1 + (D is not None))
    grids = _grids(cfg, n_batch, seq_len, num_heads, n_groups, dim_k, dim_v, n_sums)
    _, kb = _kernels()
    dev, f32 = x.device, torch.float32
    dh = torch.empty(h.shape, device=dev, dtype=h.dtype)  # gradients of the chunk-end states
    dh0 = (
        torch.empty(n_batch, num_heads, dim_k, dim_v, device=dev, dtype=f32)
        if initial_state is not None
        else None
    )
    c = cfg.bwd_dh
    launch(
        kb.chunk_ssd_bwd_dh_kernel, grids["bwd_dh"],
        (C, dy, gam, sig, dy if dht is None else dht, dh, dh if dh0 is None else dh0, seq_len, num_heads,
         n_groups),
        c, BK=c.BK, BV=c.BV, USE_DHT=dht is not None, STORE_DH0=initial_state is not None, **common,
    )  # fmt: skip
    c = cfg.bwd_dx
    NVX = grids["bwd_dx"][1]
    dx = torch.empty(x.shape, device=dev, dtype=x.dtype)
    ddt = torch.empty(dt.shape, device=dev, dtype=dt.dtype)
    # with several V-blocks their fp32 shares of d dt, summed by the dB/dC kernel
    ddt_part = torch.empty(NVX, *dt.shape, device=dev, dtype=f32) if NVX > 1 else ddt
    red = torch.empty(1 + (D is not None), num_heads, n_batch, NVX, NT, device=dev, dtype=f32)  # dA, dD
    launch(
        kb.chunk_ssd_bwd_dx_kernel, grids["bwd_dx"],
        (x, dt, A, B, C, x if D is None else D, gam, sig, h, dh, dy, dx, ddt_part, red, seq_len, n_batch,
         num_heads, n_groups, NB_A),
        c, BK=c.BK, BV=c.BV, HAS_D=D is not None, **common,
    )  # fmt: skip
    c = cfg.bwd_dqk
    dB = torch.empty(B.shape, device=dev, dtype=B.dtype)
    dC = torch.empty(C.shape, device=dev, dtype=C.dtype)
    dA = torch.empty(A.shape, device=dev, dtype=A.dtype)
    dD = torch.empty(D.shape, device=dev, dtype=D.dtype) if D is not None else None
    launch(
        kb.chunk_ssd_bwd_dqk_kernel, grids["bwd_dqk"],
        (x, dt, B, C, gam, sig, h, dh, dy, dB, dC, ddt_part, ddt, red, dA, dA if dD is None else dD, seq_len,
         n_batch, num_heads, n_groups, NB_A),
        c, BK=c.BK, BV=c.BV, NV=cdiv(dim_v, c.BV), NVX=NVX, HAS_D=D is not None, RB=512, **common,
    )  # fmt: skip
    dh0 = dh0.to(initial_state.dtype) if initial_state is not None else None
    return dx, ddt, dA, dB, dC, dD, dh0


class ChunkSSDFunction(torch.autograd.Function):
    """The op in torch.func style (forward without ctx, setup_context), with a vmap rule that folds a
    vmapped dimension into the batch: under torch.vmap one launch serves every vmapped slice. A and D
    are [H], or [NA, H] with one row per B / NA batches (a vmapped A and D)."""

    @staticmethod
    def forward(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval, save_states):
        y, ht, h, gam, sig = chunk_ssd_fwd(
            x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval, save_states
        )
        return y, ht, _host.Saved((h, gam, sig))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, dt, A, B, C, D, initial_state, _, allow_neg_eigval, _ = inputs
        ctx.save_for_backward(x, dt, A, B, C, D, initial_state)
        # intermediates, neither inputs nor outputs: held on ctx (no saved-variable packing)
        ctx.states = output[2].tensors
        ctx.allow_neg_eigval = allow_neg_eigval

    @staticmethod
    def backward(ctx, dy, dht, _):
        x, dt, A, B, C, D, initial_state = ctx.saved_tensors
        h, gam, sig = ctx.states
        grads = chunk_ssd_bwd(
            x, dt, A, B, C, D, initial_state, h, gam, sig, dy.contiguous(),
            None if dht is None else dht.contiguous(), ctx.allow_neg_eigval,
        )  # fmt: skip
        return (*grads, None, None, None)

    @staticmethod
    def vmap(info, in_dims, x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval, _):
        n = info.batch_size
        x, dt, B, C, h0 = (
            _host.fold(t, d, n) for t, d in zip((x, dt, B, C, initial_state), (*in_dims[:2], *in_dims[3:5],
                                                                                in_dims[6]), strict=True)
        )  # fmt: skip
        nested_rows = A.dim() - (in_dims[2] is not None) == 2  # slices of A already [NA, H]
        if nested_rows or in_dims[2] is not None or (D is not None and in_dims[5] is not None):
            A, D = _rows(A, in_dims[2], n), None if D is None else _rows(D, in_dims[5], n)
        y, ht, saved = _apply(x, dt, A, B, C, D, h0, output_final_state, allow_neg_eigval)
        return (_host.unfold(y, n), _host.unfold(ht, n), saved), (0, None if ht is None else 0, None)


def _rows(a: torch.Tensor, dim: int | None, n: int) -> torch.Tensor:
    """A or D of every vmapped slice as contiguous rows: slices [H] → [n, H], slices [NA, H] (under
    nested vmaps) → [n·NA, H]; copied n times where it was not vmapped."""
    a = a.movedim(dim, 0) if dim is not None else a.expand(n, *a.shape)
    return a.reshape(-1, a.shape[-1]).contiguous()


def _apply(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval):
    """The Triton op on its checked inputs; a torch.func transform's wrappers go to the vmap rule."""
    args = (x, dt, A, B, C, D, initial_state)
    if _host.is_wrapped(*args):
        return ChunkSSDFunction.apply(*args, output_final_state, allow_neg_eigval, True)
    args = tuple(t if t is None else t.contiguous() for t in args)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if not needs_grad:
        y, ht = chunk_ssd_fwd(*args, output_final_state, allow_neg_eigval, save_states=False)[:2]
        return y, ht, None
    return ChunkSSDFunction.apply(*args, output_final_state, allow_neg_eigval, True)


def _check(x, dt, A, B, C, D, initial_state, backend):
    _host.check_backend(backend)
    if x.dim() != 4:
        raise ValueError(f"x must be [B, T, H, V], got shape {tuple(x.shape)}")
    n_batch, seq_len, num_heads, dim_v = x.shape
    if tuple(dt.shape) != (n_batch, seq_len, num_heads):
        raise ValueError(f"dt must be [B, T, H] = {(n_batch, seq_len, num_heads)}, got {tuple(dt.shape)}")
    if tuple(A.shape) != (num_heads,):
        raise ValueError(f"A must be [H] = {(num_heads,)}, got {tuple(A.shape)}")
    # plain tuples: a torch.Size compared with a tuple goes through torch's symbolic-shape code
    if B.dim() != 4 or tuple(B.shape[:2]) != (n_batch, seq_len) or tuple(B.shape) != tuple(C.shape):
        raise ValueError(
            f"B and C must both be [B, T, G, K] with B, T = {(n_batch, seq_len)}, "
            f"got {tuple(B.shape)} and {tuple(C.shape)}"
        )
    n_groups, dim_k = B.shape[2:]
    if num_heads % n_groups:
        raise ValueError(f"n_groups (B.shape[2] = {n_groups}) must divide H = {num_heads}")
    if D is not None and tuple(D.shape) != (num_heads,):
        raise ValueError(f"D must be [H] = {(num_heads,)} or None, got {tuple(D.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (n_batch, num_heads, dim_k, dim_v):
        raise ValueError(
            f"initial_state must be [B, H, K, V] = {(n_batch, num_heads, dim_k, dim_v)}, "
            f"got {tuple(initial_state.shape)}"
        )
    if backend == "triton":
        _host.check_device(x)
        if dim_k > 256 or dim_v > 128:
            raise ValueError(
                f"the triton backend takes K (d_state) <= 256 and V (headdim) <= 128, "
                f"got K = {dim_k}, V = {dim_v}; use backend='torch'"
            )


def chunk_ssd(
    x: torch.Tensor,  # [B, T, H, V]
    dt: torch.Tensor,  # [B, T, H]
    A: torch.Tensor,  # [H]
    B: torch.Tensor,  # [B, T, G, K]
    C: torch.Tensor,  # [B, T, G, K]
    D: torch.Tensor | None = None,  # [H]
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    allow_neg_eigval: bool = False,
    backend: str = "triton",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba2 SSD: per head S_t = a_t S_{t-1} + dt_t B_t x_tᵀ, y_t = S_tᵀ C_t + D x_t.

    a_t = exp(dt_t A) or, with allow_neg_eigval, 2 exp(dt_t A) - 1 ∈ (-1, 1]. dt > 0 (softplus'ed),
    A < 0. Head h reads B/C group h // (H // G). Inputs may be bf16 or fp32 (mixed is fine); the
    state and all accumulation are fp32. Returns y [B, T, H, V] in x's dtype and the final state
    [B, H, K, V] in float32 (None unless output_final_state); gradients reach every input.
    backend="torch" runs the chunked algorithm in plain torch (autograd, any device). Works under
    torch.vmap (the vmapped dimension joins the batch, A and D may be vmapped too).
    """
    _check(x, dt, A, B, C, D, initial_state, backend)
    if backend == "torch":
        return naive_chunk_ssd(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval)
    y, ht, _ = _apply(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval)
    return y, ht
