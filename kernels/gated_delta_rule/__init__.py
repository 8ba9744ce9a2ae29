"""Gated DeltaNet: chunked Triton kernels and plain-torch references."""

from kernels.gated_delta_rule.chunk import chunk_gated_delta_rule
from kernels.gated_delta_rule.naive import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "naive_chunk_gated_delta_rule", "naive_recurrent_gated_delta_rule"]
