# cython: language_level=3
"""Max / average pooling over NCHW planes (1-D pools use H = 1), and global pools.

Shape legend: ``x[NC, H, W]`` input planes (N*C folded), ``y[NC, OH, OW]`` output planes.
Window ``(oh, ow)`` reads input rows ``ih = oh*sh - ph + i*dh`` (i < kh) and columns
``iw = ow*sw - pw + j*dw`` (j < kw); taps outside ``[0, H) x [0, W)`` are padding and are
skipped (max) or add zero (average).

The pool is separable (pool_isa.h): per output row, a vertical pass reduces the valid input rows
into a padded row buffer (contiguous vector loads), then a horizontal pass reduces each window
along the buffer (unaligned loads for stride 1, an even-lane permute for stride 2: the common
2x2 s2, 3x3 s2 and 3x3 s1 pools are all vector code; other strides are scalar). The row
operations come from one table per ISA (AVX-512F, AVX2, generic C), picked once at import
from the CPU; :func:`set_isa` switches tables (tests run each one).

Parallel tasks are (plane, band of output rows); each output element is computed by one task
with the same operations whatever the partition, so results do not depend on the thread count.
"""
from libc.stdlib cimport malloc, free
from libc.math cimport INFINITY

import numpy as np

from cyconv.kernels.gemm._gemm cimport parallel_for, task_end, units_per_task

cdef extern from "pool_plane.h" nogil:
    ctypedef struct cy_pool_isa:
        const char *name
        float (*gmax)(const float *x, Py_ssize_t n) noexcept nogil
        double (*gsum)(const float *x, Py_ssize_t n) noexcept nogil
    const cy_pool_isa *cy_pool_isa_by_name(const char *name)
    const cy_pool_isa *cy_pool_isa_best()
    Py_ssize_t cy_pool_tmp_len(Py_ssize_t W, Py_ssize_t OW, int kw, int sw, int dw, int pw)
    void cy_pool_fill(float *p, Py_ssize_t n, float v)
    void cy_pool_plane_rows(const cy_pool_isa *isa, const float *x, float *y, Py_ssize_t H,
                            Py_ssize_t W, Py_ssize_t OW, Py_ssize_t oh0, Py_ssize_t oh1,
                            int kh, int kw, int sh, int sw, int dh, int dw, int ph, int pw,
                            int is_max, const float *recip_h, const float *recip_w,
                            float *tmp)

cdef enum:
    # Element-visits (outputs x (kh + kw) for the separable pool, inputs for the global pools)
    # below which one thread is faster than a fork of the GEMM's thread pool (a few us
    # against ~0.1 ns a visit). The pool (gemm/pool.h), not OpenMP: the GEMM's workers spin
    # between ops, and an OpenMP team next to them fought them for the two cores (MaxPool
    # at 2 threads ran slower than at 1).
    GRAIN = 65536
    # MaxPool / AveragePool split from this many element-visits on. Their planes are
    # usually a conv's output that two threads have just written, so one thread alone
    # reads half of it from the other core (~0.2 ns a byte with the vCPUs far apart):
    # split by planes, each thread mostly reads planes it wrote itself (a small plane's
    # conv splits by output channel). In process, 2 threads, WINDOW_GRAIN 4096 / GRAIN
    # (its 2x2 pool of 64 x 13x13, 9216 visits, on two threads): CIFAR CNN 0.98-0.99 with
    # the vCPUs near, 0.94-0.955 far; PaddleOCR cls 0.97 near; LeNet-5 (4704 visits)
    # 0.99 / 1.01. The global pools keep GRAIN: at 4096 the PaddleOCR cls (its SE blocks'
    # small means) ran 1.085x and MobileNetV2 1.02-1.03x.
    WINDOW_GRAIN = 4096
    BANDS_PER_THREAD = 4    # tasks per thread when there are too few planes to share out

cdef const cy_pool_isa *_isa = cy_pool_isa_best()


def isa():
    """Name of the row-operation table in use: ``"avx512f"``, ``"avx2"`` or ``"generic"``."""
    return _isa.name.decode()


def set_isa(str name):
    """Use the table ``name`` (``"avx512f"``, ``"avx2"``, ``"generic"``); ValueError if this
    CPU cannot run it. For tests and benchmarks; the default is the widest the CPU supports."""
    global _isa
    cdef const cy_pool_isa *got = cy_pool_isa_by_name(name.encode())
    if got == NULL:
        raise ValueError(f"pool ISA {name!r} is unknown or not supported by this CPU")
    _isa = got


def available_isas():
    """The tables this CPU can run, widest first."""
    return [n for n in ("avx512f", "avx2", "generic") if cy_pool_isa_by_name(n.encode()) != NULL]


cdef inline int _threads(Py_ssize_t work, Py_ssize_t tasks, int n_threads,
                         Py_ssize_t grain=GRAIN) noexcept nogil:
    cdef Py_ssize_t t = work // grain
    if t > tasks:
        t = tasks
    if t > n_threads:
        t = n_threads
    return <int>t if t > 1 else 1


cdef struct PoolJob:
    # one pool2d call: task t = (planes [t // bands * per, + per), band t % bands of their
    # output rows); per > 1 only when bands == 1
    const cy_pool_isa* isa
    const float* x
    float* y
    Py_ssize_t NC, H, W, OH, OW, bands, per
    int kh, kw, sh, sw, dh, dw, ph, pw
    bint is_max
    const float* recip_h
    const float* recip_w
    float* tmp              # tmp_len floats per thread
    Py_ssize_t tmp_len


cdef void _pool_task(void* ctx, long t, int tid) noexcept nogil:
    cdef PoolJob* j = <PoolJob*>ctx
    cdef Py_ssize_t b = t % j.bands, p = t // j.bands * j.per, end = task_end(p, j.per, j.NC)
    while p < end:
        cy_pool_plane_rows(j.isa, j.x + p * j.H * j.W, j.y + p * j.OH * j.OW, j.H, j.W, j.OW,
                           b * j.OH // j.bands, (b + 1) * j.OH // j.bands, j.kh, j.kw, j.sh,
                           j.sw, j.dh, j.dw, j.ph, j.pw, j.is_max, j.recip_h, j.recip_w,
                           j.tmp + tid * j.tmp_len)
        p += 1


cdef struct GlobalJob:
    # task t = planes [t * per, (t + 1) * per) of NC
    const cy_pool_isa* isa
    const float* x
    float* y
    Py_ssize_t NC, HW, per
    bint is_max


cdef void _global_task(void* ctx, long t, int tid) noexcept nogil:
    cdef GlobalJob* j = <GlobalJob*>ctx
    cdef Py_ssize_t p = t * j.per, end = task_end(p, j.per, j.NC)
    while p < end:
        j.y[p] = j.isa.gmax(j.x + p * j.HW, j.HW) if j.is_max else \
            <float>(j.isa.gsum(j.x + p * j.HW, j.HW) / j.HW)
        p += 1


cdef struct PoolCall:
    PoolJob job             # x, y set per call
    int nt
    Py_ssize_t tasks


cdef void _pool_prepare(PoolCall* c, Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                        Py_ssize_t OW, int kh, int kw, int sh, int sw, int dh, int dw, int ph,
                        int pw, bint is_max, int n_threads) noexcept nogil:
    # the partition of a pool2d call (planes, or bands of rows when the planes are few)
    cdef PoolJob* job = &c.job
    cdef int nt = _threads(NC * OH * OW * (kh + kw), NC * OH, n_threads, WINDOW_GRAIN)
    # Few planes (e.g. one image, few channels): cut planes into bands of rows as well.
    cdef Py_ssize_t bands = 1
    if nt > 1 and NC < BANDS_PER_THREAD * nt:
        bands = min(OH, (BANDS_PER_THREAD * nt + NC - 1) // NC)
    # Many small planes: several per task (units_per_task)
    cdef Py_ssize_t per = units_per_task(NC, OH * OW * (kh + kw), nt) if bands == 1 else 1
    job.isa, job.x, job.y = _isa, NULL, NULL
    job.NC, job.H, job.W, job.OH, job.OW, job.bands, job.per = NC, H, W, OH, OW, bands, per
    job.kh, job.kw, job.sh, job.sw, job.dh, job.dw, job.ph, job.pw = kh, kw, sh, sw, dh, dw, ph, pw
    job.is_max = is_max
    job.tmp_len = cy_pool_tmp_len(W, OW, kw, sw, dw, pw)
    c.nt, c.tasks = nt, (NC + per - 1) // per * bands


cdef Py_ssize_t _pool_scratch_floats(const PoolCall* c) noexcept nogil:
    return c.nt * c.job.tmp_len + c.job.OH + c.job.OW


cdef void _pool_bind(PoolCall* c, float* scratch, count_h, count_w) except *:
    # scratch: _pool_scratch_floats: the threads' row buffers, filled with the identity (only
    # tmp[pw : pw + W] is ever written, so it stays), then the reciprocals of the tap counts
    cdef PoolJob* job = &c.job
    cdef Py_ssize_t i, rows = c.nt * job.tmp_len
    cy_pool_fill(scratch, rows, -INFINITY if job.is_max else 0.0)
    job.tmp = scratch
    job.recip_h, job.recip_w = scratch + rows, scratch + rows + job.OH
    if not job.is_max:
        for i in range(job.OH):
            scratch[rows + i] = 1.0 / <float>count_h[i]
        for i in range(job.OW):
            scratch[rows + job.OH + i] = 1.0 / <float>count_w[i]


cdef int _pool_exec(const PoolCall* c, const float* x, float* y) noexcept nogil:
    cdef PoolJob job = c.job
    cdef Py_ssize_t p
    job.x, job.y = x, y
    if c.nt == 1:
        for p in range(job.NC):
            cy_pool_plane_rows(job.isa, x + p * job.H * job.W, y + p * job.OH * job.OW,
                               job.H, job.W, job.OW, 0, job.OH, job.kh, job.kw, job.sh,
                               job.sw, job.dh, job.dw, job.ph, job.pw, job.is_max,
                               job.recip_h, job.recip_w, job.tmp)
    else:
        parallel_for(c.tasks, c.nt, _pool_task, &job)
    return 0


def pool2d(const float[:, :, ::1] x, float[:, :, ::1] y, int kh, int kw, int sh, int sw,
           int dh, int dw, int ph, int pw, bint is_max, const float[::1] count_h=None,
           const float[::1] count_w=None, int n_threads=1):
    """Max or average pooling of every plane.

    Parameters
    ----------
    x : float32[NC, H, W]
    y : float32[NC, OH, OW], preallocated; OH/OW are the caller's (ceil_mode/auto_pad done)
    kh, kw, sh, sw, dh, dw : int
        Kernel, stride, dilation (all >= 1).
    ph, pw : int
        Padding before the first row / column (>= 0). Padding after is implied by OH/OW.
    is_max : bool
        Max pooling; else average, dividing output ``(oh, ow)`` by ``count_h[oh] * count_w[ow]``.
    count_h : float32[OH], count_w : float32[OW]
        Average only: taps counted per output row / column (valid-only or including padding:
        the caller's ``count_include_pad`` choice).
    n_threads : int
    """
    cdef Py_ssize_t NC = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2]
    if y.shape[0] != NC:
        raise ValueError("pool2d: x and y plane counts differ")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or dh < 1 or dw < 1 or ph < 0 or pw < 0:
        raise ValueError("pool2d: kernel/stride/dilation must be >= 1 and pads >= 0")
    if not is_max:
        if count_h is None or count_w is None or count_h.shape[0] != OH \
                or count_w.shape[0] != OW:
            raise ValueError("pool2d: average pooling needs count_h[OH] and count_w[OW]")
    if NC == 0 or OH == 0 or OW == 0:
        return
    if H * W == 0:
        raise ValueError("pool2d: empty input planes")
    cdef PoolCall c
    _pool_prepare(&c, NC, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw, is_max, n_threads)
    # Row buffers, one per thread, then (average) the reciprocals of the tap counts.
    cdef float* tmp = <float*>malloc(_pool_scratch_floats(&c) * sizeof(float))
    if tmp == NULL:
        raise MemoryError()
    try:
        _pool_bind(&c, tmp, count_h, count_w)
        with nogil:
            _pool_exec(&c, &x[0, 0, 0], &y[0, 0, 0])
    finally:
        free(tmp)


def global_pool(const float[:, ::1] x, float[::1] y, bint is_max, int n_threads=1):
    """Global max / average pooling: ``y[p] = max(x[p, :])`` or ``mean(x[p, :])``.

    Parameters
    ----------
    x : float32[NC, HW] (HW >= 1)
    y : float32[NC]
    is_max : bool
    n_threads : int
    """
    cdef Py_ssize_t NC = x.shape[0], HW = x.shape[1]
    if y.shape[0] != NC:
        raise ValueError("global_pool: x and y plane counts differ")
    if NC == 0:
        return
    if HW == 0:
        raise ValueError("global_pool: empty planes")
    cdef const float* px = &x[0, 0]
    cdef float* py = &y[0]
    cdef int nt = _threads(NC * HW, NC, n_threads)
    cdef GlobalJob job
    job.isa, job.x, job.y, job.NC, job.HW, job.is_max = _isa, px, py, NC, HW, is_max
    job.per = units_per_task(NC, HW, nt)      # planes grouped (not one 7x7 plane per claim)
    with nogil:
        parallel_for((NC + job.per - 1) // job.per, nt, _global_task, &job)


# ---- native steps -------------------------------------------------------------------------

from cyconv.kernels.native cimport NativeOp


cdef class PoolNative(NativeOp):
    """A 2-D pool prepared for one input shape as a native step (kernels/native.pyx)."""
    cdef PoolCall c
    cdef object scratch     # row buffers and reciprocals c.job points into


cdef int _pool_native_fn(void* params, const float** ins, float** outs) noexcept nogil:
    return _pool_exec(<PoolCall*>params, ins[0], outs[0])


def pool2d_native(Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                  int kh, int kw, int sh, int sw, int dh, int dw, int ph, int pw, bint is_max,
                  count_h=None, count_w=None, int n_threads=1):
    """:func:`pool2d` prepared for ``NC`` planes of ``H x W`` as a native step: input x
    (NC, H, W), output y (NC, OH, OW). Same arguments and the same partition."""
    if NC < 1 or OH < 1 or OW < 1 or H * W < 1:
        raise ValueError("pool2d_native: empty planes")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or dh < 1 or dw < 1 or ph < 0 or pw < 0:
        raise ValueError("pool2d: kernel/stride/dilation must be >= 1 and pads >= 0")
    if not is_max and (count_h is None or count_w is None or len(count_h) != OH
                       or len(count_w) != OW):
        raise ValueError("pool2d: average pooling needs count_h[OH] and count_w[OW]")
    cdef PoolNative op = PoolNative.__new__(PoolNative)
    _pool_prepare(&op.c, NC, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw, is_max, n_threads)
    op.scratch = np.empty(_pool_scratch_floats(&op.c), np.float32)
    cdef float[::1] s = op.scratch
    _pool_bind(&op.c, &s[0], count_h, count_w)
    op.fn, op.params = _pool_native_fn, <void*>&op.c
    op.out_shapes = ((NC, OH, OW),)
    op.what = f"{'Max' if is_max else 'Average'}Pool {kh}x{kw} s{sh} on {NC}x{H}x{W}"
    return op


cdef struct GlobalCall:
    GlobalJob job
    int nt
    Py_ssize_t tasks


cdef class GlobalPoolNative(NativeOp):
    """A global pool prepared for one input shape as a native step."""
    cdef GlobalCall c


cdef int _global_native_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef GlobalCall* c = <GlobalCall*>params
    cdef GlobalJob job = c.job
    job.x, job.y = ins[0], outs[0]
    parallel_for(c.tasks, c.nt, _global_task, &job)
    return 0


def global_pool_native(Py_ssize_t NC, Py_ssize_t HW, bint is_max, int n_threads=1):
    """:func:`global_pool` prepared for ``NC`` planes of ``HW`` values as a native step:
    input x (NC, HW), output y (NC,)."""
    if NC < 1 or HW < 1:
        raise ValueError("global_pool_native: empty planes")
    cdef GlobalPoolNative op = GlobalPoolNative.__new__(GlobalPoolNative)
    op.c.nt = _threads(NC * HW, NC, n_threads)
    op.c.job.isa, op.c.job.NC, op.c.job.HW, op.c.job.is_max = _isa, NC, HW, is_max
    op.c.job.per = units_per_task(NC, HW, op.c.nt)
    op.c.tasks = (NC + op.c.job.per - 1) // op.c.job.per
    op.fn, op.params = _global_native_fn, <void*>&op.c
    op.out_shapes = ((NC,),)
    op.what = f"Global{'Max' if is_max else 'Average'}Pool on {NC}x{HW}"
    return op
