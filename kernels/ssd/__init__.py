"""Mamba2's state-space dual (scalar decay per head), with an optional negative-eigenvalue range."""

from kernels.ssd.chunk import chunk_ssd
from kernels.ssd.naive import naive_chunk_ssd, naive_recurrent_ssd

__all__ = ["chunk_ssd", "naive_chunk_ssd", "naive_recurrent_ssd"]
