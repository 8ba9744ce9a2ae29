"""Gated DeltaNet chunked op: launch configs and grids, the host side of the Triton kernels
(`triton_fwd.py`, `triton_bwd.py`, imported on first use), the autograd.Function, the public op.

Seven launches per training step (README.md has the algebra):
  fwd_prep      (parallel over chunks)     T = (I + A)⁻¹, w = T(βe^G k), u = T(βv)
  fwd_h         (sequential over chunks)   δ = u − w h and the state h; saves h per chunk and δ
  fwd_o         (parallel)                 o = scale((q e^G) h + (q kᵀ ⊙ Γ) δ)
  bwd_dd_local  (parallel)                 scale (q kᵀ ⊙ Γ)ᵀ do
  bwd_dh        (sequential, reversed)     dδ, dh at each chunk end, dh0
  bwd_wy        (parallel over chunks)     dv, dβ and the A-path parts of dk, dg (through dY = Tᵀ dδ)
  bwd_qk        (parallel over chunks)     dq, dk, dg from h, δ, dh and bwd_wy's parts
The state is carried and accumulated in fp32; dot operands and saved intermediates are in the inputs'
precision (bf16 under autocast, fp32 for fp32 inputs).
"""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels import _host
from kernels._host import KernelConfig, cdiv, launch
from kernels.gated_delta_rule.naive import check_inputs, naive_chunk_gated_delta_rule


@functools.cache
def _kernels():
    """The forward and backward kernel modules (triton is imported on the first call)."""
    return _host.import_kernels("kernels.gated_delta_rule.triton_fwd"), _host.import_kernels(
        "kernels.gated_delta_rule.triton_bwd"
    )


@dataclass(frozen=True)
class LaunchConfig:
    BT: int  # chunk length
    prep: KernelConfig  # chunk_gated_delta_rule_fwd_prep_kernel
    fwd_h: KernelConfig  # chunk_gated_delta_rule_fwd_h_kernel
    fwd_o: KernelConfig  # chunk_gated_delta_rule_fwd_o_kernel
    dd_local: KernelConfig  # chunk_gated_delta_rule_bwd_dd_local_kernel
    bwd_dh: KernelConfig  # chunk_gated_delta_rule_bwd_dh_kernel
    bwd_wy: KernelConfig  # chunk_gated_delta_rule_bwd_wy_kernel
    bwd_qk: KernelConfig  # chunk_gated_delta_rule_bwd_qk_kernel


def _width(x: int, half: bool, key: bool) -> int:
    """A tile width for half-precision tiles: 32 columns, and 16 in the key dimension or in the
    chunk-parallel forward kernels, become 64 (such tiles faulted with triton 3.6 on Hopper: README.md);
    the descriptors zero-fill and clip the extra columns."""
    return 64 if half and (x == 32 or (key and x == 16)) else x


@functools.cache
def _launch_config(BH: int, K: int, V: int, half: bool, BT: int, wide: bool = True) -> LaunchConfig:
    """Tiles, warps and stages per kernel; `wide=False` skips the widening of narrow half-precision
    tiles (`_width`). The sequential sweeps are parallel only over B·H and V blocks: their BV shrinks
    until the grid covers the GPU's SMs about twice; the reverse sweep at K = 128 has two pipeline
    stages, so that two programs fit an SM's shared memory. The gradient kernels walk V in 16-wide
    blocks with 4 warps (two programs per SM; 8 warps for bwd_qk at K = 128, whose registers would
    spill). The measurements behind these choices: `bench_gdn.py --variants`, benchmarks/RESULTS.md."""
    BK = max(16, 1 << (K - 1).bit_length())
    BV_max = max(16, min(1 << (V - 1).bit_length(), 64 if BK <= 128 else 32))
    BV_seq = BV_max
    while BV_seq > 16 and BH * cdiv(V, BV_seq) < 256:
        BV_seq //= 2
    BV_bwd = 16 if half else min(BV_max, 32)
    stages_bwd = 3 if half else 2
    warps_qk = (4 if BK <= 64 else 8) if half else (4 if BK <= 32 else 8)
    if wide:
        BK, BV_max, BV_seq, BV_bwd = (
            _width(BK, half, True), _width(BV_max, half, True), _width(BV_seq, half, False),
            _width(BV_bwd, half, False),
        )  # fmt: skip
    return LaunchConfig(
        BT=BT,
        prep=KernelConfig(BK, BV_max, 4, 3),
        fwd_h=KernelConfig(BK, BV_seq, 4, 3),
        fwd_o=KernelConfig(BK, BV_max, 4, 3),
        dd_local=KernelConfig(BK, BV_max, 4, 3),
        bwd_dh=KernelConfig(BK, BV_seq, 4, 3 if BK <= 64 else 2),
        bwd_wy=KernelConfig(BK, BV_bwd, 4 if half or BK <= 32 else 8, stages_bwd),
        bwd_qk=KernelConfig(BK, BV_bwd, warps_qk, stages_bwd),
    )


def _grids(cfg: LaunchConfig, BH: int, T: int, V: int) -> dict[str, tuple[int, ...]]:
    """The grid of every launch: all on axis 0, programs of one (batch, head) side by side."""
    NT = cdiv(T, cfg.BT)
    return dict(
        prep=(BH * NT,),
        fwd_h=(BH * cdiv(V, cfg.fwd_h.BV),),
        fwd_o=(BH * NT * cdiv(V, cfg.fwd_o.BV),),
        dd_local=(BH * NT * cdiv(V, cfg.dd_local.BV),),
        bwd_dh=(BH * cdiv(V, cfg.bwd_dh.BV),),
        bwd_wy=(BH * NT,),
        bwd_qk=(BH * NT,),
    )


def _aligned(x: torch.Tensor) -> torch.Tensor:
    """Contiguous, with a 16-byte aligned start, as tensor descriptors (TMA) require."""
    x = x.contiguous()
    return x if x.data_ptr() % 16 == 0 else x.clone()


def _td(x: torch.Tensor, BT: int, W: int):
    """Host-side descriptor of a [B, T, H, D] tensor in [BT, W] tiles of one batch and head."""
    return _kernels()[0].TensorDescriptor.from_tensor(x, [1, BT, 1, W])


def _sd(x: torch.Tensor | None, R: int, W: int):
    """Host-side descriptor of a stack of matrices [N1, N2, R', D] (states per chunk, T per chunk, or
    [B, H, K, V] states) in [R, W] tiles; None stays None."""
    return None if x is None else _kernels()[0].TensorDescriptor.from_tensor(x, [1, 1, R, W])


def _dot_dtype(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.dtype:
    """Operand dtype of the dots and of the saved intermediates: half precision if any of q, k, v
    comes in it (as autocast hands them over), else fp32."""
    for x in (q, k, v):
        if x.dtype in (torch.bfloat16, torch.float16):
            return x.dtype
    return torch.float32


def _precision(dt: torch.dtype) -> str:
    # fp32 dots stay exact fp32 for fp32 inputs; with half-precision operands only the (I + A)⁻¹
    # merges see fp32 operands, and tf32 carries more mantissa than the inputs do.
    return "ieee" if _host.INTERPRET or dt == torch.float32 else "tf32"


def _setup(q, v, dt, use_l2norm, BT):
    B, T, H, K = q.shape
    V = v.shape[-1]
    cfg = _launch_config(B * H, K, V, dt != torch.float32, BT)
    common = dict(K=K, V=V, BT=BT, USE_L2NORM=use_l2norm, PRECISION=_precision(dt), EMU=_host.INTERPRET)
    return cfg, _grids(cfg, B * H, T, V), common


def chunk_gated_delta_rule_fwd(q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, BT):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = cdiv(T, BT)
    dt = _dot_dtype(q, k, v)
    cfg, grids, common = _setup(q, v, dt, use_l2norm, BT)
    kf, _ = _kernels()
    dev = q.device
    Ai = torch.empty(B * H, NT, BT, BT, device=dev, dtype=dt)
    w = torch.empty(B, T, H, K, device=dev, dtype=dt)
    kt = torch.empty(B, T, H, K, device=dev, dtype=dt)
    gl = torch.empty(B * H, NT, device=dev, dtype=torch.float32)
    u = torch.empty(B, T, H, V, device=dev, dtype=dt)
    dlt = torch.empty(B, T, H, V, device=dev, dtype=dt)
    hs = torch.empty(B * H, NT, K, V, device=dev, dtype=dt)  # tiles past K: zero-filled, clipped
    o = torch.empty_like(v)
    ht = torch.empty(B, H, K, V, device=dev, dtype=torch.float32) if output_final_state else None
    c = cfg.prep
    launch(
        kf.chunk_gated_delta_rule_fwd_prep_kernel, grids["prep"],
        (_td(k, BT, c.BK), _td(v, BT, c.BV), g, beta, _sd(Ai, BT, BT), _td(w, BT, c.BK), _td(u, BT, c.BV),
         _td(kt, BT, c.BK), gl, T, H),
        c, BK=c.BK, BV=c.BV, **common,
    )  # fmt: skip
    c = cfg.fwd_h
    launch(
        kf.chunk_gated_delta_rule_fwd_h_kernel, grids["fwd_h"],
        (_td(kt, BT, c.BK), _td(w, BT, c.BK), _td(u, BT, c.BV), gl, _sd(initial_state, c.BK, c.BV),
         _sd(hs, c.BK, c.BV), _td(dlt, BT, c.BV), _sd(ht, c.BK, c.BV), T, H),
        c, BK=c.BK, BV=c.BV, USE_H0=initial_state is not None, STORE_HT=output_final_state, **common,
    )  # fmt: skip
    c = cfg.fwd_o
    launch(
        kf.chunk_gated_delta_rule_fwd_o_kernel, grids["fwd_o"],
        (_td(q, BT, c.BK), _td(k, BT, c.BK), g, _sd(hs, c.BK, c.BV), _td(dlt, BT, c.BV), _td(o, BT, c.BV),
         scale, T, H),
        c, BK=c.BK, BV=c.BV, **common,
    )  # fmt: skip
    return o, ht, (Ai, w, kt, gl, hs, dlt)


def chunk_gated_delta_rule_bwd(q, k, v, g, beta, saved, do, dht, scale, use_h0, use_l2norm, BT):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = cdiv(T, BT)
    Ai, w, kt, gl, hs, dlt = saved
    dt = w.dtype
    cfg, grids, common = _setup(q, v, dt, use_l2norm, BT)
    _, kb = _kernels()
    dev = q.device
    ddl = torch.empty(B, T, H, V, device=dev, dtype=dt)
    qg = torch.empty(B, T, H, K, device=dev, dtype=dt)
    dd = torch.empty(B, T, H, V, device=dev, dtype=dt)
    dh = torch.empty(B * H, NT, K, V, device=dev, dtype=dt)
    dh0 = torch.empty(B, H, K, V, device=dev, dtype=torch.float32) if use_h0 else None
    c = cfg.dd_local
    launch(
        kb.chunk_gated_delta_rule_bwd_dd_local_kernel, grids["dd_local"],
        (_td(q, BT, c.BK), _td(k, BT, c.BK), g, _td(do, BT, c.BV), _td(ddl, BT, c.BV), _td(qg, BT, c.BK),
         scale, T, H),
        c, BK=c.BK, BV=c.BV, **common,
    )  # fmt: skip
    c = cfg.bwd_dh
    launch(
        kb.chunk_gated_delta_rule_bwd_dh_kernel, grids["bwd_dh"],
        (_td(qg, BT, c.BK), _td(kt, BT, c.BK), _td(w, BT, c.BK), gl, _td(do, BT, c.BV), _td(ddl, BT, c.BV),
         _sd(dht, c.BK, c.BV), _sd(dh, c.BK, c.BV), _td(dd, BT, c.BV), _sd(dh0, c.BK, c.BV), T, H),
        c, BK=c.BK, BV=c.BV, USE_DHT=dht is not None, STORE_DH0=use_h0, **common,
    )  # fmt: skip
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dg, dbeta = torch.empty_like(g), torch.empty_like(beta)
    dkp = torch.empty(B, T, H, K, device=dev, dtype=torch.float32)  # the A-path part of dk
    dgp = torch.empty(B, T, H, device=dev, dtype=torch.float32)
    c = cfg.bwd_wy
    d_hs, d_dlt = _sd(hs, c.BK, c.BV), _td(dlt, BT, c.BV)
    d_k, d_dkp = _td(k, BT, c.BK), _td(dkp, BT, c.BK)
    launch(
        kb.chunk_gated_delta_rule_bwd_wy_kernel, grids["bwd_wy"],
        (d_k, _td(v, BT, c.BV), g, beta, _sd(Ai, BT, BT), d_hs, d_dlt, _td(dd, BT, c.BV), _td(dv, BT, c.BV),
         d_dkp, dgp, dbeta, T, H),
        c, BK=c.BK, BV=c.BV, **common,
    )  # fmt: skip
    c = cfg.bwd_qk
    launch(
        kb.chunk_gated_delta_rule_bwd_qk_kernel, grids["bwd_qk"],
        (_td(q, BT, c.BK), d_k, g, d_hs, d_dlt, _td(do, BT, c.BV), _sd(dh, c.BK, c.BV), d_dkp, dgp,
         _td(dq, BT, c.BK), _td(dk, BT, c.BK), dg, scale, T, H),
        c, BK=c.BK, BV=c.BV, **common,
    )  # fmt: skip
    return dq, dk, dv, dg, dbeta, dh0


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):
    """The op in torch.func style (forward without ctx, setup_context), with a vmap rule that folds a
    vmapped dimension into the batch: under torch.vmap one launch serves every vmapped slice."""

    @staticmethod
    def forward(q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, BT):
        o, ht, saved = chunk_gated_delta_rule_fwd(
            q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, BT
        )
        return o, ht, _host.Saved(saved)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, g, beta, scale, initial_state, _, use_l2norm, BT = inputs
        ctx.save_for_backward(q, k, v, g, beta, *output[2].tensors)
        ctx.scale, ctx.use_h0, ctx.use_l2norm, ctx.BT = scale, initial_state is not None, use_l2norm, BT

    @staticmethod
    def backward(ctx, do, dht, _):
        q, k, v, g, beta, *saved = ctx.saved_tensors
        dq, dk, dv, dg, dbeta, dh0 = chunk_gated_delta_rule_bwd(
            q, k, v, g, beta, saved, do.contiguous(), None if dht is None else dht.contiguous(),
            ctx.scale, ctx.use_h0, ctx.use_l2norm, ctx.BT,
        )  # fmt: skip
        return dq, dk, dv, dg, dbeta, None, dh0, None, None, None

    @staticmethod
    def vmap(info, in_dims, q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, BT):
        n = info.batch_size
        dims = (*in_dims[:5], in_dims[6])
        q, k, v, g, beta, h0 = (
            _host.fold(x, d, n) for x, d in zip((q, k, v, g, beta, initial_state), dims, strict=True)
        )
        o, ht, saved = _apply(q, k, v, g, beta, scale, h0, output_final_state, use_l2norm, BT)
        return (_host.unfold(o, n), _host.unfold(ht, n), saved), (0, None if ht is None else 0, None)


def _apply(q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, BT):
    tensors = (q, k, v, g, beta, initial_state)
    if not _host.is_wrapped(*tensors):  # under a torch.func transform the vmap rule unwraps them first
        q, k, v, g, beta = (_aligned(x) for x in (q, k, v, g, beta))
        initial_state = None if initial_state is None else _aligned(initial_state)
    return ChunkGatedDeltaRuleFunction.apply(
        q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, BT
    )


def chunk_gated_delta_rule(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [B, T, H]
    beta: torch.Tensor,  # [B, T, H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    backend: str = "triton",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over a sequence.

    Returns ``o`` ``[B, T, H, V]`` in v's dtype and, if ``output_final_state``, the final state
    ``[B, H, K, V]`` in float32 (float64 on the torch backend with float64 inputs), else None.
    ``g`` is the log decay (≤ 0), ``beta`` in (0, 2). ``chunk_size`` (a power of two ≥ 16) defaults
    to 64 for bf16 inputs with K ≤ 128, else 32 for K ≤ 64 and 16 above. Inputs of mixed dtypes are
    accepted and cast inside. Works under torch.vmap (the vmapped dimension joins the batch).
    """
    B, T, H, K, V = check_inputs(q, k, v, g, beta, initial_state)
    # 64 rows feed Hopper's warpgroup MMA with half-precision operands; past K = 128, and with fp32
    # operands (no tensor cores, twice the bytes), smaller chunks keep tiles in registers and shared memory.
    half = _dot_dtype(q, k, v) != torch.float32
    C = chunk_size if chunk_size is not None else (64 if half and K <= 128 else 32 if K <= 64 else 16)
    if C < 16 or C & (C - 1):
        raise ValueError(f"chunk_size must be a power of two >= 16; got {chunk_size}")
    _host.check_backend(backend)
    if backend == "torch":
        o, ht = naive_chunk_gated_delta_rule(
            q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, C
        )
        return o, (ht.float() if ht is not None and ht.dtype != torch.float64 else ht)
    if K > 256 or V > 256:
        raise ValueError(f"the triton backend supports K, V <= 256; got K={K}, V={V}")
    _host.check_device(q)
    scale = K**-0.5 if scale is None else float(scale)
    Kp, Vp = -(-K // 8) * 8, -(-V // 8) * 8
    if (Kp, Vp) != (K, V):
        # Tensor descriptors need rows of a multiple of 16 bytes: zero columns change no product
        # (nor the L2 norms) and are cut off the results.
        pk, pv = (0, Kp - K), (0, Vp - V)
        h0 = None if initial_state is None else F.pad(initial_state, (*pv, *pk))
        o, ht = chunk_gated_delta_rule(
            F.pad(q, pk), F.pad(k, pk), F.pad(v, pv), g, beta, scale, h0, output_final_state,
            use_qk_l2norm_in_kernel, backend, C,
        )  # fmt: skip
        return o[..., :V], (None if ht is None else ht[:, :, :K, :V])
    o, ht, _ = _apply(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, C)
    return o, ht
