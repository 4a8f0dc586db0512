# cython: language_level=3
"""Packed single-precision GEMM (C kernels in this folder) for Python and Cython callers.

Python: :func:`sgemm`, :func:`pack_a`, :func:`pack_b`, :func:`isa`. Cython: ``cimport``
the ``cdef`` functions declared in ``_gemm.pxd``.
"""
import numpy as np
cimport numpy as cnp
from libc.stddef cimport ptrdiff_t
from libc.string cimport memset

cnp.import_array()

cdef extern from "gemm/gemm.h" nogil:
    const char *cy_gemm_isa_name()
    int cy_gemm_mr()
    int cy_gemm_has_row_offsets()
    int cy_gemm_has_grid_store()
    int cy_gemm_reads_in_page(const float *last, size_t past)
    int cy_gemm_nr()
    int cy_gemm_set_isa(const char *name)
    size_t cy_sgemm_packed_a_size(int M, int K)
    size_t cy_sgemm_packed_b_size(int K, int N)
    void cy_sgemm_pack_a(int M, int K, const float *A, ptrdiff_t rsa, ptrdiff_t csa, float *dst)
    void cy_sgemm_pack_b(int K, int N, const float *B, ptrdiff_t rsb, ptrdiff_t csb, float *dst)
    int cy_sgemm_ex(int M, int N, int K, float alpha, cy_operand A, cy_operand B,
                    int accumulate, float *C, ptrdiff_t ldc, const cy_epilogue *ep,
                    int n_threads)
    int cy_sgemm_rows(int M, int m0, int m1, int N, int K, float alpha, cy_operand A,
                      cy_operand B, int accumulate, float *C, ptrdiff_t ldc,
                      const cy_epilogue *ep)
    void cy_epilogue_apply(int M, int N, float *C, ptrdiff_t ldc, const cy_epilogue *ep)

cdef extern from "gemm/im2col.h" nogil:
    void cy_im2col_pack_b(const void *ctx, int k0, int kc, int j0, int nc, int NR, float *dst)
    void cy_preact_pack_b(const void *ctx, int k0, int kc, int j0, int nc, int NR, float *dst)

cdef extern from "gemm/winograd.h" nogil:
    size_t cy_winograd_weights_size(int M, int C, int m)
    int cy_winograd_pack_weights(int M, int C, int m, const float *w, float *dst)
    int cy_winograd_conv3x3(int N, int C, int H, int W, int M, int OH, int OW, int pt, int pl,
                            int m, const float *x, const float *u, float *y,
                            const cy_epilogue *ep, int n_threads)

ACT_NONE = CY_ACT_NONE
ACT_RELU = CY_ACT_RELU
# Epilogue activations by their ONNX operator name (definitions in gemm.h); "HardSwish" and
# "Swish" (x * sigmoid(x)) are cyconv extensions of ONNX Runtime's fused-activation set.
ACTIVATIONS = {
    "Identity": CY_ACT_NONE, "Relu": CY_ACT_RELU, "LeakyRelu": CY_ACT_LEAKY_RELU,
    "Clip": CY_ACT_CLIP, "Sigmoid": CY_ACT_SIGMOID, "Tanh": CY_ACT_TANH,
    "HardSigmoid": CY_ACT_HARD_SIGMOID, "HardSwish": CY_ACT_HARD_SWISH, "Swish": CY_ACT_SWISH,
    "PRelu": CY_ACT_PRELU,
}
_ACTS = {**ACTIVATIONS, None: CY_ACT_NONE, "none": CY_ACT_NONE, "relu": CY_ACT_RELU}


# ---- cdef interface (see _gemm.pxd) -------------------------------------------------------

cdef extern from "gemm/pool.h" nogil:
    int cy_parallel_for(long n, int nt, cy_task_fn fn, void *ctx)

cdef int parallel_for(long n, int nt, cy_task_fn fn, void *ctx) noexcept nogil:
    return cy_parallel_for(n, nt, fn, ctx)

cdef int sgemm_ex(int M, int N, int K, float alpha, cy_operand A, cy_operand B,
                  int accumulate, float *C, ptrdiff_t ldc, const cy_epilogue *ep,
                  int n_threads) noexcept nogil:
    return cy_sgemm_ex(M, N, K, alpha, A, B, accumulate, C, ldc, ep, n_threads)

cdef int sgemm_rows(int M, int m0, int m1, int N, int K, float alpha, cy_operand A,
                    cy_operand B, int accumulate, float *C, ptrdiff_t ldc,
                    const cy_epilogue *ep) noexcept nogil:
    return cy_sgemm_rows(M, m0, m1, N, K, alpha, A, B, accumulate, C, ldc, ep)

cdef void epilogue_apply(int M, int N, float *C, ptrdiff_t ldc,
                         const cy_epilogue *ep) noexcept nogil:
    cy_epilogue_apply(M, N, C, ldc, ep)

cdef size_t sgemm_packed_a_size(int M, int K) noexcept nogil:
    return cy_sgemm_packed_a_size(M, K)

cdef size_t sgemm_packed_b_size(int K, int N) noexcept nogil:
    return cy_sgemm_packed_b_size(K, N)

cdef void sgemm_pack_a(int M, int K, const float *A, ptrdiff_t rsa, ptrdiff_t csa,
                 float *dst) noexcept nogil:
    cy_sgemm_pack_a(M, K, A, rsa, csa, dst)

cdef void sgemm_pack_b(int K, int N, const float *B, ptrdiff_t rsb, ptrdiff_t csb,
                 float *dst) noexcept nogil:
    cy_sgemm_pack_b(K, N, B, rsb, csb, dst)

cdef size_t winograd_weights_size(int M, int C, int m) noexcept nogil:
    return cy_winograd_weights_size(M, C, m)

cdef int winograd_pack_weights(int M, int C, int m, const float *w, float *dst) noexcept nogil:
    return cy_winograd_pack_weights(M, C, m, w, dst)

cdef int winograd_conv3x3(int N, int C, int H, int W, int M, int OH, int OW, int pt, int pl,
                          int m, const float *x, const float *u, float *y,
                          const cy_epilogue *ep, int n_threads) noexcept nogil:
    return cy_winograd_conv3x3(N, C, H, W, M, OH, OW, pt, pl, m, x, u, y, ep, n_threads)

cdef cy_pack_b_fn im2col_packer() noexcept nogil:
    return <cy_pack_b_fn>cy_im2col_pack_b

cdef cy_pack_b_fn preact_packer() noexcept nogil:
    return <cy_pack_b_fn>cy_preact_pack_b

cdef void phase_split(const float *x, int H, int W, int pt, int pl, int sh, int sw, int Hq,
                      int Wq, float *dst, int u0, int u1) noexcept nogil:
    cy_im2col_phase_split_rows(x, H, W, pt, pl, sh, sw, Hq, Wq, dst, u0, u1)

cdef int gemm_mr() noexcept nogil:
    return cy_gemm_mr()

cdef int gemm_nr() noexcept nogil:
    return cy_gemm_nr()

cdef bint gemm_has_row_offsets() noexcept nogil:
    return cy_gemm_has_row_offsets() != 0

cdef bint gemm_has_grid_store() noexcept nogil:
    return cy_gemm_has_grid_store() != 0

cdef bint gemm_reads_in_page(const float *last, size_t past) noexcept nogil:
    return cy_gemm_reads_in_page(last, past) != 0


# ---- ISA --------------------------------------------------------------------------------

def isa():
    """Name of the micro-kernel in use: ``"avx512f"``, ``"avx2"`` or ``"generic"``."""
    return cy_gemm_isa_name().decode()


def set_isa(str name):
    """Force the micro-kernel (testing). Operands packed earlier become unusable.

    Raises ValueError if ``name`` is unknown or the CPU lacks the instructions.
    """
    if cy_gemm_set_isa(name.encode()) != CY_OK:
        raise ValueError(f"GEMM ISA {name!r} is unknown or not supported by this CPU")


def tile_shape():
    """``(MR, NR)``: the register tile of the micro-kernel in use."""
    return cy_gemm_mr(), cy_gemm_nr()


# ---- prepacked operands -------------------------------------------------------------------

cdef inline ptrdiff_t _elem_stride(cnp.ndarray x, int axis) except? -1:
    cdef ptrdiff_t s = x.strides[axis]
    if s % 4:
        raise ValueError("array strides must be multiples of the float32 size")
    return s // 4


cdef cnp.ndarray _as_f32(x, int ndim, str what):
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"{what} must be float32, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {x.shape}")
    if any(s % 4 for s in x.strides):
        x = np.ascontiguousarray(x)
    return x


cdef class Packed:
    """A GEMM operand packed once into micro-kernel panels (for load-time constant weights).

    Create with :func:`pack_a` or :func:`pack_b`; pass in place of ``a`` / ``b`` to
    :func:`sgemm`. Valid only for the ISA that was active when it was packed.
    """

    cdef cy_operand operand(self) except *:
        if self.isa != isa():
            raise ValueError(f"operand packed for {self.isa!r} but the GEMM now uses {isa()!r}")
        cdef float[::1] view = self.buf
        return packed_operand(&view[0] if view.shape[0] else NULL)

    @property
    def shape(self):
        return (self.rows, self.cols)


def pack_a(a):
    """Pack the left operand ``a`` (M, K), float32, any strides, into MR-row panels."""
    cdef cnp.ndarray x = _as_f32(a, 2, "a")
    cdef int M = x.shape[0], K = x.shape[1]
    cdef Packed p = Packed.__new__(Packed)
    p.buf = np.empty(max(1, sgemm_packed_a_size(M, K)), np.float32)
    cdef float[::1] dst = p.buf
    cdef ptrdiff_t rs = _elem_stride(x, 0), cs = _elem_stride(x, 1)
    cdef const float *src = <const float *>cnp.PyArray_DATA(x)
    with nogil:
        sgemm_pack_a(M, K, src, rs, cs, &dst[0])
    p.rows, p.cols, p.side, p.isa = M, K, "a", isa()
    return p


def pack_b(b):
    """Pack the right operand ``b`` (K, N), float32, any strides, into NR-column panels."""
    cdef cnp.ndarray x = _as_f32(b, 2, "b")
    cdef int K = x.shape[0], N = x.shape[1]
    cdef Packed p = Packed.__new__(Packed)
    p.buf = np.empty(max(1, sgemm_packed_b_size(K, N)), np.float32)
    cdef float[::1] dst = p.buf
    cdef ptrdiff_t rs = _elem_stride(x, 0), cs = _elem_stride(x, 1)
    cdef const float *src = <const float *>cnp.PyArray_DATA(x)
    with nogil:
        sgemm_pack_b(K, N, src, rs, cs, &dst[0])
    p.rows, p.cols, p.side, p.isa = K, N, "b", isa()
    return p


# ---- Python entry point -------------------------------------------------------------------

cdef object _bias(object v, Py_ssize_t n, str what):
    if v is None:
        return None
    v = np.ascontiguousarray(v, dtype=np.float32).reshape(-1)
    if v.shape[0] != n:
        raise ValueError(f"{what} must have {n} elements, got {v.shape[0]}")
    return v


def sgemm(a, b, out=None, *, float alpha=1.0, bint accumulate=False, bias_row=None,
          bias_col=None, residual=None, act=None, float act_alpha=0.0, float act_beta=0.0,
          slope_row=None, int n_threads=1):
    """``out = act(alpha * a @ b (+ out if accumulate) + bias_row[:, None] + bias_col + residual)``.

    Parameters
    ----------
    a : float32 array (M, K) or (batch, M, K), any strides, or :class:`Packed` from pack_a
    b : float32 array (K, N) or (batch, K, N), any strides, or :class:`Packed` from pack_b
        A 2-D operand is shared by every batch item (stride 0 batches work too).
    out : float32 C-contiguous array (M, N) or (batch, M, N), optional
        Required when ``accumulate`` is true.
    bias_row : (M,) float32, optional; bias_col : (N,) float32, optional
    residual : float32 (M, N) or (batch, M, N) with unit column stride, optional
        Added before the activation (a skip connection).
    act : None, "none", "relu", or a name in :data:`ACTIVATIONS`
    act_alpha, act_beta : float
        Activation parameters (LeakyRelu alpha; Clip min, max; HardSigmoid alpha, beta;
        PRelu slope when ``slope_row`` is None).
    slope_row : (M,) float32, optional
        PRelu slope per row.
    n_threads : int

    Returns
    -------
    out : float32 array (M, N) or (batch, M, N)
    """
    cdef cy_operand A, B
    cdef Py_ssize_t batch = 1, M, N, K, Kb
    cdef ptrdiff_t sa = 0, sb = 0, so
    cdef cnp.ndarray xa = None, xb = None
    if act not in _ACTS:
        raise ValueError(f"unknown activation {act!r}")
    if isinstance(a, Packed):
        if (<Packed>a).side != "a":
            raise ValueError("a is a packed right operand; use pack_a")
        A = (<Packed>a).operand()
        M, K = (<Packed>a).rows, (<Packed>a).cols
    else:
        xa = _as_f32(a, np.ndim(a) if np.ndim(a) in (2, 3) else 2, "a")
        if xa.ndim == 3:
            batch = xa.shape[0]
            sa = _elem_stride(xa, 0)
        M, K = xa.shape[xa.ndim - 2], xa.shape[xa.ndim - 1]
        A = strided_operand(<const float *>cnp.PyArray_DATA(xa),
                            _elem_stride(xa, xa.ndim - 2), _elem_stride(xa, xa.ndim - 1))
    if isinstance(b, Packed):
        if (<Packed>b).side != "b":
            raise ValueError("b is a packed left operand; use pack_b")
        B = (<Packed>b).operand()
        Kb, N = (<Packed>b).rows, (<Packed>b).cols
    else:
        xb = _as_f32(b, np.ndim(b) if np.ndim(b) in (2, 3) else 2, "b")
        if xb.ndim == 3:
            if batch != 1 and xb.shape[0] != batch:
                raise ValueError(f"batch sizes differ: {batch} and {xb.shape[0]}")
            batch = xb.shape[0]
            sb = _elem_stride(xb, 0)
        Kb, N = xb.shape[xb.ndim - 2], xb.shape[xb.ndim - 1]
        B = strided_operand(<const float *>cnp.PyArray_DATA(xb),
                            _elem_stride(xb, xb.ndim - 2), _elem_stride(xb, xb.ndim - 1))
    if Kb != K:
        raise ValueError(f"inner dimensions differ: a is ({M}, {K}), b is ({Kb}, {N})")
    batched = (xa is not None and xa.ndim == 3) or (xb is not None and xb.ndim == 3)
    shape = (batch, M, N)
    if not batched:
        shape = (M, N)
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs out")
        out = np.empty(shape, np.float32)
    elif (not isinstance(out, np.ndarray) or out.dtype != np.float32
          or out.shape != shape or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"out must be a writable C-contiguous float32 array of shape {shape}")
    br = _bias(bias_row, M, "bias_row")
    bc = _bias(bias_col, N, "bias_col")
    sr = _bias(slope_row, M, "slope_row")
    res = None
    cdef ptrdiff_t sr_batch = 0
    cdef cy_epilogue ep
    memset(&ep, 0, sizeof(ep))         # fields not set here (the grid output) stay off
    ep.bias_row = <const float *>cnp.PyArray_DATA(br) if br is not None else NULL
    ep.bias_col = <const float *>cnp.PyArray_DATA(bc) if bc is not None else NULL
    ep.slope_row = <const float *>cnp.PyArray_DATA(sr) if sr is not None else NULL
    ep.act = _ACTS[act]
    ep.act_alpha = act_alpha
    ep.act_beta = act_beta
    ep.residual = NULL
    ep.ldr = 0
    if residual is not None:
        res = _as_f32(residual, len(shape), "residual")
        if tuple(res.shape) != shape:
            raise ValueError(f"residual must have shape {shape}, got {tuple(res.shape)}")
        if res.strides[res.ndim - 1] != 4:
            res = np.ascontiguousarray(res)
        ep.residual = <const float *>cnp.PyArray_DATA(res)
        ep.ldr = _elem_stride(res, len(shape) - 2)
        if batched:
            sr_batch = _elem_stride(res, 0)
    cdef const float *r0 = ep.residual
    cdef float *C = <float *>cnp.PyArray_DATA(out)
    so = M * N
    cdef Py_ssize_t i
    cdef int err = CY_OK
    cdef const float *a0 = A.data
    cdef const float *b0 = B.data
    with nogil:
        for i in range(batch):
            A.data = a0 + i * sa if a0 != NULL else NULL
            B.data = b0 + i * sb if b0 != NULL else NULL
            if r0 != NULL:
                ep.residual = r0 + i * sr_batch
            err = sgemm_ex(<int>M, <int>N, <int>K, alpha, A, B, accumulate, C + i * so, N,
                           &ep, n_threads)
            if err != CY_OK:
                break
    if err == CY_ENOMEM:
        raise MemoryError("sgemm: could not allocate packing buffers")
    if err != CY_OK:
        raise ValueError(f"sgemm failed with code {err}")
    return out


# ---- native step ---------------------------------------------------------------------------

from cyconv.kernels.native cimport NativeOp


cdef struct GemmCall:
    # y (M x N) = act(alpha * A' @ B + bias_row + bias_col): A the step's input (M x K, or
    # K x M when trans_a), B packed once
    int M, N, K, n_threads
    bint trans_a
    float alpha
    const float *b
    cy_epilogue ep


cdef class GemmNative(NativeOp):
    """A Gemm with packed B prepared for one shape of A as a native step (kernels/native.pyx)."""
    cdef GemmCall g
    cdef object keep            # the packed B and the bias vectors g points into


cdef int _gemm_native_fn(void *params, const float **ins, float **outs) noexcept nogil:
    cdef GemmCall *g = <GemmCall *>params
    cdef cy_operand A = strided_operand(ins[0], 1, g.M) if g.trans_a else \
        strided_operand(ins[0], g.K, 1)
    return sgemm_ex(g.M, g.N, g.K, g.alpha, A, packed_operand(g.b), 0, outs[0], g.N, &g.ep,
                    g.n_threads)


def gemm_native(Packed b, int M, bint trans_a, float alpha=1.0, bias_row=None, bias_col=None,
                act=None, float act_alpha=0.0, float act_beta=0.0, int n_threads=1):
    """``sgemm(a, b, ...)`` prepared for an ``a`` of M rows (float32 C-contiguous, (M, K) or,
    with ``trans_a``, (K, M)) as a native step: input a, output y (M, N)."""
    if b.side != "b":
        raise ValueError("gemm_native needs a packed right operand (pack_b)")
    if act not in _ACTS:
        raise ValueError(f"unknown activation {act!r}")
    cdef GemmNative op = GemmNative.__new__(GemmNative)
    br, bc = _bias(bias_row, M, "bias_row"), _bias(bias_col, b.cols, "bias_col")
    op.keep = (b, br, bc)
    op.g.M, op.g.N, op.g.K, op.g.n_threads = M, b.cols, b.rows, n_threads
    op.g.trans_a, op.g.alpha = trans_a, alpha
    op.g.b = b.operand().data
    op.g.ep.bias_row = <const float *>cnp.PyArray_DATA(br) if br is not None else NULL
    op.g.ep.bias_col = <const float *>cnp.PyArray_DATA(bc) if bc is not None else NULL
    op.g.ep.slope_row = NULL
    op.g.ep.act = _ACTS[act]
    op.g.ep.act_alpha, op.g.ep.act_beta = act_alpha, act_beta
    op.g.ep.residual = NULL
    op.g.ep.ldr = 0
    op.g.ep.grid_wp = 0
    op.fn, op.params = _gemm_native_fn, <void *>&op.g
    op.out_shapes = ((M, b.cols),)
    op.what = f"Gemm ({M}, {b.rows}) @ ({b.rows}, {b.cols})"
    return op


cdef struct _PoolTrace:
    int* runs               # per piece: times it ran
    int* tid                # per piece: the thread that ran it
    long work               # per piece: iterations of a dependent loop
    double sink


cdef void _trace_piece(void* ctx, long piece, int tid) noexcept nogil:
    cdef _PoolTrace* t = <_PoolTrace*>ctx
    cdef double acc = piece
    cdef long i
    for i in range(t.work):
        acc = acc * 0.999 + 1.0
    if acc == -1.0:
        t.sink = acc        # never: keeps the loop
    t.runs[piece] += 1      # one piece per thread at a time: no race on a piece's slots
    t.tid[piece] = tid


cdef extern from "gemm/probe.h" nogil:
    double cy_round_trip_ns(int rounds)


def _round_trip_ns(int rounds=2000):
    """Median cross-core round trip of a cache line between this thread and one started for
    the call (gemm/probe.h): ~60 or ~330 ns on the 2-vCPU benchmark VMs, depending on where the
    host has put the vCPUs. For benchmarks; -1.0 if no thread could be started."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    cdef double ns
    with nogil:
        ns = cy_round_trip_ns(rounds)
    return ns


def _pool_trace(long n, int n_threads, long work=0):
    """Run n pieces of `work` loop iterations through the thread pool (tests): (threads used,
    runs per piece, the thread that ran each piece)."""
    runs = np.zeros(max(n, 0), np.intc)
    tids = np.full(max(n, 0), -1, np.intc)
    cdef int[::1] r = runs, d = tids
    cdef _PoolTrace t
    t.runs = &r[0] if n > 0 else NULL
    t.tid = &d[0] if n > 0 else NULL
    t.work, t.sink = work, 0
    cdef int used
    with nogil:
        used = cy_parallel_for(n, n_threads, _trace_piece, &t)
    return used, runs, tids
