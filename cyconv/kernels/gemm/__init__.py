"""Packed SGEMM: C micro-kernels per ISA (this folder) behind :mod:`._gemm`."""
