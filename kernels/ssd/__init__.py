"""Mamba2's state-space dual (scalar decay per head), with an optional negative-eigenvalue range."""

from kernels.ssd.chunk import chunk_ssd
from kernels.ssd.naive import chunk_ssd_torch, naive_recurrent_ssd

__all__ = ["chunk_ssd", "chunk_ssd_torch", "naive_recurrent_ssd"]
