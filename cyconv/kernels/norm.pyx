# cython: language_level=3
"""Normalisation kernels: per-channel affine (inference BatchNormalization) and LRN.

Shape legend: ``x[P, M, Q]`` with ``M`` the normalised axis (channels, or C*spatial for the
opset < 9 ``spatial=0`` BatchNormalization), ``P`` the batch, ``Q`` the pixels of one channel.
"""
from cython.parallel cimport prange
from libc.math cimport powf

cdef extern from "elementwise_loops.h" nogil:
    # Per-ISA clones (AVX-512 / AVX2 / baseline) of the affine loops: see elementwise_loops.h.
    void cy_affine_f32(const float* x, float* y, Py_ssize_t n, float s, float b)
    void cy_affine_vec_f32(const float* x, float* y, Py_ssize_t n, const float* s,
                           const float* b)

cdef enum:
    GRAIN = 65536        # element-visits below which one thread beats an OpenMP fork


cdef inline int _threads(Py_ssize_t work, Py_ssize_t tasks, int n_threads) noexcept nogil:
    cdef Py_ssize_t t = work // GRAIN
    if t > tasks:
        t = tasks
    if t > n_threads:
        t = n_threads
    return <int>t if t > 1 else 1


cdef inline void _affine_run(const float* x, float* y, Py_ssize_t n, float s,
                             float b) noexcept nogil:
    cy_affine_f32(x, y, n, s, b)


cdef inline void _affine_vec(const float* x, float* y, Py_ssize_t n, const float* s,
                             const float* b) noexcept nogil:
    cy_affine_vec_f32(x, y, n, s, b)


def channel_affine(const float[::1] x, const float[::1] scale, const float[::1] shift,
                   float[::1] y, Py_ssize_t P, Py_ssize_t M, Py_ssize_t Q, int n_threads=1):
    """``y[p, m, q] = x[p, m, q] * scale[m] + shift[m]``.

    Inference BatchNormalization with ``scale = gamma / sqrt(var + eps)`` and
    ``shift = beta - mean * scale`` precomputed by the caller.

    Parameters
    ----------
    x, y : float32[P*M*Q]
    scale, shift : float32[M]
    P, M, Q : int
    n_threads : int
    """
    cdef Py_ssize_t n = P * M * Q
    if x.shape[0] != n or y.shape[0] != n or scale.shape[0] != M or shift.shape[0] != M:
        raise ValueError("channel_affine: lengths do not match P*M*Q / M")
    if n == 0:
        return
    cdef const float* px = &x[0]
    cdef const float* ps = &scale[0]
    cdef const float* pb = &shift[0]
    cdef float* py = &y[0]
    cdef Py_ssize_t r
    cdef int nt
    with nogil:
        if Q == 1:
            # [P, M] rows (e.g. BatchNormalization on [N, C]): vector scale per row
            nt = _threads(n, P, n_threads)
            if nt == 1:
                for r in range(P):
                    _affine_vec(px + r * M, py + r * M, M, ps, pb)
            else:
                for r in prange(P, num_threads=nt, schedule="static"):
                    _affine_vec(px + r * M, py + r * M, M, ps, pb)
        else:
            nt = _threads(n, P * M, n_threads)
            if nt == 1:
                for r in range(P * M):
                    _affine_run(px + r * Q, py + r * Q, Q, ps[r % M], pb[r % M])
            else:
                for r in prange(P * M, num_threads=nt, schedule="static"):
                    _affine_run(px + r * Q, py + r * Q, Q, ps[r % M], pb[r % M])


cdef void _lrn_row(const float* xn, float* yrow, Py_ssize_t C, Py_ssize_t Q, Py_ssize_t c,
                   int size, float alpha_over_size, float beta, float bias) noexcept nogil:
    """One channel of LRN. ``yrow`` first accumulates the sum of squares over the window
    ``[c - floor((size-1)/2), c + ceil((size-1)/2)]`` (clipped), then becomes
    ``x / (bias + alpha/size * sum)^beta``."""
    cdef Py_ssize_t lo = c - (size - 1) // 2
    cdef Py_ssize_t hi = c + size // 2          # ceil((size-1)/2) == size // 2
    cdef Py_ssize_t cc, i
    cdef const float* xc
    cdef const float* xr = xn + c * Q
    if lo < 0:
        lo = 0
    if hi > C - 1:
        hi = C - 1
    for i in range(Q):
        yrow[i] = 0.0
    for cc in range(lo, hi + 1):
        xc = xn + cc * Q
        for i in range(Q):
            yrow[i] += xc[i] * xc[i]
    for i in range(Q):
        yrow[i] = xr[i] * powf(bias + alpha_over_size * yrow[i], -beta)


def lrn(const float[:, :, ::1] x, float[:, :, ::1] y, int size, float alpha, float beta,
        float bias, int n_threads=1):
    """Local response normalisation across channels (ONNX LRN).

    ``y[n, c, q] = x[n, c, q] / (bias + alpha / size * sum_{c'} x[n, c', q]^2) ^ beta`` over
    ``c' in [c - floor((size-1)/2), c + ceil((size-1)/2)]`` inside ``[0, C)``.

    Parameters
    ----------
    x, y : float32[N, C, Q] (Q = product of the spatial dims)
    size : int (>= 1)
    alpha, beta, bias : float
    n_threads : int
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], Q = x.shape[2]
    if y.shape[0] != N or y.shape[1] != C or y.shape[2] != Q:
        raise ValueError("lrn: x and y shapes differ")
    if size < 1:
        raise ValueError("lrn: size must be >= 1")
    if N * C * Q == 0:
        return
    cdef const float* px = &x[0, 0, 0]
    cdef float* py = &y[0, 0, 0]
    cdef float a = alpha / size
    cdef Py_ssize_t t
    cdef int nt = _threads(N * C * Q * (size + 4), N * C, n_threads)
    with nogil:
        if nt == 1:
            for t in range(N * C):
                _lrn_row(px + (t // C) * C * Q, py + t * Q, C, Q, t % C, size, a, beta, bias)
        else:
            for t in prange(N * C, num_threads=nt, schedule="static"):
                _lrn_row(px + (t // C) * C * Q, py + t * Q, C, Q, t % C, size, a, beta, bias)
