"""Host code both ops share: backends, the lazy Triton import, launch configs, grids, the cached launch,
and folding a vmapped dimension into the batch.

Nothing here imports triton at module level: `import kernels...` and `backend="torch"` work where
triton is not installed, and the first Triton launch says how to install it.

Constexpr vocabulary of every kernel of both ops (one name per concept):

    BT, BK, BV           tile sizes along T (the chunk length), K and V
    USE_H0, STORE_HT     read an initial state / write the final state
    USE_DHT, STORE_DH0   read the final state's cotangent / write the initial state's gradient
    PRECISION            `input_precision` of every tl.dot: "ieee" (fp32 products) or "tf32"

Grids: the batch × heads programs are on grid axis 0 (up to 2³¹ − 1), folded together with the chunks
where a kernel has programs per chunk; axes 1 and 2 (CUDA's limit there is 65535) only ever hold
K- or V-blocks.
"""

import functools
import importlib
import os
from dataclasses import dataclass

import torch

BACKENDS = ("triton", "torch")
# Triton reads this when a kernel is decorated; the interpreter runs the kernels on the CPU.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MAX_GRID = (2**31 - 1, 65535, 65535)
TRITON_INSTALL = "pip install triton"


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")


def check_device(x: torch.Tensor) -> None:
    """The triton backend runs on CUDA tensors, or anywhere under TRITON_INTERPRET=1 (read per call)."""
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got device {x.device}; "
            f"use backend='torch'"
        )


@functools.cache
def _import_triton():
    try:
        import triton  # noqa: F401
    except ImportError:
        # one clear error, not the chain of a failed import inside a kernel module
        raise ImportError(
            f"backend='triton' needs the triton package, which is not installed: {TRITON_INSTALL} "
            f"(or use backend='torch')"
        ) from None


@functools.cache
def import_kernels(module: str):
    """The module of Triton kernels `module`, imported on first use (a failed import is not cached)."""
    _import_triton()
    return importlib.import_module(module)


@dataclass(frozen=True)
class KernelConfig:
    """Tiles, warps and pipeline stages of one kernel's launch (BK: a program's share of K, or the step
    of a walk over K; BV likewise for V)."""

    BK: int
    BV: int
    num_warps: int = 4
    num_stages: int = 3


def cdiv(a: int, b: int) -> int:
    # plain Python: triton.cdiv goes through triton's constexpr-function wrapper on the host
    return -(-a // b)


def pow2(n: int, least: int = 16) -> int:
    """The smallest power of two >= max(n, least)."""
    return max(least, 1 << (n - 1).bit_length())


def check_grid(grid: tuple[int, ...]) -> None:
    for n, limit in zip(grid, MAX_GRID):
        if n > limit:
            raise ValueError(f"a grid of {grid} programs exceeds CUDA's limits {MAX_GRID}; split the batch")


def _spec(a):
    """What triton specializes a runtime argument on, or more: a tensor's dtype and 16-byte alignment;
    a host tensor descriptor's dtype, block shape, alignment and the divisibility of its sizes; an int's
    being 1, a multiple of 16 and its width."""
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    if isinstance(a, int):
        return a == 1, a % 16 == 0, -(2**31) <= a < 2**31
    base = getattr(a, "base", None)
    if isinstance(base, torch.Tensor):  # triton's TensorDescriptor
        return (
            base.dtype,
            tuple(a.block_shape),
            getattr(a, "padding", None),
            base.data_ptr() % 16 == 0,
            tuple(n % 16 == 0 for n in a.shape),
            tuple(s % 16 == 0 for s in a.strides),
        )
    return type(a)


def _device(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
        if isinstance(getattr(a, "base", None), torch.Tensor):
            return a.base.device
    return None


# (kernel, specialization, constexprs, warps, stages, device) → (compiled kernel, constexpr names in
# signature order); see launch
_COMPILED = {}
_FAST_LAUNCH = not INTERPRET


def launch(kernel, grid, args, config: KernelConfig | None = None, **consts):
    """kernel[grid](*args, **consts), args being the kernel's leading runtime arguments in order, consts
    its constexprs, config its warps and stages.

    Triton's launcher binds and specializes every argument on each call, which is most of a small
    training step's host time. The compiled kernel that kernel[grid] returns is kept under a key of
    everything triton specializes on, and later calls with the same key launch it directly. Under the
    interpreter, or where a triton version returns no compiled kernel, every call goes through
    kernel[grid]."""
    global _FAST_LAUNCH
    check_grid(grid)
    options = {} if config is None else dict(num_warps=config.num_warps, num_stages=config.num_stages)
    if _FAST_LAUNCH:
        key = (kernel, tuple(map(_spec, args)), tuple(consts.items()), config, _device(args))
        hit = _COMPILED.get(key)
        if hit is not None:
            compiled, names = hit
            # the compiled kernel's launcher takes a full 3-D grid (kernel[grid] pads it)
            return compiled[(*grid, 1, 1)[:3]](*args, *(consts[n] for n in names))
        from triton.compiler import CompiledKernel

        compiled = kernel[grid](*args, **options, **consts)
        if isinstance(compiled, CompiledKernel):
            _COMPILED[key] = compiled, kernel.arg_names[len(args) :]
        else:
            _FAST_LAUNCH = False
        return compiled
    return kernel[grid](*args, **options, **consts)


class Saved:
    """An autograd.Function's intermediates, handed from its forward to its setup_context as a
    non-tensor output (torch.func style forbids ctx in forward; the vmap rule passes it through)."""

    __slots__ = ("tensors",)

    def __init__(self, tensors):
        self.tensors = tensors


def is_wrapped(*tensors) -> bool:
    """Whether any argument is a torch.func transform's wrapper (vmap's batched tensor, grad's tensor):
    such tensors have no storage a kernel can read, so they go through the autograd.Function, whose
    vmap rule unwraps them."""
    return any(
        isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors
    )


def fold(x: torch.Tensor | None, dim: int | None, n: int) -> torch.Tensor | None:
    """A vmapped x (the vmapped dimension at `dim`, size n; None: not vmapped, so expanded) with that
    dimension folded into its leading (batch) dimension: [n, B, ...] → [n·B, ...]."""
    if x is None:
        return None
    x = x.movedim(dim, 0) if dim is not None else x.expand(n, *x.shape)
    return x.reshape(n * x.shape[1], *x.shape[2:])


def unfold(x: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """[n·B, ...] → [n, B, ...]."""
    return None if x is None else x.view(n, x.shape[0] // n, *x.shape[1:])
