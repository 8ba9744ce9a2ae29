"""The one harness of the kernel tests: NaN-poisoned allocations for every test (autouse), input makers
for both ops, forward + backward with fixed cotangents, and one tolerance table.

Triton kernels run under the interpreter where no GPU is visible (tests/conftest.py sets
TRITON_INTERPRET=1 before any kernel module is imported).
"""

import ast
import functools
import os
import subprocess
import sys

import pytest
import torch

from kernels.gated_delta_rule.naive import l2norm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Relative RMS error against the float64 recurrence on the same (rounded) inputs, by the inputs'
# dtype: (outputs and most gradients, the gradients of the decays and gates: harder conditioned).
TOL = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-3, 1e-2)}
GATE_GRADS = ("dg", "dbeta", "ddt", "dA")


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    """torch.empty, torch.empty_like and Tensor.new_empty hand out floating tensors full of NaN, so an
    output element a kernel never writes shows up as NaN in every kernel test."""

    def poisoned(make):
        @functools.wraps(make)
        def fn(*args, **kwargs):
            t = make(*args, **kwargs)
            return t.fill_(float("nan")) if t.is_floating_point() else t

        return fn

    monkeypatch.setattr(torch, "empty", poisoned(torch.empty))
    monkeypatch.setattr(torch, "empty_like", poisoned(torch.empty_like))
    monkeypatch.setattr(torch.Tensor, "new_empty", poisoned(torch.Tensor.new_empty))


def gdn_inputs(B, T, H, K, V, *, seed=0, decay=1.0, normalize_k=True) -> dict[str, torch.Tensor]:
    """float64 CPU inputs of the gated delta rule: β spans (0, 2), g (log decay) in (−decay, 0]."""
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


def ssd_inputs(B, T, H, G, K, V, *, seed=0, dta=None) -> dict[str, torch.Tensor]:
    """float64 CPU inputs of the SSD; with dta=(lo, hi) every dt·A lies in [lo, hi]."""
    gen = torch.Generator().manual_seed(seed)
    f64 = dict(generator=gen, dtype=torch.float64)
    x = torch.randn(B, T, H, V, **f64)
    dt = torch.nn.functional.softplus(torch.randn(B, T, H, **f64) - 1.0)
    A = -(0.2 + 2.0 * torch.rand(H, **f64))
    if dta is not None:
        lo, hi = dta
        dt = (hi + (lo - hi) * torch.rand(B, T, H, **f64)) / A
    return dict(
        x=x,
        dt=dt,
        A=A,
        B=torch.randn(B, T, G, K, **f64) / K**0.5,
        C=torch.randn(B, T, G, K, **f64) / K**0.5,
        D=torch.randn(H, **f64),
        initial_state=torch.randn(B, H, K, V, **f64),
    )


def wide_batch() -> tuple[tuple[int, int, int, int, int], dict]:
    """(B, T, H, K, V) of a batch whose B·H = 70000 (batch, head) programs are more than a launch
    grid's axis 1 or 2 can take (65535), and the keyword arguments of torch.randn / torch.rand that
    draw its inputs on the GPU from a seeded generator."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    return (35_000, 20, 2, 16, 16), dict(device="cuda", generator=generator)


def placed(inputs, dtype=None, *, device=DEVICE, **dtypes) -> dict[str, torch.Tensor]:
    """The inputs on `device`, each in dtypes[name], else `dtype`, else its own; the states of half-
    precision inputs stay fp32 unless named."""
    out = {}
    for n, x in inputs.items():
        dt = dtypes.get(n, dtype or x.dtype)
        if n == "initial_state" and n not in dtypes and dt in (torch.bfloat16, torch.float16):
            dt = torch.float32
        out[n] = x.detach().to(device=device, dtype=dt)
    return out


def as_float64(inputs) -> dict[str, torch.Tensor]:
    """The very same (already rounded) values in float64 on the CPU: the reference's inputs."""
    return {n: x.detach().double().cpu() for n, x in inputs.items()}


def forward_backward(fn, inputs, *, seed=1, cot_dtype=None, **kwargs) -> dict[str, torch.Tensor]:
    """fn(**inputs, **kwargs) → (out, final_state or None), then a backward with fixed random cotangents
    (the output's rounded to cot_dtype, so that a float64 reference sees the same numbers). Returns
    {"out", "state" (if any), "d<input>"} as float64 on the CPU."""
    leaves = {n: x.detach().clone().requires_grad_(True) for n, x in inputs.items()}
    out, state = fn(**leaves, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    dout = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(cot_dtype or out.dtype).to(out)
    loss = (out * dout).sum()
    if state is not None:
        loss = loss + (state * torch.randn(state.shape, generator=gen, dtype=torch.float64).to(state)).sum()
    loss.backward()
    res = {"out": out} | ({} if state is None else {"state": state})
    res |= {f"d{n}": x.grad for n, x in leaves.items()}
    return {n: x.detach().double().cpu() for n, x in res.items()}


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def assert_close_rel(got, ref, dtype, *, tol=None, gate_tol=None):
    """Every entry of ref present in got, finite, and within the relative RMS tolerance of TOL[dtype]
    (tol, gate_tol override its two columns)."""
    main, gate = TOL[dtype]
    main, gate = tol or main, gate_tol or gate
    bad = {}
    for n, r in ref.items():
        assert torch.isfinite(got[n]).all(), f"{n} has NaN/Inf (an unwritten element?)"
        err = rel_rms(got[n], r)
        if not err <= (gate if n in GATE_GRADS else main):
            bad[n] = f"{err:.2e}"
    assert not bad, f"relative RMS above {main} ({gate} for {GATE_GRADS}): {bad}"


def compile_for_hopper(fn, signature, constexprs, config) -> int:
    """Shared memory (bytes) of kernel fn compiled for sm_90 as triton compiles it for a GPU (needs
    triton's ptxas, no GPU, and TRITON_INTERPRET unset)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=constexprs),
        target=GPUTarget("cuda", 90, 32),
        options=dict(num_warps=config.num_warps, num_stages=config.num_stages),
    )
    return kernel.metadata.shared


def run_outside_interpreter(function: str, cases) -> dict:
    """{case: function(*case)} for a function "module:name" of literals, each case in its own Python
    process without TRITON_INTERPRET, all side by side (compiling is CPU-bound); skips where triton has
    no bundled ptxas."""
    import triton

    if not os.path.exists(
        os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    ):
        pytest.skip("triton without its bundled ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    module, name = function.split(":")
    procs = {
        case: subprocess.Popen(
            [sys.executable, "-c", f"from {module} import {name} as f; print(f(*{case!r}))"],
            env=env,
            text=True,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for case in cases
    }
    out = {}
    for case, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, (case, stderr[-2000:])
        out[case] = ast.literal_eval(stdout.strip().splitlines()[-1])
    return out
