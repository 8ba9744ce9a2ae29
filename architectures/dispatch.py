"""Which recurrent kernels a layer calls: `ModelConfig.backend` resolved against the tensor at hand."""

import torch


def kernel_backend(policy: str, x: torch.Tensor) -> str:
    """"auto" runs the Triton kernels on CUDA tensors and their torch references elsewhere."""
    if policy == "auto":
        return "triton" if x.is_cuda else "torch"
    return policy
