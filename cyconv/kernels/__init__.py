"""Compiled nogil kernels (Cython/C). Every function takes explicit sizes / preallocated outputs
and an ``n_threads`` argument; float32 C-contiguous arrays unless stated otherwise."""
