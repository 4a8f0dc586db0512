# cython: language_level=3
"""Element-wise float32 kernels: unary activations and broadcast binary arithmetic.

Every kernel reads C-contiguous float32 buffers and writes a preallocated output of the same
length; outputs may not alias inputs. Work is split into fixed chunks (not per-thread ranges), so
each element is computed by the same instructions whatever ``n_threads`` is: results never depend
on the thread count.

Sigmoid, Tanh, Elu and Selu run the vectorised polynomial loops of ``elementwise.h`` (compiled
per ISA, chosen at load; within 2.4 ulp of float64 numpy); Softplus still calls libm.

Binary broadcasts are described by a 3-axis view of the larger operand, ``big[P, M, Q]``, and a
``small[M]`` operand broadcast along P and Q (legend: P = outer rows, M = the axes the small
operand spans, Q = inner run). It covers same-shape (``P = Q = 1`` with ``small`` full size is the
separate :func:`binary_same`), scalar (``M = 1``), per-channel ``[1, C, 1, 1]`` / ``[C, 1, 1]``
(``M = C``, ``Q = H*W``), bias rows ``[C]`` on ``[N, C]`` (``Q = 1``) and ``[N, C, 1, 1]`` gates
(``P = 1``, ``M = N*C``).
"""
from libc.math cimport expf, log1pf, sqrtf, powf, fabsf

from cyconv.kernels.gemm._gemm cimport parallel_for, task_end, units_per_task

cdef extern from "elementwise.h" nogil:
    # Vectorised exp-based loops (polynomial exp, per-ISA clones): see elementwise.h.
    void cy_sigmoid_f32(const float* x, float* y, Py_ssize_t n)
    void cy_tanh_f32(const float* x, float* y, Py_ssize_t n)
    void cy_elu_f32(const float* x, float* y, Py_ssize_t n, float alpha, float gamma)

cdef extern from "elementwise_loops.h" nogil:
    # Cheap loops compiled per ISA (AVX-512 / AVX2 / baseline clones): see elementwise_loops.h.
    void cy_relu_f32(const float* x, float* y, Py_ssize_t n)
    void cy_leaky_relu_f32(const float* x, float* y, Py_ssize_t n, float a)
    void cy_clip_f32(const float* x, float* y, Py_ssize_t n, float lo, float hi)
    int cy_binary_vv_f32(int op, const float* a, const float* b, float* y, Py_ssize_t n)
    int cy_binary_vs_f32(int op, const float* a, float s, float* y, Py_ssize_t n,
                         int scalar_first)

# Unary op codes (kept in sync with cyconv/ops/activation.py through the module constants below).
cdef enum:
    U_RELU = 0
    U_LEAKY_RELU = 1
    U_SIGMOID = 2
    U_TANH = 3
    U_ELU = 4
    U_SELU = 5
    U_SOFTPLUS = 6
    U_HARD_SIGMOID = 7
    U_HARD_SWISH = 8
    U_CLIP = 9
    U_SQRT = 10

# Binary op codes.
cdef enum:
    B_ADD = 0
    B_SUB = 1
    B_MUL = 2
    B_DIV = 3
    B_POW = 4
    B_PRELU = 5     # x < 0 ? slope * x : x   (a = x, b = slope)

RELU, LEAKY_RELU, SIGMOID, TANH, ELU, SELU = U_RELU, U_LEAKY_RELU, U_SIGMOID, U_TANH, U_ELU, U_SELU
SOFTPLUS, HARD_SIGMOID, HARD_SWISH, CLIP, SQRT = U_SOFTPLUS, U_HARD_SIGMOID, U_HARD_SWISH, U_CLIP, U_SQRT
ADD, SUB, MUL, DIV, POW, PRELU = B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_PRELU

# Elements per parallel task. A multiple of 16 (one zmm) so chunk edges stay aligned with the
# vector loop of the previous chunk; large enough that claiming a task is amortised.
cdef enum:
    CHUNK = 16384
# Below this many elements per thread a parallel region costs more than it saves
# (a few us to fork the GEMM's thread pool vs ~0.3 ns per cheap element; transcendental ops
# are ~10x dearer per element). The pool (gemm/pool.h), not OpenMP: the GEMM's workers spin
# between ops, and an OpenMP team next to them fought them for the two cores.
cdef enum:
    CHEAP_GRAIN = 65536
    DEAR_GRAIN = 8192


cdef enum:
    EW_UNARY = 0
    EW_SAME = 1
    EW_BCAST = 2


cdef struct EwCall:
    # one element-wise op prepared for a shape: unary(x), a (op) b of one shape, or big (op)
    # small broadcast as binary_bcast's [P, M, Q]; input big_index is the big operand
    int kind, op, nt, big_index
    float a, b
    Py_ssize_t n, P, M, Q
    bint small_first


cdef inline int _threads_for(Py_ssize_t n, int n_threads, bint dear) noexcept nogil:
    cdef Py_ssize_t grain = DEAR_GRAIN if dear else CHEAP_GRAIN
    cdef Py_ssize_t useful = n // grain
    if useful < 1:
        return 1
    if useful < n_threads:
        return <int>useful
    return n_threads if n_threads > 0 else 1


# ---------------------------------------------------------------------------------------------
# unary

cdef void _unary_run(int op, const float* x, float* y, Py_ssize_t n, float a, float b) noexcept nogil:
    """y[i] = f(x[i]) for i < n. The switch sits outside the loops so each loop vectorises."""
    cdef Py_ssize_t i
    cdef float v
    if op == U_RELU:
        cy_relu_f32(x, y, n)                      # NaN passes through, as numpy.maximum
    elif op == U_LEAKY_RELU:
        cy_leaky_relu_f32(x, y, n, a)
    elif op == U_SIGMOID:
        cy_sigmoid_f32(x, y, n)
    elif op == U_TANH:
        cy_tanh_f32(x, y, n)
    elif op == U_ELU:
        cy_elu_f32(x, y, n, a, 1.0)
    elif op == U_SELU:
        # a = alpha, b = gamma
        cy_elu_f32(x, y, n, a, b)
    elif op == U_SOFTPLUS:
        # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x.
        for i in range(n):
            v = x[i]
            y[i] = (v if v > 0.0 else 0.0) + log1pf(expf(-fabsf(v)))
    elif op == U_HARD_SIGMOID:
        # a = alpha, b = beta
        for i in range(n):
            v = a * x[i] + b
            v = 0.0 if v < 0.0 else v
            y[i] = 1.0 if v > 1.0 else v
    elif op == U_HARD_SWISH:
        # x * clamp(x / 6 + 1/2, 0, 1)
        for i in range(n):
            v = x[i] * (1.0 / 6.0) + 0.5
            v = 0.0 if v < 0.0 else v
            v = 1.0 if v > 1.0 else v
            y[i] = x[i] * v
    elif op == U_CLIP:
        # a = lo, b = hi; min(max(x, lo), hi) so lo > hi gives hi everywhere, as the spec says.
        cy_clip_f32(x, y, n, a, b)
    elif op == U_SQRT:
        for i in range(n):
            y[i] = sqrtf(x[i])


cdef bint _is_dear(int op) noexcept nogil:
    return op in (U_SIGMOID, U_TANH, U_ELU, U_SELU, U_SOFTPLUS)


cdef struct UnaryJob:
    # task c = elements [c * CHUNK, + CHUNK) of n
    const float* x
    float* y
    Py_ssize_t n
    int op
    float a, b


cdef void _unary_task(void* ctx, long c, int tid) noexcept nogil:
    cdef UnaryJob* j = <UnaryJob*>ctx
    cdef Py_ssize_t lo = c * CHUNK
    cdef Py_ssize_t hi = min(lo + CHUNK, j.n)
    _unary_run(j.op, j.x + lo, j.y + lo, hi - lo, j.a, j.b)


def unary(const float[::1] x, float[::1] y, int op, float a=0.0, float b=0.0, int n_threads=1):
    """``y = f(x)`` element-wise for the op code ``op`` (RELU ... SQRT).

    Parameters
    ----------
    x : float32[n], C-contiguous
    y : float32[n], preallocated output (not aliasing ``x``)
    op : int
        One of this module's unary codes.
    a, b : float
        Op parameters: LEAKY_RELU/ELU ``a = alpha``; SELU ``a = alpha, b = gamma``;
        HARD_SIGMOID ``a = alpha, b = beta``; CLIP ``a = min, b = max``.
    n_threads : int
    """
    cdef Py_ssize_t n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"output has {y.shape[0]} elements, input {n}")
    if not 0 <= op <= U_SQRT:
        raise ValueError(f"unknown unary op {op}")
    if n == 0:
        return
    cdef EwCall c
    _ew_prepare(&c, EW_UNARY, op, n, a, b, n_threads)
    with nogil:
        _ew_exec(&c, &x[0], NULL, &y[0])


# ---------------------------------------------------------------------------------------------
# binary

cdef void _vec_vec(int op, const float* a, const float* b, float* y, Py_ssize_t n) noexcept nogil:
    """y[i] = a[i] (op) b[i]: the per-ISA C loops, POW here with libm."""
    cdef Py_ssize_t i
    if cy_binary_vv_f32(op, a, b, y, n):
        return
    if op == B_ADD:
        for i in range(n):
            y[i] = a[i] + b[i]
    elif op == B_SUB:
        for i in range(n):
            y[i] = a[i] - b[i]
    elif op == B_MUL:
        for i in range(n):
            y[i] = a[i] * b[i]
    elif op == B_DIV:
        for i in range(n):
            y[i] = a[i] / b[i]
    elif op == B_POW:
        for i in range(n):
            y[i] = powf(a[i], b[i])
    elif op == B_PRELU:
        for i in range(n):
            y[i] = a[i] * b[i] if a[i] < 0.0 else a[i]


cdef void _vec_scalar(int op, const float* a, float s, float* y, Py_ssize_t n,
                      bint scalar_first) noexcept nogil:
    """y[i] = a[i] (op) s, or s (op) a[i] when ``scalar_first``: per-ISA C loops but POW."""
    cdef Py_ssize_t i
    cdef float r
    if cy_binary_vs_f32(op, a, s, y, n, scalar_first):
        return
    if op == B_ADD:
        for i in range(n):
            y[i] = a[i] + s
    elif op == B_MUL:
        for i in range(n):
            y[i] = a[i] * s
    elif op == B_SUB:
        if scalar_first:
            for i in range(n):
                y[i] = s - a[i]
        else:
            for i in range(n):
                y[i] = a[i] - s
    elif op == B_DIV:
        # Division, not multiplication by 1/s: keeps the result bit-identical to numpy's.
        if scalar_first:
            for i in range(n):
                y[i] = s / a[i]
        else:
            for i in range(n):
                y[i] = a[i] / s
    elif op == B_POW:
        if scalar_first:
            for i in range(n):
                y[i] = powf(s, a[i])
        elif s == 2.0:
            for i in range(n):
                y[i] = a[i] * a[i]
        else:
            for i in range(n):
                y[i] = powf(a[i], s)
    elif op == B_PRELU:
        if scalar_first:        # y = slope-vector applied to scalar x: rare, kept for completeness
            for i in range(n):
                y[i] = s * a[i] if s < 0.0 else s
        else:
            for i in range(n):
                y[i] = a[i] * s if a[i] < 0.0 else a[i]


cdef void _vec_vec_ordered(int op, const float* big, const float* small, float* y, Py_ssize_t n,
                           bint small_first) noexcept nogil:
    if small_first:
        _vec_vec(op, small, big, y, n)
    else:
        _vec_vec(op, big, small, y, n)


cdef struct VecJob:
    # task c = elements [c * CHUNK, + CHUNK) of n: y = a (op) b
    const float* a
    const float* b
    float* y
    Py_ssize_t n
    int op


cdef void _vec_task(void* ctx, long c, int tid) noexcept nogil:
    cdef VecJob* j = <VecJob*>ctx
    cdef Py_ssize_t lo = c * CHUNK
    cdef Py_ssize_t hi = min(lo + CHUNK, j.n)
    _vec_vec(j.op, j.a + lo, j.b + lo, j.y + lo, hi - lo)


cdef struct BcastJob:
    # binary_bcast, task t = units [t * per, + per). Q == 1: a unit is a row of M against
    # small; else unit i is chunk i % chunks of row i // chunks (a run of Q against small[row % M])
    const float* big
    const float* small
    float* y
    Py_ssize_t rows, M, Q, chunks, per
    int op
    bint small_first


cdef void _bcast_rows_task(void* ctx, long t, int tid) noexcept nogil:
    cdef BcastJob* j = <BcastJob*>ctx
    cdef Py_ssize_t r = t * j.per, end = task_end(r, j.per, j.rows)
    while r < end:
        _vec_vec_ordered(j.op, j.big + r * j.M, j.small, j.y + r * j.M, j.M, j.small_first)
        r += 1


cdef void _bcast_runs_task(void* ctx, long t, int tid) noexcept nogil:
    cdef BcastJob* j = <BcastJob*>ctx
    cdef Py_ssize_t i = t * j.per, end = task_end(i, j.per, j.rows * j.chunks), r, lo, hi
    while i < end:
        r = i // j.chunks
        lo = (i % j.chunks) * CHUNK
        hi = min(lo + CHUNK, j.Q)
        _vec_scalar(j.op, j.big + r * j.Q + lo, j.small[r % j.M], j.y + r * j.Q + lo, hi - lo,
                    j.small_first)
        i += 1


def binary_same(const float[::1] a, const float[::1] b, float[::1] y, int op, int n_threads=1):
    """``y = a (op) b`` for equal-length operands.

    Parameters
    ----------
    a, b : float32[n], C-contiguous
    y : float32[n], preallocated output
    op : int
        ADD, SUB, MUL, DIV, POW or PRELU (``a`` = x, ``b`` = slope).
    n_threads : int
    """
    cdef Py_ssize_t n = a.shape[0]
    if b.shape[0] != n or y.shape[0] != n:
        raise ValueError("binary_same: operand lengths differ")
    if not 0 <= op <= B_PRELU:
        raise ValueError(f"unknown binary op {op}")
    if n == 0:
        return
    cdef EwCall c
    _ew_prepare(&c, EW_SAME, op, n, 0.0, 0.0, n_threads)
    with nogil:
        _ew_exec(&c, &a[0], &b[0], &y[0])


def binary_bcast(const float[::1] big, const float[::1] small, float[::1] y, int op,
                 Py_ssize_t P, Py_ssize_t M, Py_ssize_t Q, bint small_first=False,
                 int n_threads=1):
    """``y[p, m, q] = big[p, m, q] (op) small[m]`` (operands swapped when ``small_first``).

    Parameters
    ----------
    big : float32[P*M*Q], C-contiguous
    small : float32[M]
    y : float32[P*M*Q], preallocated output
    op : int
        ADD, SUB, MUL, DIV, POW or PRELU.
    P, M, Q : int
        Outer rows, broadcast-operand length, inner run (see the module docstring).
    small_first : bool
        Compute ``small (op) big`` (e.g. ``Sub(bias, x)``).
    n_threads : int
    """
    cdef Py_ssize_t n = P * M * Q
    if P < 0 or M < 1 or Q < 1 or big.shape[0] != n or y.shape[0] != n or small.shape[0] != M:
        raise ValueError("binary_bcast: operand lengths do not match P*M*Q / M")
    if not 0 <= op <= B_PRELU:
        raise ValueError(f"unknown binary op {op}")
    if n == 0:
        return
    cdef EwCall c
    _ew_prepare(&c, EW_BCAST, op, n, 0.0, 0.0, n_threads)
    c.P, c.M, c.Q, c.small_first = P, M, Q, small_first
    with nogil:
        _ew_exec(&c, &big[0], &small[0], &y[0])


cdef void _ew_prepare(EwCall* c, int kind, int op, Py_ssize_t n, float a, float b,
                      int n_threads) noexcept nogil:
    c.kind, c.op, c.n, c.a, c.b = kind, op, n, a, b
    c.nt = _threads_for(n, n_threads, _is_dear(op) if kind == EW_UNARY else op == B_POW)
    c.P, c.M, c.Q, c.small_first, c.big_index = 1, n, 1, 0, 0


cdef void _ew_exec(const EwCall* c, const float* a, const float* b, float* y) noexcept nogil:
    # unary: y = f(a); same: y = a (op) b; broadcast: a is the big operand, b the small
    cdef UnaryJob uj
    cdef VecJob vj
    cdef BcastJob bj
    cdef Py_ssize_t r, units
    if c.kind == EW_UNARY:
        if c.nt == 1:
            _unary_run(c.op, a, y, c.n, c.a, c.b)
        else:
            uj.x, uj.y, uj.n, uj.op, uj.a, uj.b = a, y, c.n, c.op, c.a, c.b
            parallel_for((c.n + CHUNK - 1) // CHUNK, c.nt, _unary_task, &uj)
    elif c.kind == EW_SAME:
        if c.nt == 1:
            _vec_vec(c.op, a, b, y, c.n)
        else:
            vj.a, vj.b, vj.y, vj.n, vj.op = a, b, y, c.n, c.op
            parallel_for((c.n + CHUNK - 1) // CHUNK, c.nt, _vec_task, &vj)
    else:
        bj.big, bj.small, bj.y, bj.M, bj.Q = a, b, y, c.M, c.Q
        bj.op, bj.small_first = c.op, c.small_first
        if c.Q == 1:
            # small spans the innermost axis: P rows of M, vector op against small; short
            # rows grouped per task.
            if c.nt == 1:
                for r in range(c.P):
                    _vec_vec_ordered(c.op, a + r * c.M, b, y + r * c.M, c.M, c.small_first)
            else:
                bj.rows, bj.chunks, bj.per = c.P, 1, units_per_task(c.P, c.M, c.nt)
                parallel_for((c.P + bj.per - 1) // bj.per, c.nt, _bcast_rows_task, &bj)
        elif c.nt == 1:
            for r in range(c.P * c.M):
                _vec_scalar(c.op, a + r * c.Q, b[r % c.M], y + r * c.Q, c.Q, c.small_first)
        else:
            # Runs of Q against one scalar each; a long run is split into CHUNK pieces so a
            # single huge plane (scalar operand) still spreads over the threads, short runs
            # are grouped per task.
            bj.rows, bj.chunks = c.P * c.M, (c.Q + CHUNK - 1) // CHUNK
            units = bj.rows * bj.chunks
            bj.per = units_per_task(units, c.Q, c.nt) if bj.chunks == 1 else 1
            parallel_for((units + bj.per - 1) // bj.per, c.nt, _bcast_runs_task, &bj)


def accumulate(float[::1] acc, const float[::1] x, int n_threads=1):
    """``acc += x`` in place (variadic Sum accumulates into its own fresh output buffer).

    Parameters
    ----------
    acc : float32[n], the running sum, owned by the caller
    x : float32[n]
    n_threads : int
    """
    cdef Py_ssize_t n = acc.shape[0]
    if x.shape[0] != n:
        raise ValueError("accumulate: lengths differ")
    if n == 0:
        return
    cdef float* pa = &acc[0]
    cdef const float* px = &x[0]
    cdef int nt = _threads_for(n, n_threads, False)
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK
    cdef VecJob job
    job.a, job.b, job.y, job.n, job.op = pa, px, pa, n, B_ADD
    with nogil:
        if nt == 1:
            _vec_vec(B_ADD, pa, px, pa, n)
        else:
            parallel_for(n_chunks, nt, _vec_task, &job)


# ---------------------------------------------------------------------------------------------
# native steps

from cyconv.kernels.native cimport NativeOp

cdef class ElementwiseNative(NativeOp):
    """An element-wise op prepared for one shape as a native step."""
    cdef EwCall c


cdef int _ew_native_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef EwCall* c = <EwCall*>params
    if c.kind == EW_BCAST:
        _ew_exec(c, ins[c.big_index], ins[1 - c.big_index], outs[0])
    else:
        _ew_exec(c, ins[0], ins[1] if c.kind == EW_SAME else NULL, outs[0])
    return 0


cdef ElementwiseNative _ew_op(shape, int kind, int op, float a, float b, int n_threads,
                              str what):
    cdef ElementwiseNative e = ElementwiseNative.__new__(ElementwiseNative)
    cdef Py_ssize_t n = 1
    for d in shape:
        n *= d
    _ew_prepare(&e.c, kind, op, n, a, b, n_threads)
    e.inplace_input = 0         # the big operand (below) for a broadcast
    e.fn, e.params = _ew_native_fn, <void*>&e.c
    e.out_shapes = (tuple(shape),)
    e.what = what
    return e


def unary_native(shape, int op, float a=0.0, float b=0.0, int n_threads=1):
    """:func:`unary` prepared for inputs of ``shape`` as a native step."""
    if not 0 <= op <= U_SQRT:
        raise ValueError(f"unknown unary op {op}")
    return _ew_op(shape, EW_UNARY, op, a, b, n_threads, f"unary {op} {tuple(shape)}")


def binary_native(out_shape, int op, layout=None, int n_threads=1):
    """:func:`binary_same` (``layout`` None: both inputs of ``out_shape``) or
    :func:`binary_bcast` (``layout`` = (small_first, P, M, Q)) prepared as a native step:
    inputs a, b in the op's order, output y."""
    if not 0 <= op <= B_PRELU:
        raise ValueError(f"unknown binary op {op}")
    cdef ElementwiseNative e = _ew_op(out_shape, EW_SAME if layout is None else EW_BCAST, op,
                                      0.0, 0.0, n_threads, f"binary {op} {tuple(out_shape)}")
    if layout is not None:
        e.c.small_first, e.c.P, e.c.M, e.c.Q = layout
        if e.c.M < 1 or e.c.Q < 1 or e.c.P * e.c.M * e.c.Q != e.c.n:
            raise ValueError("binary_native: layout does not match the shape")
        e.c.big_index = 1 if e.c.small_first else 0
        e.inplace_input = e.c.big_index
    return e
