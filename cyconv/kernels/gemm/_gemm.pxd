# C-level interface of the packed SGEMM for other Cython modules (``cimport``).
#
# Other extension modules must call the ``cdef`` functions below, not the C symbols of
# gemm.h: each extension is loaded privately, so only this module links the C code, and
# Cython exports these functions to the importers through a capsule table.
from libc.stddef cimport ptrdiff_t

cdef extern from "gemm/gemm.h" nogil:
    ctypedef struct cy_epilogue:
        const float *bias_row
        const float *bias_col
        int act
        float act_alpha
        float act_beta
        const float *slope_row
        const float *residual
        ptrdiff_t ldr
        int grid_wp             # grid output (gemm.h): 0 for none
        int grid_ow
        ptrdiff_t grid_q0

    ctypedef void (*cy_pack_b_fn)(const void *ctx, int k0, int kc, int j0, int nc, int NR,
                                  float *dst) noexcept nogil

    # set every field: pack_b = NULL unless B is packed on the fly
    ctypedef struct cy_operand:
        const float *data
        ptrdiff_t rs
        ptrdiff_t cs
        int packed
        cy_pack_b_fn pack_b
        const void *pack_ctx
        const ptrdiff_t *row_off

    enum:
        CY_ACT_NONE
        CY_ACT_RELU
        CY_ACT_LEAKY_RELU
        CY_ACT_CLIP
        CY_ACT_SIGMOID
        CY_ACT_TANH
        CY_ACT_HARD_SIGMOID
        CY_ACT_HARD_SWISH
        CY_ACT_SWISH
        CY_ACT_PRELU
        CY_OK
        CY_ENOMEM
        CY_EINVAL

cdef extern from "gemm/im2col.h" nogil:
    # a conv's im2col matrix as a B operand packed straight from the image (im2col.h)
    ctypedef struct cy_im2col:
        const float *x
        int H, W, OW, p0
        int KH, KW, sh, sw, dh, dw, pt, pl
        int phases

    void cy_im2col_phase_split_rows(const float *x, int H, int W, int pt, int pl, int sh,
                                    int sw, int Hq, int Wq, float *dst, int u0, int u1)

    # a 1x1 conv's input after relu(scale * x + shift) per channel, packed on the fly
    ctypedef struct cy_preact:
        const float *x
        const float *scale
        const float *shift
        ptrdiff_t ld
        int p0

cdef extern from "gemm/pool.h" nogil:
    ctypedef void (*cy_task_fn)(void *ctx, long piece, int tid) noexcept nogil

# fn(ctx, i, tid) for i < n on up to nt threads (tid < nt); the caller never waits for a
# thread that has not started (see pool.h). Returns the threads that took part.
cdef int parallel_for(long n, int nt, cy_task_fn fn, void *ctx) noexcept nogil

cdef enum:
    TASK_WORK = 16384       # element-visits per parallel_for piece at least (units grouped)

# Units (rows, planes, column blocks) of ``size`` element-visits each per piece of a
# parallel_for over ``units``: >= TASK_WORK, so a piece is claimed per few microseconds rather
# than per (possibly tiny) unit (the shared counter's cache line bounced between the cores at
# every 7x7 plane), but no fewer pieces than the nt threads.
cdef inline Py_ssize_t units_per_task(Py_ssize_t units, Py_ssize_t size, int nt) noexcept nogil:
    cdef Py_ssize_t per = (TASK_WORK + size - 1) // size if size > 0 else TASK_WORK
    cdef Py_ssize_t cap = (units + nt - 1) // nt if nt > 0 else units
    if per > cap:
        per = cap
    return per if per > 1 else 1

# End of the piece of ``per`` units that starts at unit ``first``, clipped to the ``n`` units.
cdef inline Py_ssize_t task_end(Py_ssize_t first, Py_ssize_t per, Py_ssize_t n) noexcept nogil:
    return first + per if first + per < n else n

# cy_operand with every field set (build operands only through these: a field left unset,
# pack_b above all, is read as garbage by the GEMM)
cdef inline cy_operand strided_operand(const float *data, ptrdiff_t rs,
                                       ptrdiff_t cs) noexcept nogil:
    cdef cy_operand op
    op.data, op.rs, op.cs, op.packed, op.pack_b, op.pack_ctx = data, rs, cs, 0, NULL, NULL
    op.row_off = NULL
    return op

cdef inline cy_operand packed_operand(const float *data) noexcept nogil:
    cdef cy_operand op
    op.data, op.rs, op.cs, op.packed, op.pack_b, op.pack_ctx = data, 0, 0, 1, NULL, NULL
    op.row_off = NULL
    return op

cdef inline cy_operand packer_operand(cy_pack_b_fn pack_b, const void *ctx) noexcept nogil:
    cdef cy_operand op
    op.data, op.rs, op.cs, op.packed, op.pack_b, op.pack_ctx = NULL, 0, 0, 0, pack_b, ctx
    op.row_off = NULL
    return op

# B[k, j] = data[row_off[k] + j], read in place (gemm.h; only where gemm_has_row_offsets())
cdef inline cy_operand offsets_operand(const float *data, const ptrdiff_t *row_off) noexcept nogil:
    cdef cy_operand op
    op.data, op.rs, op.cs, op.packed, op.pack_b, op.pack_ctx = data, 0, 0, 0, NULL, NULL
    op.row_off = row_off
    return op

# C[M,N] = act(alpha*A@B (+C if accumulate) + bias); see gemm.h. Returns CY_OK or CY_E*.
cdef int sgemm_ex(int M, int N, int K, float alpha, cy_operand A, cy_operand B,
                  int accumulate, float *C, ptrdiff_t ldc, const cy_epilogue *ep,
                  int n_threads) noexcept nogil
# Rows [m0, m1) of that product on the calling thread (gemm.h's cy_sgemm_rows).
cdef int sgemm_rows(int M, int m0, int m1, int N, int K, float alpha, cy_operand A,
                    cy_operand B, int accumulate, float *C, ptrdiff_t ldc,
                    const cy_epilogue *ep) noexcept nogil
# C[M,N] = act(C + bias_row + bias_col + residual) on an already computed block.
cdef void epilogue_apply(int M, int N, float *C, ptrdiff_t ldc,
                         const cy_epilogue *ep) noexcept nogil
cdef size_t sgemm_packed_a_size(int M, int K) noexcept nogil
cdef size_t sgemm_packed_b_size(int K, int N) noexcept nogil
cdef void sgemm_pack_a(int M, int K, const float *A, ptrdiff_t rsa, ptrdiff_t csa,
                 float *dst) noexcept nogil
cdef void sgemm_pack_b(int K, int N, const float *B, ptrdiff_t rsb, ptrdiff_t csb,
                 float *dst) noexcept nogil
# Winograd F(m x m, 3x3) conv, m = 2 or 4 (winograd.h): packed weights' size, packing, and the conv.
cdef size_t winograd_weights_size(int M, int C, int m) noexcept nogil
cdef int winograd_pack_weights(int M, int C, int m, const float *w, float *dst) noexcept nogil
cdef int winograd_conv3x3(int N, int C, int H, int W, int M, int OH, int OW, int pt, int pl,
                          int m, const float *x, const float *u, float *y,
                          const cy_epilogue *ep, int n_threads) noexcept nogil
# The pack_b of an operand whose pack_ctx is a cy_im2col / a cy_preact.
cdef cy_pack_b_fn im2col_packer() noexcept nogil
cdef cy_pack_b_fn preact_packer() noexcept nogil
# phase rows [u0, u1) of one plane zero-padded and split by row and column phase (im2col.h's
# cy_im2col_phase_split_rows; all of it: u0 = 0, u1 = sh * Hq)
cdef void phase_split(const float *x, int H, int W, int pt, int pl, int sh, int sw, int Hq,
                      int Wq, float *dst, int u0, int u1) noexcept nogil
cdef int gemm_mr() noexcept nogil
cdef bint gemm_has_row_offsets() noexcept nogil
cdef bint gemm_has_grid_store() noexcept nogil
# reads of row-offset rows reaching `past` floats beyond B's last element `last` (plus the
# kernel's own over-read) stay in its page (gemm.h)
cdef bint gemm_reads_in_page(const float *last, size_t past) noexcept nogil
cdef int gemm_nr() noexcept nogil

cdef class Packed:
    cdef readonly object buf        # float32 array holding the panels
    cdef readonly int rows, cols    # logical shape of the packed matrix
    cdef readonly str side          # "a" (left operand) or "b" (right operand)
    cdef readonly str isa           # micro-kernel whose panel layout buf uses
    cdef cy_operand operand(self) except *
