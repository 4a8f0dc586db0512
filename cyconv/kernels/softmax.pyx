# cython: language_level=3
"""Softmax / LogSoftmax along one axis of ``x[outer, L, inner]``.

    softmax:    y = exp(x - m) / s,        m = max_l x,  s = sum_l exp(x - m)
    logsoftmax: y = (x - m) - log(s)

Subtracting the max keeps every exp in (0, 1]: no overflow, and s >= 1 so log(s) is finite.
exp is the vectorised polynomial of elementwise.h (within 2 ulp); the sum is accumulated in
float lanes over blocks of 256 and in double across blocks, in a fixed order per row: results
do not depend on the thread count. ``inner == 1`` (normalising the last axis) walks rows, each
in three vectorised passes (max; exp and sum; scale by 1/sum); otherwise blocks of ``BLOCK``
adjacent columns are normalised together so the loops over columns are contiguous.
"""
from libc.math cimport log, INFINITY

from cyconv.kernels.gemm._gemm cimport parallel_for, task_end, units_per_task

cdef extern from "elementwise.h" nogil:
    # Vectorised polynomial exp loops (per-ISA clones): see elementwise.h.
    double cy_exp_shift_sum_f32(const float* x, float* y, Py_ssize_t n, float m)
    void cy_exp_sub_acc_f32(const float* x, const float* m, float* y, double* s, Py_ssize_t n)
    float cy_max_f32(const float* x, Py_ssize_t n)
    void cy_scale_f32(float* y, Py_ssize_t n, float r)
    void cy_sub2_f32(const float* x, float* y, Py_ssize_t n, float m, float l)

cdef enum:
    BLOCK = 64           # columns per block when inner > 1
    # Exp-evaluations below which one thread beats a fork of the GEMM's thread pool. The pool
    # (gemm/pool.h), not OpenMP: the GEMM's workers spin between ops, and an OpenMP team next
    # to them fought them for the two cores.
    GRAIN = 8192


cdef inline int _threads(Py_ssize_t work, Py_ssize_t tasks, int n_threads) noexcept nogil:
    cdef Py_ssize_t t = work // GRAIN
    if t > tasks:
        t = tasks
    if t > n_threads:
        t = n_threads
    return <int>t if t > 1 else 1


cdef void _row(const float* x, float* y, Py_ssize_t L, bint as_log) noexcept nogil:
    """One row: max, exp and sum, then scale (or shift): three vectorised passes (per-ISA
    clones), the row staying in L1 between them."""
    cdef float m = cy_max_f32(x, L)
    cdef double s = cy_exp_shift_sum_f32(x, y, L, m)
    if as_log:
        cy_sub2_f32(x, y, L, m, <float>log(s))
    else:
        cy_scale_f32(y, L, <float>(1.0 / s))


cdef void _columns(const float* x, float* y, Py_ssize_t L, Py_ssize_t inner, Py_ssize_t j0,
                   Py_ssize_t nj, bint as_log) noexcept nogil:
    """Columns ``j0 .. j0+nj-1`` (nj <= BLOCK) of one ``[L, inner]`` slab."""
    cdef float m[BLOCK]
    cdef double s[BLOCK]
    cdef float ls[BLOCK]
    cdef Py_ssize_t l, j
    cdef const float* xr
    cdef float* yr
    for j in range(nj):
        m[j] = -INFINITY
        s[j] = 0.0
    for l in range(L):
        xr = x + l * inner + j0
        for j in range(nj):
            m[j] = xr[j] if xr[j] > m[j] else m[j]
    for l in range(L):
        cy_exp_sub_acc_f32(x + l * inner + j0, m, y + l * inner + j0, s, nj)
    if as_log:
        for j in range(nj):
            ls[j] = <float>log(s[j])
        for l in range(L):
            xr = x + l * inner + j0
            yr = y + l * inner + j0
            for j in range(nj):
                yr[j] = (xr[j] - m[j]) - ls[j]
    else:
        for j in range(nj):
            ls[j] = <float>s[j]
        for l in range(L):
            yr = y + l * inner + j0
            for j in range(nj):
                yr[j] = yr[j] / ls[j]


cdef struct SoftmaxJob:
    # task t = units [t * per, + per): rows of L (inner == 1), or else column blocks, unit i =
    # block i % blocks of slab i // blocks
    const float* x
    float* y
    Py_ssize_t units, L, inner, blocks, per
    bint as_log


cdef void _rows_task(void* ctx, long t, int tid) noexcept nogil:
    cdef SoftmaxJob* j = <SoftmaxJob*>ctx
    cdef Py_ssize_t r = t * j.per, end = task_end(r, j.per, j.units)
    while r < end:
        _row(j.x + r * j.L, j.y + r * j.L, j.L, j.as_log)
        r += 1


cdef void _columns_task(void* ctx, long t, int tid) noexcept nogil:
    cdef SoftmaxJob* j = <SoftmaxJob*>ctx
    cdef Py_ssize_t i = t * j.per, end = task_end(i, j.per, j.units), o, j0
    while i < end:
        o = i // j.blocks
        j0 = (i % j.blocks) * BLOCK
        _columns(j.x + o * j.L * j.inner, j.y + o * j.L * j.inner, j.L, j.inner, j0,
                 min(BLOCK, j.inner - j0), j.as_log)
        i += 1


def softmax(const float[::1] x, float[::1] y, Py_ssize_t outer, Py_ssize_t L,
            Py_ssize_t inner, bint as_log=False, int n_threads=1):
    """Softmax (or LogSoftmax with ``as_log``) over the middle axis of ``x[outer, L, inner]``.

    Parameters
    ----------
    x, y : float32[outer*L*inner], C-contiguous; y preallocated
    outer, L, inner : int
    as_log : bool
    n_threads : int
    """
    cdef Py_ssize_t n = outer * L * inner
    if x.shape[0] != n or y.shape[0] != n or outer < 0 or L < 0 or inner < 0:
        raise ValueError("softmax: lengths do not match outer*L*inner")
    if n == 0:
        return
    with nogil:
        _softmax(&x[0], &y[0], outer, L, inner, as_log, n_threads)


cdef void _softmax(const float* px, float* py, Py_ssize_t outer, Py_ssize_t L, Py_ssize_t inner,
                   bint as_log, int n_threads) noexcept nogil:
    # x[outer, L, inner] -> y, the partition as described in softmax()
    cdef Py_ssize_t n = outer * L * inner
    cdef Py_ssize_t r, t, blocks, o, j0
    cdef int nt
    cdef SoftmaxJob job
    job.x, job.y, job.L, job.inner, job.as_log = px, py, L, inner, as_log
    if inner == 1:
        nt = _threads(n, outer, n_threads)
        if nt == 1:
            for r in range(outer):
                _row(px + r * L, py + r * L, L, as_log)
        else:
            job.units, job.blocks, job.per = outer, 1, units_per_task(outer, L, nt)
            parallel_for((outer + job.per - 1) // job.per, nt, _rows_task, &job)
    else:
        blocks = (inner + BLOCK - 1) // BLOCK
        nt = _threads(n, outer * blocks, n_threads)
        if nt == 1:
            for t in range(outer * blocks):
                o = t // blocks
                j0 = (t % blocks) * BLOCK
                _columns(px + o * L * inner, py + o * L * inner, L, inner, j0,
                         min(BLOCK, inner - j0), as_log)
        else:
            job.units, job.blocks = outer * blocks, blocks
            job.per = units_per_task(job.units, L * min(BLOCK, inner), nt)
            parallel_for((job.units + job.per - 1) // job.per, nt, _columns_task, &job)


# ---- native step --------------------------------------------------------------------------

from cyconv.kernels.native cimport NativeOp


cdef struct SoftmaxCall:
    Py_ssize_t outer, L, inner
    bint as_log
    int n_threads


cdef class SoftmaxNative(NativeOp):
    """A Softmax / LogSoftmax prepared for one shape as a native step."""
    cdef SoftmaxCall c


cdef int _softmax_native_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef SoftmaxCall* c = <SoftmaxCall*>params
    _softmax(ins[0], outs[0], c.outer, c.L, c.inner, c.as_log, c.n_threads)
    return 0


def softmax_native(shape, Py_ssize_t outer, Py_ssize_t L, Py_ssize_t inner, bint as_log=False,
                   int n_threads=1):
    """:func:`softmax` prepared for ``x[outer, L, inner]`` (of ``shape``) as a native step."""
    if outer * L * inner < 1:
        raise ValueError("softmax_native: empty input")
    cdef SoftmaxNative op = SoftmaxNative.__new__(SoftmaxNative)
    op.c.outer, op.c.L, op.c.inner, op.c.as_log, op.c.n_threads = outer, L, inner, as_log, \
        n_threads
    op.fn, op.params = _softmax_native_fn, <void*>&op.c
    op.out_shapes = (tuple(shape),)
    op.what = f"{'LogSoftmax' if as_log else 'Softmax'} {tuple(shape)}"
    return op
