# cython: language_level=3
"""Normalisation kernels: per-channel affine (inference BatchNormalization) and LRN.

Shape legend: ``x[P, M, Q]`` with ``M`` the normalised axis (channels, or C*spatial for the
opset < 9 ``spatial=0`` BatchNormalization), ``P`` the batch, ``Q`` the pixels of one channel.
"""
from libc.math cimport powf

from cyconv.kernels.gemm._gemm cimport parallel_for, task_end, units_per_task

cdef extern from "elementwise_loops.h" nogil:
    # Per-ISA clones (AVX-512 / AVX2 / baseline) of the affine loops: see elementwise_loops.h.
    void cy_affine_f32(const float* x, float* y, Py_ssize_t n, float s, float b)
    void cy_affine_vec_f32(const float* x, float* y, Py_ssize_t n, const float* s,
                           const float* b)

cdef enum:
    # Element-visits below which one thread beats a fork of the GEMM's thread pool. The pool
    # (gemm/pool.h), not OpenMP: the GEMM's workers spin between ops, and an OpenMP team next
    # to them fought them for the two cores.
    GRAIN = 65536


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


cdef struct AffineJob:
    # task t = rows [t * per, + per) of rows. Q == 1: rows of M against scale/shift; else rows
    # of Q against scale[r % M], shift[r % M]
    const float* x
    const float* scale
    const float* shift
    float* y
    Py_ssize_t rows, M, Q, per


cdef void _affine_vec_task(void* ctx, long t, int tid) noexcept nogil:
    cdef AffineJob* j = <AffineJob*>ctx
    cdef Py_ssize_t r = t * j.per, end = task_end(r, j.per, j.rows)
    while r < end:
        _affine_vec(j.x + r * j.M, j.y + r * j.M, j.M, j.scale, j.shift)
        r += 1


cdef void _affine_run_task(void* ctx, long t, int tid) noexcept nogil:
    cdef AffineJob* j = <AffineJob*>ctx
    cdef Py_ssize_t r = t * j.per, end = task_end(r, j.per, j.rows)
    while r < end:
        _affine_run(j.x + r * j.Q, j.y + r * j.Q, j.Q, j.scale[r % j.M], j.shift[r % j.M])
        r += 1


cdef struct AffineCall:
    AffineJob job           # x, y set per call
    int nt


cdef void _affine_prepare(AffineCall* c, const float* scale, const float* shift, Py_ssize_t P,
                          Py_ssize_t M, Py_ssize_t Q, int n_threads) noexcept nogil:
    # Q == 1: [P, M] rows (BatchNormalization on [N, C]), a vector scale per row; else P*M
    # runs of Q against one scale each
    cdef Py_ssize_t n = P * M * Q
    c.job.scale, c.job.shift, c.job.M, c.job.Q = scale, shift, M, Q
    if Q == 1:
        c.nt = _threads(n, P, n_threads)
        c.job.rows, c.job.per = P, units_per_task(P, M, c.nt)
    else:
        c.nt = _threads(n, P * M, n_threads)
        c.job.rows, c.job.per = P * M, units_per_task(P * M, Q, c.nt)


cdef void _affine_exec(const AffineCall* c, const float* x, float* y) noexcept nogil:
    cdef AffineJob job = c.job
    cdef Py_ssize_t r
    job.x, job.y = x, y
    if job.Q == 1:
        if c.nt == 1:
            for r in range(job.rows):
                _affine_vec(x + r * job.M, y + r * job.M, job.M, job.scale, job.shift)
        else:
            parallel_for((job.rows + job.per - 1) // job.per, c.nt, _affine_vec_task, &job)
    elif c.nt == 1:
        for r in range(job.rows):
            _affine_run(x + r * job.Q, y + r * job.Q, job.Q, job.scale[r % job.M],
                        job.shift[r % job.M])
    else:
        parallel_for((job.rows + job.per - 1) // job.per, c.nt, _affine_run_task, &job)


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
    cdef AffineCall c
    _affine_prepare(&c, &scale[0], &shift[0], P, M, Q, n_threads)
    with nogil:
        _affine_exec(&c, &x[0], &y[0])


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


cdef struct LrnJob:
    # task t = rows [t * per, + per) of the N * C (image, channel) rows
    const float* x
    float* y
    Py_ssize_t C, Q, rows, per
    int size
    float alpha_over_size, beta, bias


cdef void _lrn_task(void* ctx, long t, int tid) noexcept nogil:
    cdef LrnJob* j = <LrnJob*>ctx
    cdef Py_ssize_t r = t * j.per, end = task_end(r, j.per, j.rows)
    while r < end:
        _lrn_row(j.x + (r // j.C) * j.C * j.Q, j.y + r * j.Q, j.C, j.Q, r % j.C, j.size,
                 j.alpha_over_size, j.beta, j.bias)
        r += 1


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
    cdef LrnJob job
    job.x, job.y, job.C, job.Q, job.rows, job.size = px, py, C, Q, N * C, size
    job.alpha_over_size, job.beta, job.bias = a, beta, bias
    with nogil:
        if nt == 1:
            for t in range(N * C):
                _lrn_row(px + (t // C) * C * Q, py + t * Q, C, Q, t % C, size, a, beta, bias)
        else:
            job.per = units_per_task(N * C, Q * (size + 4), nt)
            parallel_for((N * C + job.per - 1) // job.per, nt, _lrn_task, &job)


# ---- native step ----------------------------------------------------------------------------

import numpy as np
from cyconv.kernels.native cimport NativeOp


cdef class AffineNative(NativeOp):
    """channel_affine prepared for one shape as a native step: input x (and the op's other
    inputs, unread), output y."""
    cdef AffineCall c
    cdef object keep        # scale and shift


cdef int _affine_native_fn(void* params, const float** ins, float** outs) noexcept nogil:
    _affine_exec(<AffineCall*>params, ins[0], outs[0])
    return 0


def channel_affine_native(shape, scale, shift, Py_ssize_t P, Py_ssize_t M, Py_ssize_t Q,
                          int n_threads=1):
    """:func:`channel_affine` prepared for x of ``shape`` (= P*M*Q values) as a native step."""
    if P * M * Q < 1:
        raise ValueError("channel_affine_native: empty input")
    cdef AffineNative op = AffineNative.__new__(AffineNative)
    s = np.ascontiguousarray(scale, np.float32).reshape(-1)
    t = np.ascontiguousarray(shift, np.float32).reshape(-1)
    if s.shape[0] != M or t.shape[0] != M:
        raise ValueError("channel_affine_native: scale/shift must have M values")
    op.keep = (s, t)
    cdef const float[::1] sv = s
    cdef const float[::1] tv = t
    _affine_prepare(&op.c, &sv[0], &tv[0], P, M, Q, n_threads)
    op.inplace_input = 0
    op.fn, op.params = _affine_native_fn, <void*>&op.c
    op.out_shapes = (tuple(shape),)
    op.what = f"channel affine {tuple(shape)}"
    return op
