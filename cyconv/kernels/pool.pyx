# cython: language_level=3
"""Max / average pooling over NCHW planes (1-D pools use H = 1), and global pools.

Shape legend: ``x[NC, H, W]`` input planes (N*C folded), ``y[NC, OH, OW]`` output planes.
Window ``(oh, ow)`` reads input rows ``ih = oh*sh - ph + i*dh`` (i < kh) and columns
``iw = ow*sw - pw + j*dw`` (j < kw); taps outside ``[0, H) x [0, W)`` are padding and are
skipped (max) or add zero (average).

Instead of a loop per output pixel, each output row is built tap by tap: for a fixed ``(i, j)``
the valid ``ow`` form one interval ``[lo, hi)``, and ``y_row[lo:hi] (op)= x_row[lo*sw+off ::sw]``
is a contiguous (``sw == 1``) or strided loop the compiler vectorises, with no bounds test
inside. One parallel task = one output row of one plane; each output element is produced by
one task in a fixed tap order, so the result does not depend on the thread count.
"""
from cython.parallel cimport prange
from libc.math cimport INFINITY

cdef enum:
    # Tap-visits (output elements x window size) below which one thread is faster than a fork.
    GRAIN = 32768
    LANES = 16          # independent accumulators in the global pools: one zmm of float32


cdef inline int _threads(Py_ssize_t work, Py_ssize_t tasks, int n_threads) noexcept nogil:
    cdef Py_ssize_t t = work // GRAIN
    if t > tasks:
        t = tasks
    if t > n_threads:
        t = n_threads
    return <int>t if t > 1 else 1


cdef void _pool_row(const float* plane, float* yrow, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t OW, Py_ssize_t oh, int kh, int kw, int sh, int sw, int dh,
                    int dw, int ph, int pw, bint is_max, const float* count_h,
                    const float* count_w) noexcept nogil:
    cdef Py_ssize_t ow, lo, hi, ih, off, i, j
    cdef const float* xrow
    cdef const float* src
    cdef float v, ch
    for ow in range(OW):
        yrow[ow] = -INFINITY if is_max else 0.0
    for i in range(kh):
        ih = oh * sh - ph + i * dh
        if ih < 0 or ih >= H:
            continue
        xrow = plane + ih * W
        for j in range(kw):
            off = j * dw - pw                           # iw = ow*sw + off
            if off > W - 1:
                break
            lo = 0 if off >= 0 else (-off + sw - 1) // sw   # first ow with iw >= 0
            hi = (W - 1 - off) // sw + 1                    # one past last ow with iw < W
            if hi > OW:
                hi = OW
            if sw == 1:
                src = xrow + off
                if is_max:
                    for ow in range(lo, hi):
                        v = src[ow]
                        yrow[ow] = v if v > yrow[ow] else yrow[ow]
                else:
                    for ow in range(lo, hi):
                        yrow[ow] += src[ow]
            else:
                if is_max:
                    for ow in range(lo, hi):
                        v = xrow[ow * sw + off]
                        yrow[ow] = v if v > yrow[ow] else yrow[ow]
                else:
                    for ow in range(lo, hi):
                        yrow[ow] += xrow[ow * sw + off]
    if not is_max:
        ch = count_h[oh]
        for ow in range(OW):
            yrow[ow] = yrow[ow] / (ch * count_w[ow])


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
    cdef const float* px = &x[0, 0, 0]
    cdef float* py = &y[0, 0, 0]
    cdef const float* pch = &count_h[0] if not is_max else NULL
    cdef const float* pcw = &count_w[0] if not is_max else NULL
    cdef Py_ssize_t tasks = NC * OH
    cdef int nt = _threads(tasks * OW * kh * kw, tasks, n_threads)
    cdef Py_ssize_t t
    with nogil:
        if nt == 1:
            for t in range(tasks):
                _pool_row(px + (t // OH) * H * W, py + t * OW, H, W, OW, t % OH,
                          kh, kw, sh, sw, dh, dw, ph, pw, is_max, pch, pcw)
        else:
            for t in prange(tasks, num_threads=nt, schedule="static"):
                _pool_row(px + (t // OH) * H * W, py + t * OW, H, W, OW, t % OH,
                          kh, kw, sh, sw, dh, dw, ph, pw, is_max, pch, pcw)


cdef float _global_row(const float* row, Py_ssize_t n, bint is_max) noexcept nogil:
    """Max or mean of ``row[:n]``: LANES independent accumulators (vectorisable, and each
    holds only n / LANES terms, which keeps the float32 sum accurate), combined in double."""
    cdef float acc[LANES]
    cdef Py_ssize_t b, l, nb = n // LANES
    cdef double total
    cdef float m, v
    for l in range(LANES):
        acc[l] = -INFINITY if is_max else 0.0
    if is_max:
        for b in range(nb):
            for l in range(LANES):
                v = row[b * LANES + l]
                acc[l] = v if v > acc[l] else acc[l]
        m = -INFINITY
        for l in range(LANES):
            m = acc[l] if acc[l] > m else m
        for b in range(nb * LANES, n):
            m = row[b] if row[b] > m else m
        return m
    for b in range(nb):
        for l in range(LANES):
            acc[l] += row[b * LANES + l]
    total = 0.0
    for l in range(LANES):
        total += acc[l]
    for b in range(nb * LANES, n):
        total += row[b]
    return <float>(total / n)


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
    cdef Py_ssize_t p
    with nogil:
        if nt == 1:
            for p in range(NC):
                py[p] = _global_row(px + p * HW, HW, is_max)
        else:
            for p in prange(NC, num_threads=nt, schedule="static"):
                py[p] = _global_row(px + p * HW, HW, is_max)
