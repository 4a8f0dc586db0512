# cython: language_level=3
"""2-D convolution and transposed convolution over NCHW float32 (1-D callers use H = 1).

Shape legend: ``x[N, C, H, W]`` input, ``w[M, C/g, KH, KW]`` conv weights, ``y[N, M, OH, OW]``
output, ``g`` groups, ``Cg = C/g`` and ``Mg = M/g`` channels per group, ``P = OH*OW`` output
pixels, ``Kg = Cg*KH*KW`` the GEMM depth. Output pixel ``(oh, ow)`` reads input
``ih = oh*sh - pt + kh*dh``, ``iw = ow*sw - pl + kw*dw``; taps outside the image are zero.

Conv as GEMM, per (image, group)::

    y[n, g] (Mg x P) = w_g (Mg x Kg) @ col (Kg x P),    col[(c, kh, kw), p] = x[n, g*Cg + c, ih, iw]

``w_g`` is packed into micro-kernel panels once, when the plan is built; ``col`` is never
stored: the GEMM packs each block of it straight from the image into its B panels
(gemm/im2col.h). A 1x1 stride-1 unpadded conv needs no col: x[n, g] is already Kg x P.
3x3 stride-1 convs may run as Winograd F(4x4, 3x3) or F(2x2, 3x3) instead (gemm/winograd.h).
Convs on small planes or few channels read col in place instead, by row offsets into the
zero-padded image (strided ones: into its row and column phase split), over a padded-width
grid of outputs (ConvPlan._prepare_offsets).
Bias, the residual z (a skip connection, same shape as y) and the activation run in the GEMM
epilogue:
``y = act(conv(x) + bias + z)`` (com.microsoft FusedConv). Depthwise convs (g == C,
M = C * multiplier) are a direct kernel instead.

Transposed conv, per (image, group)::

    col (Mg*KH*KW x P_in) = w_g^T @ x[n, g] (Cg x P_in),   then col2im: scatter-add
    y[n, g*Mg + m, ih*sh - pt + kh*dh, iw*sw - pl + kw*dw] += col[(m, kh, kw), (ih, iw)]

col2im runs in parallel over output channels m: each y plane is written by one thread only.
Every output element is summed in a fixed order, so results do not depend on the thread count.
"""
import os

import numpy as np
cimport numpy as cnp
from libc.stddef cimport ptrdiff_t
from libc.string cimport memcpy, memmove, memset
from libc.math cimport INFINITY

from cyconv.kernels.gemm._gemm cimport (
    CY_ACT_CLIP, CY_ACT_NONE, CY_ACT_RELU, CY_ENOMEM, CY_OK, cy_epilogue, cy_im2col, cy_operand,
    cy_preact, epilogue_apply, gemm_mr, gemm_nr, im2col_packer, packed_operand, phase_split,
    offsets_operand, gemm_has_row_offsets, gemm_has_grid_store, gemm_reads_in_page,
    packer_operand, parallel_for, preact_packer, task_end, units_per_task,
    sgemm_ex, sgemm_pack_a, sgemm_rows, strided_operand,
    sgemm_packed_a_size, winograd_conv3x3, winograd_pack_weights, winograd_weights_size)
from cyconv.kernels.gemm._gemm import ACTIVATIONS
from cyconv.kernels.native cimport NativeOp

cnp.import_array()

cdef extern from *:
    """
    /* Depthwise row kernels. The package is built for the baseline ISA (SSE2 on x86-64: no
     * FMA, 4 lanes), which would leave these loops 4x short of the machine; GCC's
     * target_clones compiles them also for x86-64-v4 (AVX-512) and v3 (AVX2+FMA) and the
     * loader picks the best once (ifunc). Other compilers/platforms get the plain version. */
    #if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) \
        && defined(__ELF__)
    #define CY_DW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #else
    #define CY_DW_CLONES
    #endif

    /* row[ow] += w * src[ow*sw] for ow in [lo, hi) */
    static CY_DW_CLONES void cy_dw_tap(float *row, const float *src, float w, Py_ssize_t lo,
                                       Py_ssize_t hi, int sw)
    {
        if (sw == 1)
            for (Py_ssize_t o = lo; o < hi; o++) row[o] += w * src[o];
        else
            for (Py_ssize_t o = lo; o < hi; o++) row[o] += w * src[o * sw];
    }

    /* row[ow] = b + sum_{i,j<3} w[3i+j] * xi[ow*sw + j*d] for ow in [L, R): taps in bounds */
    static CY_DW_CLONES void cy_dw3x3(float *row, const float *x0, const float *x1,
                                      const float *x2, const float *w, float b, Py_ssize_t L,
                                      Py_ssize_t R, int sw, int d)
    {
        const float w00 = w[0], w01 = w[1], w02 = w[2], w10 = w[3], w11 = w[4], w12 = w[5],
                    w20 = w[6], w21 = w[7], w22 = w[8];
        if (sw == 1) {
            for (Py_ssize_t o = L; o < R; o++)
                row[o] = b + w00 * x0[o] + w01 * x0[o + d] + w02 * x0[o + 2 * d]
                        + w10 * x1[o] + w11 * x1[o + d] + w12 * x1[o + 2 * d]
                        + w20 * x2[o] + w21 * x2[o + d] + w22 * x2[o + 2 * d];
        } else {
            for (Py_ssize_t o = L; o < R; o++) {
                const Py_ssize_t q = o * sw;
                row[o] = b + w00 * x0[q] + w01 * x0[q + d] + w02 * x0[q + 2 * d]
                        + w10 * x1[q] + w11 * x1[q + d] + w12 * x1[q + 2 * d]
                        + w20 * x2[q] + w21 * x2[q + d] + w22 * x2[q + 2 * d];
            }
        }
    }
    """
    void cy_dw_tap(float* row, const float* src, float w, Py_ssize_t lo, Py_ssize_t hi,
                   int sw) nogil
    void cy_dw3x3(float* row, const float* x0, const float* x1, const float* x2,
                  const float* w, float b, Py_ssize_t L, Py_ssize_t R, int sw, int d) nogil

cdef extern from "conv_dw.h" nogil:
    int cy_dw_supported(int K, int sh, int sw)
    int cy_dw_c8_supported(int K, int sh, int sw, int OH, int OW)
    void cy_dw_c8(const float* x, ptrdiff_t xs, int nc, int H, int W, const float* w,
                  const float* bias, float* y, ptrdiff_t ys, int OH, int OW, int pt, int pl,
                  int clamp, float lo, float hi)
    int cy_dw_plane(const float* x, int H, int W, const float* w, float bias, float* y,
                    int OH, int OW, int K, int sh, int sw, int pt, int pl, int clamp,
                    float lo, float hi)

cdef enum:
    # Floats of col2im scratch per chunk (1 MiB): fits L2 beside the packed weights.
    COL_FLOATS = 262144
    # Work (multiply-adds, or floats copied) each extra thread must get before the direct
    # kernels fork: ~20 us of depthwise work. The pool's workers spin between ops (pool.c),
    # so a fork costs a few us while a model runs; this was 512k when every fork woke a
    # sleeping thread (50-150 us). MobileNetV2 with the GEMM's threshold lowered alike:
    # 6.9-7.9 -> 6.2-7.1 ms.
    GRAIN = 196608


cdef inline Py_ssize_t _floordiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # C division truncates toward zero; the index arithmetic needs floor (b > 0).
    cdef Py_ssize_t q = a // b
    if (a % b != 0) and (a < 0):
        q -= 1
    return q


cdef inline void _valid_range(Py_ssize_t off, Py_ssize_t s, Py_ssize_t W, Py_ssize_t OW,
                              Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    # Outputs o in [lo, hi) read an in-bounds input  0 <= o*s + off < W.
    cdef Py_ssize_t a = -_floordiv(off, s)         # ceil(-off / s)
    cdef Py_ssize_t b = _floordiv(W - 1 - off, s) + 1
    if a < 0:
        a = 0
    if b > OW:
        b = OW
    if b < a:
        b = a
    lo[0] = a
    hi[0] = b


cdef inline int _threads(double work, Py_ssize_t tasks, int n_threads) noexcept nogil:
    cdef Py_ssize_t t = <Py_ssize_t>(work / GRAIN)
    if t > tasks:
        t = tasks
    if t > n_threads:
        t = n_threads
    return <int>t if t > 1 else 1


cdef inline int _chunk(Py_ssize_t rows, Py_ssize_t P) noexcept nogil:
    # Columns per scratch chunk: a multiple of NR, at least 8 NR panels (or all of P).
    cdef Py_ssize_t nr = gemm_nr(), c
    c = COL_FLOATS // (rows if rows > 0 else 1)
    c = (c // nr) * nr
    if c < 8 * nr:
        c = 8 * nr          # deep K: keep GEMMs wide enough to be efficient, overflowing L2
    if c > P:
        c = P
    return <int>c


cdef struct Geometry:
    int KH, KW, sh, sw, dh, dw, pt, pl, pb, pr


cdef Geometry _geometry(int KH, int KW, int sh, int sw, int dh, int dw, pads):
    cdef Geometry geo
    geo.KH, geo.KW, geo.sh, geo.sw, geo.dh, geo.dw = KH, KW, sh, sw, dh, dw
    geo.pt, geo.pl, geo.pb, geo.pr = pads
    return geo


# ---- depthwise --------------------------------------------------------------------------

cdef void _depthwise_plane(const float* xp, const float* wq, float b, float* yp,
                           Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                           Geometry geo, bint relu) noexcept nogil:
    # y[oh, :] = b + sum_{kh, kw} w[kh, kw] * x[oh*sh - pt + kh*dh, ow*sw - pl + kw*dw]
    # built row by row so the output row stays in L1. For 3x3 kernels the interior
    # (rows and columns where all 9 taps are in bounds) is one fused pass: one load and
    # store of y per 9 multiply-adds. Everything else goes tap by tap over the interval
    # [lo, hi) of ow whose tap is in bounds, with no bounds test inside the loop.
    cdef Py_ssize_t oh, ow, ih, iw, lo, hi, L, R, tmp
    cdef int i, j, sw = geo.sw, d = geo.dw
    cdef float acc
    cdef float* row
    cdef const float* x0
    cdef const float* x1
    cdef const float* x2
    cdef bint fused3 = geo.KH == 3 and geo.KW == 3
    # interior columns [L, R): the first tap (kw = 0) and the last (kw = KW-1) in bounds
    _valid_range(-geo.pl, sw, W, OW, &L, &tmp)
    _valid_range((geo.KW - 1) * d - geo.pl, sw, W, OW, &tmp, &R)
    for oh in range(OH):
        row = yp + oh * OW
        ih = oh * geo.sh - geo.pt
        if fused3 and ih >= 0 and ih + 2 * geo.dh < H and L < R:
            x0 = xp + ih * W - geo.pl
            x1 = x0 + geo.dh * W
            x2 = x1 + geo.dh * W
            cy_dw3x3(row, x0, x1, x2, wq, b, L, R, sw, d)
            # the few border columns: scalar, testing each tap
            ow = 0
            while ow < OW:
                if ow == L:
                    ow = R
                    continue
                acc = b
                for j in range(3):
                    iw = ow * sw - geo.pl + j * d
                    if 0 <= iw < W:
                        acc = acc + wq[j] * x0[iw + geo.pl] + wq[3 + j] * x1[iw + geo.pl] \
                            + wq[6 + j] * x2[iw + geo.pl]
                row[ow] = acc
                ow += 1
        else:
            for ow in range(OW):
                row[ow] = b
            for i in range(geo.KH):
                ih = oh * geo.sh - geo.pt + i * geo.dh
                if ih < 0 or ih >= H:
                    continue
                for j in range(geo.KW):
                    _valid_range(j * d - geo.pl, sw, W, OW, &lo, &hi)
                    cy_dw_tap(row, xp + ih * W + j * d - geo.pl, wq[i * geo.KW + j], lo, hi, sw)
        if relu:
            for ow in range(OW):
                if row[ow] < 0:
                    row[ow] = 0


# ---- depthwise: one task per output plane --------------------------------------------------

cdef struct DwJob:
    # one depthwise Conv call: plane q = (n, m) of y reads channel m // mult of image n
    const float* xp
    float* yp
    const float* wp
    const float* bp
    Py_ssize_t H, W, OH, OW, M, C, mult, KK
    Geometry geo
    bint relu, extra, vec
    bint clamp              # vec only: clamp(y, lo, hi) in the kernel (ReLU, Clip)
    float lo, hi
    Py_ssize_t per_piece    # planes per piece (small planes are grouped)
    Py_ssize_t planes       # N*M planes, or N*blocks with c8
    const cy_epilogue* ep0
    bint c8                 # 8 channels at a time (conv_dw_c8_avx2.h): units are
    Py_ssize_t blocks       # (image, block of 8 channels), `blocks` per image


cdef void _dw_task(void* ctx, long piece, int tid) noexcept nogil:
    cdef DwJob* j = <DwJob*>ctx
    cdef Py_ssize_t q = piece * j.per_piece, end = task_end(q, j.per_piece, j.planes)
    cdef Py_ssize_t n, m0, plane = j.OH * j.OW
    if j.c8:
        while q < end:
            n = q // j.blocks
            m0 = (q - n * j.blocks) * 8
            cy_dw_c8(j.xp + (n * j.C + m0) * j.H * j.W, j.H * j.W, <int>min(8, j.M - m0),
                     <int>j.H, <int>j.W, j.wp + m0 * j.KK, j.bp + m0 if j.bp != NULL else NULL,
                     j.yp + (n * j.M + m0) * plane, plane, <int>j.OH, <int>j.OW, j.geo.pt,
                     j.geo.pl, j.clamp, j.lo, j.hi)
            q += 1
        return
    while q < end:
        _dw_plane(j, q, tid)
        q += 1


cdef inline void _dw_channel(const DwJob* j, Py_ssize_t m, const float* x, Py_ssize_t H,
                             float* y, Py_ssize_t OH, Geometry geo) noexcept nogil:
    # output channel m over OH rows from x's H rows (geo: the job's, or a strip's pads):
    # the vector kernel where it applies, else the scalar one
    cdef float b = j.bp[m] if j.bp != NULL else 0.0
    if not (j.vec and cy_dw_plane(x, <int>H, <int>j.W, j.wp + m * j.KK, b, y, <int>OH,
                                  <int>j.OW, geo.KH, geo.sh, geo.sw, geo.pt, geo.pl,
                                  j.clamp, j.lo, j.hi)):
        _depthwise_plane(x, j.wp + m * j.KK, b, y, H, j.W, OH, j.OW, geo, j.relu)


cdef void _dw_plane(DwJob* j, Py_ssize_t q, int tid) noexcept nogil:
    cdef Py_ssize_t n = q // j.M, m = q - n * j.M, plane = j.OH * j.OW
    cdef float* y = j.yp + q * plane
    cdef cy_epilogue ep
    _dw_channel(j, m, j.xp + (n * j.C + m // j.mult) * j.H * j.W, j.H, y, j.OH, j.geo)
    if j.extra:
        # the plane is OH rows of one channel m: its PRelu slope is a scalar
        ep = j.ep0[0]
        ep.bias_row = NULL
        ep.slope_row = NULL
        if j.ep0.slope_row != NULL:
            ep.act_alpha = j.ep0.slope_row[m]
        ep.residual = j.ep0.residual + q * plane if j.ep0.residual != NULL else NULL
        ep.ldr = j.OW
        epilogue_apply(<int>j.OH, <int>j.OW, y, j.OW, &ep)


cdef struct SplitJob:
    # a phase split of x (gemm/im2col.h) in `tasks` pieces (_copy_tasks), each plane of the
    # N*C into sh*sw phase planes of Hq x Wq; by column phase only (sh = 1) for the GEMM
    # path's im2col, by row and column phase for a strided row-offset conv
    const float* x
    float* xq
    Py_ssize_t H, W, pt, pl, sh, sw, Hq, Wq, planes, tasks, chunks


cdef struct PadJob:
    # the row-offset path's zero-padded copy of x in `tasks` pieces (_copy_tasks), plane p of
    # the N*C (H x W) into xpad at p*plane, rows pt.. and columns pl.. of its Hp x Wp
    const float* x
    float* xpad
    Py_ssize_t H, W, Wp, plane, pt, pl, planes, tasks, chunks


cdef inline void _copy_tasks(Py_ssize_t planes, Py_ssize_t floats, int n_threads,
                             Py_ssize_t* tasks, Py_ssize_t* chunks) noexcept nogil:
    # Pieces of a pad or phase split of `planes` planes of `floats` each, dealt evenly: task
    # t is planes [t * planes // tasks, (t + 1) * planes // tasks), tasks a multiple of the
    # threads (16 planes in 3 tasks of 6, 6, 4 kept one thread 2 planes behind the other),
    # or, with fewer planes than two per thread, chunks > 1 row parts of each plane: task t
    # is part t % chunks of plane t // chunks (a 3-channel image as 3 planes on 2 threads
    # had one thread wait through 37 of the 83 us of SqueezeNet's first-layer split).
    cdef Py_ssize_t per = units_per_task(planes, floats, n_threads)
    if n_threads > 1 and planes < 2 * n_threads:
        chunks[0] = (4 * n_threads + planes - 1) // planes
        tasks[0] = planes * chunks[0]
        return
    chunks[0] = 1
    tasks[0] = (planes + per - 1) // per
    if n_threads > 1:
        tasks[0] = min(planes, (tasks[0] + n_threads - 1) // n_threads * n_threads)


cdef inline void _copy_task_range(long t, Py_ssize_t planes, Py_ssize_t tasks,
                                  Py_ssize_t chunks, Py_ssize_t rows, Py_ssize_t* p0,
                                  Py_ssize_t* p1, Py_ssize_t* r0, Py_ssize_t* r1) noexcept nogil:
    # task t of _copy_tasks' partition: planes [p0, p1), rows [r0, r1) of each
    cdef Py_ssize_t k
    if chunks > 1:
        p0[0], k = t // chunks, t % chunks
        p1[0], r0[0], r1[0] = p0[0] + 1, k * rows // chunks, (k + 1) * rows // chunks
    else:
        p0[0], p1[0], r0[0], r1[0] = t * planes // tasks, (t + 1) * planes // tasks, 0, rows


cdef struct ConvJob:
    # one Conv call: x (N, C, H, W), y (N, M, OH, OW), packed weights, epilogue, geometry
    const float* x
    float* y
    const float* w
    const cy_epilogue* ep
    Py_ssize_t C, M, H, W, OW, P
    int group, Cg, Mg, Kg
    size_t group_size
    bint direct
    const float* pre_scale  # direct path: relu(pre_scale * x + pre_shift) per channel, or NULL
    const float* pre_shift
    Geometry geo
    # column stride >= 2 (kxk): x zero-padded and split by column phase once per call,
    # (N, C, phases, Hq, Wq) (gemm/im2col.h); phases = 0 when im2col reads x itself
    const float* xq
    int phases, Hq, Wq


cdef struct PieceJob:
    # the pieces of a parallel Conv call: piece r = (item r // per, column range r % per)
    const ConvJob* job
    Py_ssize_t per, nr
    int failed


# ---- one prepared call ------------------------------------------------------------------

cdef enum:
    PATH_DEPTHWISE = 1
    PATH_WINOGRAD = 2
    PATH_OFFSETS = 3
    PATH_GEMM = 4


cdef struct ConvCall:
    # A Conv prepared for one input shape (ConvPlan._prepare): the path, its thread split and
    # jobs with every field but the data pointers, and the scratch it works in. Run by
    # _conv_exec, from ConvPlan.run (scratch per call) or a native step (scratch kept).
    int path, n_threads
    int nt                  # threads of the path's own parallel region (grid copy, pieces)
    Py_ssize_t N, C, M, H, W, OH, OW
    Geometry geo
    cy_epilogue ep          # bias, slopes, activation; the residual comes with each call
    bint has_z              # a native step's second input is the residual
    const float* w          # packed weights (offsets path) or Winograd transforms
    const float* pre_scale  # pre-activation relu(scale * x + shift) (GEMM path) or NULL
    const float* pre_shift
    int wino_tile
    DwJob dw                # depthwise: planes in pieces
    Py_ssize_t pieces
    # row-offset path: the zero-padded images (Hp x Wp planes; with strides, their sh*sw
    # phase planes of Hq x Wq each, SplitJob sj, and Wp holds Wq: the grid's row) read by
    # row offsets off[K];
    # pieces are bands of the padded-width grid (the Q columns of an image as `panels` NR
    # panels dealt evenly: band b is panels [b * panels // bands, (b + 1) * panels // bands),
    # at most band_cols columns, the last ending at Q) x msplit ranges of output channels,
    # each a GEMM that stores the grid's output columns into y (grid_store: gemm.h's grid
    # output), or else computes the band into the thread's grid buffer (M x band_cols)
    # copied into y
    Py_ssize_t Wp, plane, Q, K, panels, band_cols, bands, msplit
    bint in_place, phased   # phased: strided, x phase split (sj) instead of padded (pad)
    # unpadded: stride 1 and no pads, so x is its own padded image, read in place unless the
    # grid's reads, past_end floats beyond x's last one, could leave its page
    bint unpadded
    Py_ssize_t past_end
    bint grid_store         # the GEMM stores the grid's kept columns into y (no grid buffer)
    PadJob pad
    int pad_nt
    # GEMM path: (image, group) items cut into `per` column ranges; the phase split of x
    ConvJob job
    SplitJob sj
    int split_nt
    Py_ssize_t items, per
    # scratch: sizes (set by _prepare) and buffers (_scratch_for)
    Py_ssize_t xpad_floats, off_count, grid_floats, xq_floats
    float* xpad
    ptrdiff_t* off
    float* grid
    float* xq


cdef class _Scratch:
    """Holds the buffers of one prepared call (see _scratch_for)."""
    cdef object xpad, off, rest


cdef _Scratch _scratch_for(ConvCall* c):
    # Allocates what _prepare sized and points c at it. The padded image is zeroed once:
    # calls write only its interior, so the padding stays zero for every later call.
    cdef _Scratch s = _Scratch.__new__(_Scratch)
    cdef Py_ssize_t k = 0, ch, kh, kw
    cdef float* base
    if c.xpad_floats:
        s.xpad = np.zeros(c.xpad_floats, np.float32)
        c.xpad = <float*>cnp.PyArray_DATA(s.xpad)
    if c.off_count:
        s.off = np.empty(c.off_count, np.intp)
        c.off = <ptrdiff_t*>cnp.PyArray_DATA(s.off)
        # tap (kh, kw) of channel ch: phase (kh*dh % sh, kw*dw % sw) of the channel's split,
        # from its row kh*dh // sh and column kw*dw // sw (stride 1: the padded plane itself)
        for ch in range(c.C):
            for kh in range(c.geo.KH):
                for kw in range(c.geo.KW):
                    c.off[k] = (ch * c.plane
                                + ((kh * c.geo.dh) % c.geo.sh * c.geo.sw
                                   + (kw * c.geo.dw) % c.geo.sw) * c.sj.Hq * c.Wp
                                + (kh * c.geo.dh) // c.geo.sh * c.Wp
                                + (kw * c.geo.dw) // c.geo.sw)
                    k += 1
    if c.grid_floats + c.xq_floats:
        s.rest = np.empty(c.grid_floats + c.xq_floats, np.float32)
        base = <float*>cnp.PyArray_DATA(s.rest)
        c.grid = base if c.grid_floats else NULL
        c.xq = base + c.grid_floats if c.xq_floats else NULL
    return s


cdef int _conv_exec(const ConvCall* c, const float* x, float* y, const float* z) noexcept nogil:
    # y = act(conv(x) + bias + z) for the shape c was prepared for; CY_OK or an error code
    cdef cy_epilogue ep = c.ep
    cdef DwJob dw
    ep.residual = z
    if c.path == PATH_DEPTHWISE:
        dw = c.dw
        dw.xp, dw.yp, dw.ep0 = x, y, &ep
        parallel_for(c.pieces, c.nt, _dw_task, &dw)
        return CY_OK
    if c.path == PATH_WINOGRAD:
        return winograd_conv3x3(<int>c.N, <int>c.C, <int>c.H, <int>c.W, <int>c.M, <int>c.OH,
                                <int>c.OW, c.geo.pt, c.geo.pl, c.wino_tile, x, c.w, y, &ep,
                                c.n_threads)
    if c.path == PATH_OFFSETS:
        return _offsets_exec(c, x, y, &ep)
    return _gemm_exec(c, x, y, &ep)


cdef struct BandJob:
    # one row-offset call: task t = band t % bands of image t // bands
    const ConvCall* c
    float* y
    const cy_epilogue* ep   # residual at image 0 (y-shaped), or NULL
    const float* xb         # the padded images: x itself (unpadded) or c.xpad
    int failed


cdef int _offsets_exec(const ConvCall* c, const float* x, float* y,
                       const cy_epilogue* ep0) noexcept nogil:
    # One parallel region for the GEMMs: pieces are bands of output rows x ranges of output
    # channels (each thread's GEMM reads its channels' weights and its rows' stretch of the
    # padded image, and stores its grid rows into y: directly, or copied from its buffer
    # right after, while they are in L1/L2). Splitting the rows of one GEMM over threads (M)
    # instead, then copying the grid in a second region, ran CIFAR-size layers (32 -> 32 at
    # 30x30) at 1.2-1.3x of one thread on two.
    cdef PadJob pad = c.pad
    cdef SplitJob sj = c.sj
    cdef BandJob j
    j.xb = c.xpad
    if c.phased:
        sj.x, sj.xq = x, c.xpad
        parallel_for(sj.tasks, c.pad_nt, _split_task, &sj)
    elif c.unpadded and gemm_reads_in_page(x + c.N * c.C * c.plane - 1, c.past_end):
        j.xb = x            # already the padded image (see _prepare_offsets)
    else:
        pad.x, pad.xpad = x, c.xpad
        parallel_for(pad.tasks, c.pad_nt, _pad_task, &pad)
    j.c, j.y, j.ep, j.failed = c, y, ep0, 0
    parallel_for(c.N * c.bands * c.msplit, c.nt, _band_task, &j)
    return CY_ENOMEM if j.failed else CY_OK


cdef void _pad_task(void* ctx, long t, int tid) noexcept nogil:
    cdef PadJob* j = <PadJob*>ctx
    cdef Py_ssize_t p, i, p0, p1, i0, i1
    _copy_task_range(t, j.planes, j.tasks, j.chunks, j.H, &p0, &p1, &i0, &i1)
    for p in range(p0, p1):
        for i in range(i0, i1):
            memcpy(j.xpad + p * j.plane + (i + j.pt) * j.Wp + j.pl, j.x + (p * j.H + i) * j.W,
                   j.W * sizeof(float))


cdef void _band_task(void* ctx, long t, int tid) noexcept nogil:
    # y[n, m0:m1] at the grid columns [q0, q1) of image n: task t is range t % msplit of the
    # output channels (whole MR-row tiles) of band (t // msplit) % bands of image
    # t // (msplit * bands). Grid column q is output (q // Wp, q % Wp), kept when q % Wp < OW;
    # the kept ones of [q0, q1) are the contiguous stretch [p0, p1) of y's plane. With
    # grid_store the GEMM stores only those, straight into y, bias, residual and activation
    # in its epilogue. Otherwise it computes the band into the thread's grid buffer, which is
    # copied into y; the GEMM applies bias and activation, or, with a residual (laid out like
    # y, not like the grid), the copy's epilogue pass does, in the same order of operations
    cdef BandJob* j = <BandJob*>ctx
    cdef const ConvCall* c = j.c
    cdef Py_ssize_t mh = t % c.msplit, band = t // c.msplit
    cdef Py_ssize_t n = band // c.bands, b = band - n * c.bands, nr = gemm_nr()
    cdef Py_ssize_t q0 = b * c.panels // c.bands * nr
    cdef Py_ssize_t q1 = min((b + 1) * c.panels // c.bands * nr, c.Q), Qb = q1 - q0
    cdef Py_ssize_t P = c.OH * c.OW, M = c.M, Wp = c.Wp, OW = c.OW, m, oh, lo, hi
    cdef Py_ssize_t mr = gemm_mr(), mtiles = (M + mr - 1) // mr
    cdef Py_ssize_t m0 = mh * mtiles // c.msplit * mr
    cdef Py_ssize_t m1 = min((mh + 1) * mtiles // c.msplit * mr, M)
    cdef Py_ssize_t p0 = q0 // Wp * OW + min(q0 % Wp, OW), p1 = q1 // Wp * OW + min(q1 % Wp, OW)
    cdef float* yn = j.y + n * M * P
    cdef cy_epilogue ep = j.ep[0]
    cdef cy_operand B = offsets_operand(j.xb + n * c.C * c.plane + q0, c.off)
    cdef float* grid
    cdef int err
    if m0 >= m1:
        return
    if ep.residual != NULL:
        ep.residual = ep.residual + n * M * P + (0 if c.grid_store else p0)
    if c.in_place:                      # Wp == OW: the grid is y's plane
        err = sgemm_rows(<int>M, <int>m0, <int>m1, <int>Qb, <int>c.K, 1.0, packed_operand(c.w),
                         B, 0, yn + q0, P, &ep)
    elif c.grid_store:                  # the GEMM drops the padding columns as it stores
        ep.grid_wp, ep.grid_ow, ep.grid_q0 = <int>Wp, <int>OW, q0
        err = sgemm_rows(<int>M, <int>m0, <int>m1, <int>Qb, <int>c.K, 1.0, packed_operand(c.w),
                         B, 0, yn, P, &ep)
    else:
        grid = c.grid + tid * M * c.band_cols
        err = sgemm_rows(<int>M, <int>m0, <int>m1, <int>Qb, <int>c.K, 1.0, packed_operand(c.w),
                         B, 0, grid, Qb, &ep if ep.residual == NULL else NULL)
        if err == CY_OK:
            for m in range(m0, m1):
                for oh in range(q0 // Wp, (q1 - 1) // Wp + 1):
                    lo = max(q0 - oh * Wp, 0)
                    hi = min(q1 - oh * Wp, OW)
                    if hi > lo:
                        memcpy(yn + m * P + oh * OW + lo, grid + m * Qb + oh * Wp + lo - q0,
                               (hi - lo) * sizeof(float))
            if ep.residual != NULL:
                if ep.bias_row != NULL:
                    ep.bias_row = ep.bias_row + m0
                if ep.slope_row != NULL:
                    ep.slope_row = ep.slope_row + m0
                ep.residual = ep.residual + m0 * P
                epilogue_apply(<int>(m1 - m0), <int>(p1 - p0), yn + m0 * P + p0, P, &ep)
    if err != CY_OK:
        j.failed = 1


cdef int _gemm_exec(const ConvCall* c, const float* x, float* y,
                    const cy_epilogue* ep) noexcept nogil:
    cdef ConvJob job = c.job
    cdef SplitJob sj
    cdef PieceJob pj
    cdef Py_ssize_t it
    cdef int err = CY_OK
    job.x, job.y, job.ep = x, y, ep
    job.pre_scale, job.pre_shift = c.pre_scale, c.pre_shift
    if job.phases:
        sj = c.sj
        sj.x, sj.xq = x, c.xq
        parallel_for(sj.tasks, c.split_nt, _split_task, &sj)
        job.xq = c.xq
    if c.nt == 1:
        for it in range(c.items):
            err = _conv_piece(&job, it // job.group, it % job.group, 0, job.P, c.n_threads)
            if err != CY_OK:
                break
    else:
        pj.job, pj.per, pj.nr, pj.failed = &job, c.per, gemm_nr(), 0
        parallel_for(c.pieces, c.nt, _conv_task, &pj)
        err = CY_ENOMEM if pj.failed else CY_OK
    return err


cdef _raise_for(int err, int path):
    if err == CY_OK:
        return
    if err == CY_ENOMEM:
        raise MemoryError("Conv: could not allocate Winograd buffers" if path == PATH_WINOGRAD
                          else "Conv: could not allocate GEMM packing buffers")
    raise RuntimeError(f"Conv: {'Winograd' if path == PATH_WINOGRAD else 'GEMM'} failed ({err})")


cdef class ConvNative(NativeOp):
    """A Conv prepared for one input shape as a native step: inputs x (and z), output y."""
    cdef ConvCall c
    cdef object plan, pre, scratch     # what c points into


cdef int _conv_native_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef ConvCall* c = <ConvCall*>params
    return _conv_exec(c, ins[0], outs[0], ins[1] if c.has_z else NULL)


# ---- plans ------------------------------------------------------------------------------

cdef _check_x(x, Py_ssize_t C, str what):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise TypeError(f"{what}: expected a 4-D float32 array")
    if x.shape[1] != C:
        raise ValueError(f"{what}: expected {C} input channels, got {x.shape[1]}")
    return np.ascontiguousarray(x)


# CYCONV_OFFSETS=0 turns the row-offset path off (A/B measurements), read once at import.
OFFSETS_ENABLED = os.environ.get("CYCONV_OFFSETS", "1").strip() != "0"


cdef enum:
    # multiply-adds (over the padded-width grid) below which a row-offset conv stays on one
    # thread and few-channel convs may take the row-offset path (ConvPlan._offsets_pay)
    TINY_WORK = 400000
    # Input floats from which a row-offset conv pads (or phase-splits) its input on all its
    # threads rather than on one. The copy is short, but on one thread it is serial time the
    # other thread waits through, and the other thread then reads what it did not write.
    # At 65536 the CIFAR CNN's 32 x 32 x 32 and 64 x 15 x 15 inputs were padded on one
    # thread: in-process A/B, 2 threads, 8192 against 65536: CIFAR CNN 0.965x (6 runs, both
    # orders, 0.935-0.988), SqueezeNet 0.99x (0.955-1.038), PNet 0.98x.
    PAD_PARALLEL_MIN = 8192


cdef inline double _offsets_work(Py_ssize_t M, Py_ssize_t K, Py_ssize_t H, Py_ssize_t W,
                                 Geometry geo) noexcept nogil:
    # M x K x (OH * Wq): the row-offset GEMM's multiply-adds for one image (Wq: the grid's
    # row, the padded width / column stride)
    cdef Py_ssize_t Wq = (W + geo.pl + geo.pr + geo.sw - 1) // geo.sw
    cdef Py_ssize_t OH = (H + geo.pt + geo.pb - (geo.KH - 1) * geo.dh - 1) // geo.sh + 1
    return <double>M * K * OH * Wq


cdef inline bint offsets_pay(Py_ssize_t C, Py_ssize_t M, int sh, int sw, Py_ssize_t Hp,
                             Py_ssize_t Wp) noexcept nogil:
    # The row-offset path (_prepare_offsets / _offsets_exec: a kxk conv read in place from its
    # padded input, no im2col packing) against im2col + packed GEMM, 2 threads, one image:
    # 0.66-0.9x on padded planes up to 32x32 (the kxk taps of a channel share its 4 KiB),
    # 0.85-1.25x beyond (each k-step reads a row in another page), and slower on 1x1 convs
    # (packing a contiguous copy pays for itself). It also pays, on any plane and any number of input channels, when both channel counts
    # are small (C * M <= 1024) and the padded input fits L2 (<= 320 KiB). In-process A/B,
    # 2 threads, medians: MTCNN PNet's 3 -> 10 at 120x160 0.22 vs 0.47 ms as im2col + GEMM,
    # its 10 -> 16 at 59x79 0.18-0.25 vs 0.44-0.47 (0.23 vs 0.65 on one thread), its
    # 16 -> 32 at 57x77 0.40-0.48 vs 0.53-0.61 as Winograd; the CIFAR CNN's 3 -> 32 at 32x32
    # 41 vs 55 us. At C * M = 3072 (24 -> 128 at 56x56) Winograd stayed faster (1.75-1.8 vs
    # 2.2-3.7 ms), and VGG's 3 -> 64 at 224x224 (613 KiB padded) ran the same either way.
    if not gemm_has_row_offsets():
        return False
    if sh > 1 or sw > 1:
        # Strided, x split by row and column phase (_prepare_offsets): the first convs of
        # ImageNet models, few channels on a big plane, whose im2col packing outweighed
        # their few multiply-adds per column. In-process A/B against im2col + GEMM (2 threads,
        # one layer, ReLU): 7x7 s2 3 -> 64 at 224x224 0.81-0.89x, AlexNet's 11x11 s4 0.84-0.86x,
        # 3 -> 8 3x3 s2 at 64..128 0.46-0.63x on one thread, 0.8-0.97x on two; 3x3 s2
        # 3 -> 32/64 at 224 0.94-1.08x. Many channels did not pay: 64 -> 64 s2 at 112x112 and
        # 128 -> 128 at 56x56 1.15x, 64 -> 128 at 56x56 0.91-1.13x, 256 -> 256 at 28x28 1.06x.
        return C * M <= 1024 and C * Hp * Wp <= 262144
    if C * M <= 1024 and C * Hp * Wp <= 81920:
        return True
    return C >= 8 and Hp * Wp <= 1024


def winograd_applies(int KH, int KW, strides, dilations, int group):
    """Whether Winograd F(4x4, 3x3) computes this conv: 3x3, stride 1, dilation 1, group 1."""
    return (KH == 3 and KW == 3 and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1)
            and group == 1)


def winograd_weight_bytes(int M, int C, int tile):
    """Bytes of the transformed, packed weights a ConvPlan of M x C channels holds for this
    Winograd output tile (4 or 2)."""
    return 4 * winograd_weights_size(M, C, tile)


def winograd_tile(Py_ssize_t C, Py_ssize_t M, Py_ssize_t N, Py_ssize_t OH, Py_ssize_t OW,
                  bint weights_cached=False):
    """The Winograd output tile worth using for this layer and input size: 4, 2 or 0 (none).

    ``weights_cached``: the model's small-plane F(4x4) layers (below) take few enough
    weights together to stay in cache from one run to the next (the caller's model-wide
    count, ops/conv.py ``small_plane_winograd``), so those layers take F(4x4) too.

    F(4x4, 3x3) saves 3/4 of the multiplies for 4x the weight memory, F(2x2, 3x3) 5/9 for
    1.8x. Both cost the transforms (~ C + M values per tile) and reread the transformed
    weight planes once per chunk of tiles, and the GEMMs run tiles in 16-lane panels: a call
    needs >= 16 tiles to fill them. One 7x7 image has 4 tiles of 4x4 but 16 of 2x2; few
    channels (C = 3 first layers: GEMM depth 3) favour im2col + GEMM. On so few tiles the
    weights are read for little work, and past 256 x 256 channels (ResNet's 512-channel 7x7
    stage) streaming 1.8x the weights from memory ate the F(2x2) gain: measured in chains of
    layers (cold weights) at 1 thread, 7x7: C = M = 64 -18%, 128 -24%, 256 -17%, 512 -2%.
    """
    if C < 16 or M < 16:
        return 0
    # Where the row-offset path applies (no transforms, no packing), Winograd pays once a
    # tile's multiplies saved (~ C * M) outweigh its transforms (~ C + M), from about
    # C * M >= 20 (C + M) on, but only while its 4x weights stay in cache from one run to
    # the next: up to C * M = 2275 (320 KiB of F(4x4) weights), or, beyond, on planes with
    # enough tiles (below). In-process A/B, 2 threads, one layer alone, row offsets vs
    # F(4x4): 16->96 at 28x28 215 vs 250-286 us, 24->48 at 28x28 157 vs 174, 32->32 at 30x30
    # 194-203 vs 200-202 (below the ratio); 32->64 at 15x15 68 vs 48 (the CIFAR CNN: 0.62 ->
    # 0.59 ms). Alone, larger layers ran faster as Winograd too (64->64 at 13x13 100 vs 75
    # us, 128->32 at 28x28 405 vs 355), but in DenseNet-121, whose 36 such layers' F(4x4)
    # weights take 21 MB, the model ran 10% slower; so from C * M > 2275 up to 8192 the row
    # offsets stayed, as measured when that path was new. Without F(4x4) tiles to fill (7x7
    # planes), row offsets beat F(2x2) up to C * M = 8192: 128->32 41 vs 53 us, 64->64 52 vs
    # 61; 160->320 474-505 vs 315-320.
    # From C * M > 2275 on, F(4x4) pays again where there are >= 49 tiles (planes from 25x25)
    # to share each weight plane: only the 14x14 and 13x13 layers lost in DenseNet. Zen 4
    # (AVX-512), 2 threads, one layer alone, F(4x4) / row offsets: 32->128 at 27x27 0.72-0.79,
    # 128->32 at 28x28 0.75 (1 thread 0.84), 128->32 at 14x14 1.00-1.09 (so not there);
    # whole models in process, both orders: SqueezeNet 0.98x (its two 27x27 expands),
    # DenseNet-121 0.99x (its 12 28x28 layers; 1 thread 0.98x), GoogLeNet 1.01x (noise).
    # Between 16 and 48 tiles F(4x4) still wins alone (2026-12-07, one layer, weights warm,
    # F(4x4) / row offsets, 1 / 2 threads: 64->64 at 13x13 0.79 / 0.78, 128->32 at 14x14
    # 0.95 / 0.82, 96->48 at 14x14 0.78 / 0.71), and in a model whose such layers' weights
    # are few (weights_cached): the CIFAR CNN's 64->64 at 13x13 (0.59 MB) 0.945 / 0.96 of
    # the whole run. DenseNet-121's 24 of them (14 MB) ran 0.995 / 0.99 near and 1.04 with
    # the vCPUs far apart (benchmarks/placement_states.py), so there they stay row offsets.
    cdef Py_ssize_t f4_tiles = N * ((OH + 3) // 4) * ((OW + 3) // 4)
    cdef bint f4 = f4_tiles >= 16
    cdef bint small_plane = C * M > 2275 and f4_tiles < 49 and not weights_cached
    if C * M <= 8192 and offsets_pay(C, M, 1, 1, OH + 2, OW + 2) and (
            C * M < 20 * (C + M) or small_plane or not f4):
        return 0
    if f4:
        return 4
    if N * ((OH + 1) // 2) * ((OW + 1) // 2) >= 16 and C * M <= 256 * 256:
        return 2
    return 0


cdef class ConvPlan:
    """A 2-D convolution (NCHW, float32) with its weights packed once.

    Parameters
    ----------
    w : float32 (M, C/group, KH, KW)
    bias : float32 (M,) or None
    strides, dilations : (int, int)
    group : int
    relu : bool
        Apply max(0, .) to the output (shorthand for ``activation="Relu"``).
    activation : str, optional
        A name in ``cyconv.kernels.gemm._gemm.ACTIVATIONS``, applied in the epilogue.
    act_alpha, act_beta : float
        Its parameters (LeakyRelu alpha; Clip min, max; HardSigmoid alpha, beta).
    slopes : float32 (M,) or (1,), optional
        PRelu slopes per output channel (one value: shared).
    winograd : int
        0: im2col + GEMM; 4 or 2: Winograd F(4x4, 3x3) or F(2x2, 3x3) (gemm/winograd.h).
        Only for 3x3, stride 1, dilation 1, one group (ValueError otherwise); the caller
        decides when it pays (``winograd_tile``): the transformed weights take 4x (1.8x)
        the memory.
    """
    cdef readonly int C, M, group, Cg, Mg, KH, KW, sh, sw, dh, dw, multiplier, act
    cdef readonly bint relu, depthwise
    cdef readonly float act_alpha, act_beta
    cdef object slopes
    cdef object w_packed    # GEMM path: group panels of sgemm_packed_a_size(Mg, Kg) floats
    cdef object w_direct    # depthwise path: (M, KH*KW) contiguous
    cdef object w_winograd  # Winograd path: 36 packed (M x C) panels of U = G g G^T
    cdef readonly int winograd   # output tile of the Winograd path, 0 when im2col + GEMM
    cdef object bias
    cdef int packed_mr
    cdef size_t group_size

    def __init__(self, w, bias, strides, dilations, int group, bint relu=False, activation=None,
                 float act_alpha=0.0, float act_beta=0.0, slopes=None, int winograd=0):
        cdef Py_ssize_t g
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.ndim != 4:
            raise ValueError(f"conv weights must be 4-D, got shape {w.shape}")
        self.M, self.Cg, self.KH, self.KW = w.shape
        self.group = group
        if group < 1 or self.M % group:
            raise ValueError(f"group={group} must divide the {self.M} output channels")
        self.C, self.Mg = self.Cg * group, self.M // group
        self.sh, self.sw = strides
        self.dh, self.dw = dilations
        if activation is None:
            activation = "Relu" if relu else "Identity"
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.act = ACTIVATIONS[activation]
        self.relu = self.act == CY_ACT_RELU
        self.act_alpha, self.act_beta = act_alpha, act_beta
        self.slopes = None
        if slopes is not None:
            slopes = np.ascontiguousarray(slopes, np.float32).reshape(-1)
            if slopes.shape[0] not in (1, self.M):
                raise ValueError(f"PRelu slopes must have 1 or {self.M} values, got "
                                 f"{slopes.shape[0]}")
            self.slopes = np.broadcast_to(slopes, (self.M,)).copy()
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(self.M)
        self.depthwise = group > 1 and self.Cg == 1
        self.multiplier = self.Mg
        cdef int Kg = self.Cg * self.KH * self.KW
        cdef float[::1] dst
        cdef const float* src
        if self.depthwise:
            self.w_direct = w.reshape(self.M, self.KH * self.KW)
            return
        self.winograd = winograd
        if winograd:
            if winograd not in (2, 4):
                raise ValueError(f"Winograd output tile must be 2 or 4, got {winograd}")
            if not winograd_applies(self.KH, self.KW, strides, dilations, group):
                raise ValueError("Winograd needs a 3x3 kernel, stride 1, dilation 1, group 1")
            self.w_winograd = np.empty(
                max(1, winograd_weights_size(self.M, self.C, winograd)), np.float32)
            dst = self.w_winograd
            if winograd_pack_weights(self.M, self.C, winograd,
                                     <const float*>cnp.PyArray_DATA(w), &dst[0]) != CY_OK:
                raise MemoryError("Conv: could not transform the Winograd weights")
            self.packed_mr = gemm_mr()
            return
        self.group_size = sgemm_packed_a_size(self.Mg, Kg)
        self.w_packed = np.empty(max(1, self.group_size * group), np.float32)
        dst = self.w_packed
        src = <const float*>cnp.PyArray_DATA(w)
        for g in range(group):
            sgemm_pack_a(self.Mg, Kg, src + g * self.Mg * Kg, Kg, 1, &dst[g * self.group_size])
        self.packed_mr = gemm_mr()

    def output_hw(self, Py_ssize_t H, Py_ssize_t W, pads):
        """``(OH, OW)`` for an ``H x W`` input and pads ``(top, left, bottom, right)``."""
        pt, pl, pb, pr = pads
        OH = _floordiv(H + pt + pb - (self.KH - 1) * self.dh - 1, self.sh) + 1
        OW = _floordiv(W + pl + pr - (self.KW - 1) * self.dw - 1, self.sw) + 1
        return OH, OW

    def run(self, x, pads, int n_threads=1, z=None, bint activate=True, pre=None):
        """y = act(conv(x) + bias + z); x float32 (N, C, H, W); pads (top, left, bottom, right).

        ``z``: optional float32 (N, M, OH, OW), added before the activation.
        ``activate=False`` leaves the activation out (the caller applies it after adding a
        residual of another shape under broadcasting).
        ``pre``: optional (scale, shift), float32 (C,) each: the conv reads
        relu(scale * x + shift) per channel instead of x, applied while the GEMM packs its
        input (``preactivation_applies``: 1x1, stride 1, unpadded, one group).

        Returns
        -------
        y : float32 (N, M, OH, OW)
        """
        x = _check_x(x, self.C, "Conv")
        cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
        OH, OW = self._checked_output_hw(H, W, pads)
        y = np.empty((N, self.M, OH, OW), np.float32)
        if z is not None:
            if not isinstance(z, np.ndarray) or z.dtype != np.float32 or z.shape != y.shape:
                raise ValueError(f"Conv: z must be float32 of shape {y.shape}")
            z = np.ascontiguousarray(z)
        pre = self._checked_pre(pre, pads)
        if N == 0 or self.M == 0:
            return y
        cdef ConvCall c
        self._prepare(&c, N, H, W, pads, activate, z is not None, pre is not None, n_threads)
        # scratch for this call only (a native plan keeps its own, see native())
        scratch = _scratch_for(&c)
        c.pre_scale = <const float*>cnp.PyArray_DATA(pre[0]) if pre is not None else NULL
        c.pre_shift = <const float*>cnp.PyArray_DATA(pre[1]) if pre is not None else NULL
        cdef const float* xs = <const float*>cnp.PyArray_DATA(x)
        cdef float* ys = <float*>cnp.PyArray_DATA(y)
        cdef const float* zs = <const float*>cnp.PyArray_DATA(z) if z is not None else NULL
        cdef int err
        with nogil:
            err = _conv_exec(&c, xs, ys, zs)
        _raise_for(err, c.path)
        return y

    def native(self, shape, pads, bint has_z, int n_threads, pre=None):
        """This conv prepared for inputs of ``shape`` (N, C, H, W) as a native step
        (kernels/native.pyx): inputs x (and z when ``has_z``), output y."""
        if len(shape) != 4 or shape[1] != self.C:
            raise ValueError(f"Conv: expected (N, {self.C}, H, W), got {shape}")
        N, _, H, W = shape
        OH, OW = self._checked_output_hw(H, W, pads)
        pre = self._checked_pre(pre, pads)
        cdef ConvNative op = ConvNative.__new__(ConvNative)
        self._prepare(&op.c, N, H, W, pads, True, has_z, pre is not None, n_threads)
        op.plan, op.pre, op.c.has_z = self, pre, has_z
        op.c.pre_scale = <const float*>cnp.PyArray_DATA(pre[0]) if pre is not None else NULL
        op.c.pre_shift = <const float*>cnp.PyArray_DATA(pre[1]) if pre is not None else NULL
        op.scratch = _scratch_for(&op.c)
        op.fn, op.params = _conv_native_fn, <void*>&op.c
        op.out_shapes = ((N, self.M, OH, OW),)
        op.what = f"Conv {tuple(shape)} -> {(N, self.M, OH, OW)}"
        return op

    def _checked_output_hw(self, Py_ssize_t H, Py_ssize_t W, pads):
        OH, OW = self.output_hw(H, W, pads)
        if OH < 1 or OW < 1:
            raise ValueError(f"Conv: input {H}x{W} is smaller than the dilated kernel")
        if not self.depthwise and self.packed_mr != gemm_mr():
            raise RuntimeError("Conv: GEMM micro-kernel changed since the weights were packed")
        return OH, OW

    def _checked_pre(self, pre, pads):
        if pre is None:
            return None
        if not self.preactivation_applies(pads):
            raise ValueError("Conv: a pre-activation needs a 1x1, stride-1, unpadded conv "
                             "of one group")
        return tuple(np.ascontiguousarray(v, np.float32).reshape(self.C) for v in pre)

    def preactivation_applies(self, pads=(0, 0, 0, 0)):
        """Whether ``run(..., pre=...)`` can apply a per-channel pre-activation: the conv
        must read x itself (1x1, stride 1, no padding, one group, GEMM path)."""
        return (self.KH == 1 and self.KW == 1 and self.sh == 1 and self.sw == 1
                and self.group == 1 and not self.winograd and tuple(pads) == (0, 0, 0, 0))

    cdef int _prepare(self, ConvCall* c, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, pads,
                      bint activate, bint has_z, bint has_pre, int n_threads) except -1:
        # Everything a call of this shape decides before touching data: the path, its
        # thread split and the scratch it needs (sizes; _Scratch allocates, _bind_scratch
        # fills). Data pointers and the residual come with each call (_conv_exec).
        cdef Geometry geo = _geometry(self.KH, self.KW, self.sh, self.sw, self.dh, self.dw,
                                      pads)
        memset(c, 0, sizeof(ConvCall))
        c.N, c.C, c.M, c.H, c.W, c.geo = N, self.C, self.M, H, W, geo
        c.OH = (H + geo.pt + geo.pb - (geo.KH - 1) * geo.dh - 1) // geo.sh + 1
        c.OW = (W + geo.pl + geo.pr - (geo.KW - 1) * geo.dw - 1) // geo.sw + 1
        c.n_threads = n_threads
        c.ep.bias_row = <const float*>cnp.PyArray_DATA(self.bias) if self.bias is not None \
            else NULL
        c.ep.bias_col = NULL
        c.ep.act = self.act if activate else CY_ACT_NONE
        c.ep.act_alpha = self.act_alpha
        c.ep.act_beta = self.act_beta
        c.ep.slope_row = <const float*>cnp.PyArray_DATA(self.slopes) \
            if self.slopes is not None else NULL
        c.ep.residual = NULL
        c.ep.ldr = c.OH * c.OW
        if self.depthwise:
            self._prepare_depthwise(c, has_z)
        elif self.winograd:
            c.path = PATH_WINOGRAD
            c.w = <const float*>cnp.PyArray_DATA(self.w_winograd)
            c.wino_tile = self.winograd
        elif not has_pre and self._offsets_pay(geo, H, W):
            self._prepare_offsets(c)
        else:
            self._prepare_gemm(c, has_pre)
        return 0

    cdef void _prepare_depthwise(self, ConvCall* c, bint has_z):
        cdef Geometry geo = c.geo
        cdef DwJob* job = &c.dw
        c.path = PATH_DEPTHWISE
        # 3x3 / 5x5, strides 1 and 2 (MobileNet's, PaddleOCR's): the vector kernel of conv_dw.h
        cdef bint vec = (geo.KH == geo.KW and geo.dh == 1 and geo.dw == 1
                         and cy_dw_supported(geo.KH, geo.sh, geo.sw) != 0)
        # ReLU and Clip (ReLU6) are applied in the kernel's registers (the vector kernel) or
        # its rows (ReLU, scalar kernel); anything else (residual, other activations) runs
        # as an epilogue pass over the plane while it is in L1.
        cdef bint plain = not has_z
        cdef int act = c.ep.act
        job.clamp = vec and plain and (act == CY_ACT_RELU or act == CY_ACT_CLIP)
        job.lo = c.ep.act_alpha if act == CY_ACT_CLIP else 0.0
        job.hi = c.ep.act_beta if act == CY_ACT_CLIP else INFINITY
        job.relu = not vec and plain and act == CY_ACT_RELU
        job.extra = not job.clamp and not job.relu and (not plain or act != CY_ACT_NONE)
        job.wp = <const float*>cnp.PyArray_DATA(self.w_direct)
        job.bp = <const float*>cnp.PyArray_DATA(self.bias) if self.bias is not None else NULL
        job.H, job.W, job.OH, job.OW, job.M, job.C = c.H, c.W, c.OH, c.OW, c.M, c.C
        job.mult, job.KK, job.geo = self.multiplier, self.KH * self.KW, geo
        job.vec = vec
        # Work in multiply-add equivalents: a plane costs ~500 more in setup (masks, tile
        # bookkeeping) and a strided one twice per tap (its rows are deinterleaved). Counted
        # by taps alone, MobileNetV2's 576-channel 14x14 -> 7x7 stride-2 layer stayed on one
        # thread: 57 us there, 31 us on two.
        cdef double work = <double>c.N * c.M * (c.OH * c.OW * job.KK
                                                 * (2 if geo.sh * geo.sw > 1 else 1) + 512)
        c.nt = _threads(work, c.N * c.M, c.n_threads)
        # Small stride-1 planes of one channel each (MobileNetV2's 14x14 and 7x7 layers):
        # 8 channels in the vector lanes (conv_dw.h's cy_dw_c8), bitwise the plane kernel's
        # results. In process, ReLU6, step times: 960 ch @ 7x7 104 -> 77 us on one thread,
        # 61 -> 40 on two; 576 ch @ 14x14 212 -> 150 us (one); MobileNetV2 b1, 2 threads:
        # those layers -30%, node sum 8.85 -> 8.42 ms, whole runs 9.38 -> 8.92 ms.
        job.c8 = (vec and self.multiplier == 1 and not job.extra
                  and cy_dw_c8_supported(geo.KH, geo.sh, geo.sw, <int>c.OH, <int>c.OW) != 0)
        job.blocks = (c.M + 7) // 8
        # several planes per piece: a 7x7 plane alone is too little to claim
        job.planes = c.N * (job.blocks if job.c8 else c.M)
        job.per_piece = units_per_task(job.planes,
                                       c.OH * c.OW * job.KK * (8 if job.c8 else 1), c.nt)
        c.pieces = (job.planes + job.per_piece - 1) // job.per_piece

    cdef void _prepare_offsets(self, ConvCall* c):
        # A stride-1 conv as a GEMM over its zero-padded input read in place: row
        # k = (c, kh, kw) of the im2col matrix, over the padded-width grid of output positions
        # q = oh*Wp + ow (ow < Wp), is the padded image itself from c*Hp*Wp + kh*dh*Wp + kw*dw
        # on. The micro-kernel reads those rows directly (gemm.h's row_off), so nothing is
        # packed; the grid's Wp - OW extra columns per row are computed and dropped as the
        # GEMM stores into y (grid_store) or when the grid is copied into y. A strided conv
        # reads x split by row and column phase instead (gemm/im2col.h): each tap is then a
        # stride-1 read of one phase plane, Hq x Wq = the padded plane / (sh, sw), and the
        # grid is OH x Wq.
        cdef Geometry geo = c.geo
        cdef Py_ssize_t Hp = c.H + geo.pt + geo.pb, P = c.OH * c.OW
        cdef Py_ssize_t nr = gemm_nr(), per_image, per_band
        c.path = PATH_OFFSETS
        c.w = <const float*>cnp.PyArray_DATA(self.w_packed)
        c.phased = geo.sh > 1 or geo.sw > 1
        c.Wp = (c.W + geo.pl + geo.pr + geo.sw - 1) // geo.sw
        c.sj.Hq = (Hp + geo.sh - 1) // geo.sh
        c.plane = geo.sh * geo.sw * c.sj.Hq * c.Wp
        c.Q = c.OH * c.Wp
        c.K = c.C * self.KH * self.KW
        # the images one after another; the last grid row's panel of the last image reads up
        # to NR + (KW-1)*dw floats past its plane (those columns are dropped)
        c.xpad_floats = c.N * c.C * c.plane + 2 * nr + self.KW * geo.dw + c.Wp
        c.off_count = c.K
        c.in_place = c.Wp == c.OW          # the grid is y itself (a KHx1 kernel, unpadded)
        # No pads (the CIFAR CNN's 32 -> 32 at 32x32 and 64 -> 64 at 15x15): x is read where
        # it lies instead of copied. The last grid row's dropped columns read up to
        # (KW - 1) * dw floats past the last plane (and the kernel a vector more), so x is
        # copied after all when those reads could leave its last page (_offsets_exec). The
        # copy, split by channel planes, had each thread's bands read rows the other thread
        # wrote. In process, 1 / 2 threads: CIFAR CNN 0.967 / 0.994 (near vCPUs).
        c.unpadded = not c.phased and geo.pt == 0 and geo.pl == 0 and geo.pb == 0 and geo.pr == 0
        c.past_end = (self.KW - 1) * geo.dw
        c.nt = c.n_threads
        if _offsets_work(c.M, c.K, c.H, c.W, geo) * c.N <= TINY_WORK:
            c.nt = 1                            # see _offsets_pay
        # About 4 bands per thread (slack for a core busy with another process), each whole
        # NR panels of the grid and at least 4 of them; one band per image on one thread.
        # Bands cut at panel boundaries, not at grid rows: bands of whole rows (4 rows of 29
        # columns at 27x27) ended in a part-filled panel each, 8 panels for 116 columns,
        # which cost 2 threads 14% more panels than one. In process, 2 threads, panel bands
        # vs row bands: 32 -> 128 at 27x27 0.95x, 32 -> 32 at 32x32 0.93x, CIFAR CNN 0.975x,
        # others (16 -> 64 at 55x55, DenseNet's 128 -> 32) within 1-3% either way.
        # The panels are dealt evenly (bands differ by one panel at most): cut in equal bands
        # with the remainder last, SqueezeNet's 55x55 expands (98 panels) ran 7 bands of 13
        # and one of 7, so one thread ran 52 panels and the other waited through 6 of them.
        c.panels = (c.Q + nr - 1) // nr
        c.bands = 1
        if c.nt > 1:
            per_image = (4 * c.nt + c.N - 1) // c.N
            per_band = max(4, (c.panels + per_image - 1) // per_image)
            c.bands = (c.panels + per_band - 1) // per_band
        c.band_cols = min((c.panels + c.bands - 1) // c.bands * nr, c.Q)
        # Too few bands for ~4 pieces per thread (small planes: CIFAR's 13x13, SqueezeNet's
        # 13x13 have 3): split each band's output channels too, whole MR-row tiles apiece,
        # so each piece is still one thread's GEMM copied into y at once. Tiles and the order
        # of every sum are unchanged, so results are bitwise those of one band, one range.
        # Before, such layers ran the whole image as one GEMM splitting M, then copied the
        # grid in a second parallel region. (A conv of a few channels on one band gets
        # fewer pieces than threads: it is a few microseconds of work.)
        cdef Py_ssize_t mtiles = (c.M + gemm_mr() - 1) // gemm_mr()
        c.msplit = 1
        if c.nt > 1 and c.N * c.bands < 4 * c.nt:
            c.msplit = min(mtiles, (4 * c.nt + c.N * c.bands - 1) // (c.N * c.bands))
        # The GEMM stores the kept columns of the grid straight into y where the micro-kernel
        # can (AVX-512: vcompressps); otherwise each piece computes its grid band into a
        # buffer and copies it into y. Copying had cost 4% of a 3x3 conv's time on one
        # thread and 16% of SqueezeNet's first conv (3 -> 64 s2, 3 MiB of output).
        c.grid_store = not c.in_place and gemm_has_grid_store()
        c.grid_floats = 0 if c.in_place or c.grid_store else c.nt * c.M * c.band_cols
        c.pad.H, c.pad.W, c.pad.Wp, c.pad.plane = c.H, c.W, c.Wp, c.plane
        c.pad.pt, c.pad.pl, c.pad.planes = geo.pt, geo.pl, c.N * c.C
        c.pad_nt = c.n_threads if c.N * c.C * c.H * c.W >= PAD_PARALLEL_MIN else 1
        _copy_tasks(c.pad.planes, c.H * c.W, c.pad_nt, &c.pad.tasks, &c.pad.chunks)
        c.sj.H, c.sj.W, c.sj.pt, c.sj.pl, c.sj.sh, c.sj.sw = c.H, c.W, geo.pt, geo.pl, geo.sh, geo.sw
        c.sj.Wq, c.sj.planes, c.sj.tasks, c.sj.chunks = c.Wp, c.N * c.C, c.pad.tasks, c.pad.chunks

    cdef void _prepare_gemm(self, ConvCall* c, bint has_pre):
        # One parallel region for the whole op: pieces are (image, group, column range),
        # dealt dynamically, each thread running a one-thread GEMM that packs its own pixels'
        # im2col panels (no barrier between images or groups). When there are too few pieces
        # to feed every thread (one image of a 7x7 or 14x14 layer), the items run one after
        # the other and each GEMM splits its rows across the threads instead.
        cdef Geometry geo = c.geo
        cdef ConvJob* job = &c.job
        cdef Py_ssize_t P = c.OH * c.OW, sw = geo.sw, Hq, Wq
        c.path = PATH_GEMM
        job.w = <const float*>cnp.PyArray_DATA(self.w_packed)
        job.C, job.M, job.H, job.W = c.C, c.M, c.H, c.W
        job.OW, job.P = c.OW, P
        job.group, job.Cg, job.Mg = self.group, self.Cg, self.Mg
        job.Kg = self.Cg * self.KH * self.KW
        job.group_size = self.group_size
        job.geo = geo
        job.direct = (self.KH == 1 and self.KW == 1 and geo.sh == 1 and geo.sw == 1
                      and geo.pt == 0 and geo.pl == 0 and geo.pb == 0 and geo.pr == 0)
        # Column stride >= 2: x zero-padded and split by column phase, (N, C, sw, Hq, Wq),
        # so each tap is a contiguous run for the im2col packer, copied in whole vectors
        # (gemm/im2col.c pack_phases) instead of strided gathers with per-run edge tests
        # (3 cycles a float on 14-wide rows); the split costs one pass over x. Measured
        # against the direct packer (in-process A/B, 1 and 2 threads): AlexNet's 11x11 s4
        # 0.77-0.79x, ResNet's 7x7 s2 0.90x, its 3x3 s2 layers 0.82-1.01x; a 3x3 s2 conv on
        # 3 channels (MobileNetV2's first) 1.16x: there the split's pass over the input
        # outweighs the cheap packing of 27 rows.
        if (not job.direct and not has_pre and geo.sw >= 2 and self.KH * self.KW > 1
                and (self.KW >= 5 or self.Cg >= 16)):
            Hq = c.H + geo.pt + geo.pb
            Wq = (c.W + geo.pl + geo.pr + sw - 1) // sw
            # + 16: the packer copies runs in whole 16-float chunks (gemm/im2col.c)
            c.xq_floats = c.N * c.C * sw * Hq * Wq + 16
            c.sj.H, c.sj.W, c.sj.pt, c.sj.pl, c.sj.sh, c.sj.sw = c.H, c.W, geo.pt, geo.pl, 1, sw
            c.sj.Hq, c.sj.Wq = Hq, Wq
            c.sj.planes = c.N * c.C
            c.split_nt = c.n_threads if c.N * c.C * c.H * c.W >= 65536 else 1
            _copy_tasks(c.sj.planes, sw * Hq * Wq, c.split_nt, &c.sj.tasks, &c.sj.chunks)
            job.phases, job.Hq, job.Wq = <int>sw, <int>Hq, <int>Wq
        cdef Py_ssize_t nr = gemm_nr(), items = c.N * self.group, per = 1
        # One image of one group: the GEMM splits it (gemm.c, cy_sgemm_ex), by rows or
        # columns as its cost model finds cheaper, B packed once for all threads when the
        # rows are split. Column pieces here made every thread stream all the weights and
        # cut small planes badly: SqueezeNet's 1000-class 1x1 conv at 13x13 (169 columns)
        # ran 2 pieces of 85 columns (6 panels, the last a third full), DenseNet's 14x14
        # 1x1 convs 3 pieces on 2 threads. In process, 2 threads, per-node sums: SqueezeNet
        # 8.33 -> 7.70 ms (that conv 1.82 -> 1.64, the 16 -> 64 1x1 convs at 55x55 -25%),
        # DenseNet-121 63.2 -> 58.0. Whole runs, 100 ms idle before each 5-run block, 16
        # blocks (ratios of three runs where measured twice): MobileNetV2 0.74 / 0.97 / 0.94,
        # GoogLeNet 0.87, ResNet-18 1.03 / 0.98, ResNet-50 0.99, SqueezeNet 1.00 (back to
        # back without the idle: 0.94 / 0.97). Bitwise the same: the GEMM's pieces are
        # whole tiles.
        if c.n_threads > 1 and items > 1:
            # about 4 pieces per thread (slack for a core busy with another process), none
            # narrower than 4 NR panels
            per = (4 * c.n_threads + items - 1) // items
            if per > P // (4 * nr):
                per = P // (4 * nr)
            if per < 1:
                per = 1
        c.items, c.per, c.pieces = items, per, items * per
        c.nt = c.n_threads if c.pieces >= c.n_threads and c.n_threads > 1 else 1

    def uses_row_offsets(self, Py_ssize_t H, Py_ssize_t W, pads):
        """Whether an ``H x W`` input with ``pads`` runs the row-offset path (_offsets_exec)."""
        if self.depthwise or self.winograd:
            return False
        return self._offsets_pay(_geometry(self.KH, self.KW, self.sh, self.sw, self.dh,
                                           self.dw, pads), H, W)

    cdef bint _offsets_pay(self, Geometry geo, Py_ssize_t H, Py_ssize_t W):
        cdef Py_ssize_t Hp = H + geo.pt + geo.pb, Wp = W + geo.pl + geo.pr
        if not OFFSETS_ENABLED or self.KH * self.KW == 1 or self.group != 1:
            return False
        if offsets_pay(self.C, self.M, geo.sh, geo.sw, Hp, Wp):
            return True
        # Few input channels: only tiny convs (LeNet's), which then run on one thread
        # (_prepare_offsets): packing im2col cost more than their multiply-adds. LeNet-5's
        # 1->6 5x5 on 32x32: 11-16 -> 8 us; 6->16 on 14x14: 14-23 -> 9 us; 3->32 3x3 on
        # 30x30 (too big for this) ran 19 us as im2col on two threads, 28-32 us here.
        return (offsets_pay(8, self.M, geo.sh, geo.sw, Hp, Wp)
                and _offsets_work(self.M, self.C * self.KH * self.KW, H, W, geo) <= TINY_WORK)


cdef void _split_task(void* ctx, long t, int tid) noexcept nogil:
    cdef SplitJob* j = <SplitJob*>ctx
    cdef Py_ssize_t p, p0, p1, u0, u1
    _copy_task_range(t, j.planes, j.tasks, j.chunks, j.sh * j.Hq, &p0, &p1, &u0, &u1)
    for p in range(p0, p1):
        phase_split(j.x + p * j.H * j.W, <int>j.H, <int>j.W, <int>j.pt, <int>j.pl, <int>j.sh,
                    <int>j.sw, <int>j.Hq, <int>j.Wq, j.xq + p * j.sh * j.sw * j.Hq * j.Wq,
                    <int>u0, <int>u1)


cdef void _conv_task(void* ctx, long r, int tid) noexcept nogil:
    cdef PieceJob* pj = <PieceJob*>ctx
    cdef const ConvJob* job = pj.job
    cdef Py_ssize_t per = pj.per, it = r // per, k = r - it * per, P = job.P
    cdef Py_ssize_t q0 = (P * k // per) // pj.nr * pj.nr
    cdef Py_ssize_t q1 = P if k == per - 1 else (P * (k + 1) // per) // pj.nr * pj.nr
    if _conv_piece(job, it // job.group, it % job.group, q0, q1, 1) != CY_OK:
        pj.failed = 1


cdef int _conv_piece(const ConvJob* job, Py_ssize_t n, Py_ssize_t g, Py_ssize_t q0,
                     Py_ssize_t q1, int n_threads) noexcept nogil:
    # y[n, group g, :, q0:q1]; the epilogue's per-channel vectors and residual start at
    # this (image, group)
    cdef cy_epilogue ep = job.ep[0]
    cdef Py_ssize_t Mg = job.Mg, off = (n * job.M + g * Mg) * job.P
    if ep.bias_row != NULL:
        ep.bias_row = ep.bias_row + g * Mg
    if ep.slope_row != NULL:
        ep.slope_row = ep.slope_row + g * Mg
    if ep.residual != NULL:
        ep.residual = ep.residual + off
    if job.phases:
        return _gemm_columns(job.xq + (n * job.C + g * job.Cg) * job.phases * job.Hq * job.Wq,
                             job.y + off, job.w + g * job.group_size, &ep, q0, q1, job.Mg,
                             job.Kg, job.Hq, job.Wq, job.OW, job.P, job.geo, job.direct,
                             job.pre_scale, job.pre_shift, n_threads, job.phases)
    return _gemm_columns(job.x + (n * job.C + g * job.Cg) * job.H * job.W, job.y + off,
                         job.w + g * job.group_size, &ep, q0, q1, job.Mg, job.Kg, job.H,
                         job.W, job.OW, job.P, job.geo, job.direct, job.pre_scale,
                         job.pre_shift, n_threads, 0)


cdef int _gemm_columns(const float* xg, float* yg, const float* wg, const cy_epilogue* ep0,
                       Py_ssize_t q0, Py_ssize_t q1, int Mg, int Kg, Py_ssize_t H, Py_ssize_t W,
                       Py_ssize_t OW, Py_ssize_t P, Geometry geo, bint direct,
                       const float* pre_scale, const float* pre_shift,
                       int n_threads, int phases) noexcept nogil:
    # y_g[:, q0:q1] = act(w_g @ col[:, q0:q1] + bias + z_g[:, q0:q1]) where col is x_g itself
    # (direct: Cg x P) or its im2col matrix, which the GEMM packs straight from the image
    # panel by panel (gemm/im2col.h) and is never stored. ep0: the group's epilogue,
    # residual z_g with row stride P. Returns CY_OK or the GEMM's error code.
    cdef cy_epilogue ep = ep0[0]
    cdef cy_operand B
    cdef cy_im2col im
    cdef cy_preact pa
    if ep0.residual != NULL:
        ep.residual = ep0.residual + q0
    if direct and pre_scale != NULL:
        # pre-activation: the packer reads x and writes relu(scale * x + shift)
        pa.x, pa.scale, pa.shift, pa.ld, pa.p0 = xg, pre_scale, pre_shift, H * W, <int>q0
        B = packer_operand(preact_packer(), &pa)
    elif direct:
        B = strided_operand(xg + q0, H * W, 1)
    else:
        im.x = xg
        im.H, im.W, im.OW, im.p0 = <int>H, <int>W, <int>OW, <int>q0
        im.KH, im.KW, im.sh, im.sw = geo.KH, geo.KW, geo.sh, geo.sw
        im.dh, im.dw, im.pt, im.pl = geo.dh, geo.dw, geo.pt, geo.pl
        im.phases = phases
        if phases:
            im.pt = im.pl = 0          # x_g is the padded phase split: H x W = Hq x Wq
        B = packer_operand(im2col_packer(), &im)
    return sgemm_ex(Mg, <int>(q1 - q0), Kg, 1.0, packed_operand(wg), B, 0, yg + q0, P, &ep,
                    n_threads)


# ---- transposed conv ---------------------------------------------------------------------

cdef void _col2im_channel(const float* colm, float* yplane, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t p0, Py_ssize_t pc,
                          Py_ssize_t ld, Geometry geo) noexcept nogil:
    # yplane[ih*sh - pt + kh*dh, iw*sw - pl + kw*dw] += colm[(kh*KW + kw)*ld + p - p0]
    # for input pixels p = ih*W + iw in [p0, p0 + pc)
    cdef Py_ssize_t p, end = p0 + pc, ih, iw0, iw1, oh, lo, hi, iw, off
    cdef int kh, kw
    cdef const float* src
    cdef float* yr
    for kh in range(geo.KH):
        for kw in range(geo.KW):
            src = colm + (kh * geo.KW + kw) * ld - p0
            off = kw * geo.dw - geo.pl                 # ow = iw*sw + off
            # iw in [lo, hi) lands inside 0 <= ow < OW
            lo = -_floordiv(off, geo.sw)
            hi = _floordiv(OW - 1 - off, geo.sw) + 1
            p = p0
            while p < end:
                ih = p // W
                iw0 = p - ih * W
                iw1 = W if end - (p - iw0) >= W else end - (p - iw0)
                oh = ih * geo.sh - geo.pt + kh * geo.dh
                if 0 <= oh < OH:
                    yr = yplane + oh * OW + off
                    for iw in range(lo if lo > iw0 else iw0, hi if hi < iw1 else iw1):
                        yr[iw * geo.sw] += src[ih * W + iw]
                p += iw1 - iw0


cdef struct CtJob:
    # one ConvTranspose call: x (N, C, H, W), y (N, M, OH, OW) prefilled with the bias
    const float* xp
    float* yp
    const float* wp
    Py_ssize_t C, M, H, W, OH, OW, P, KK
    int group, Cg, Mg, Mcol, chunk, n_threads, failed
    size_t group_size
    Geometry geo
    float* col              # Mcol * chunk floats of scratch per thread
    # the chunk in flight when col2im is split across threads
    const float* cur_col
    float* cur_y
    Py_ssize_t cur_p0, cur_pc


cdef void _ct_channel_task(void* ctx, long m, int tid) noexcept nogil:
    cdef CtJob* j = <CtJob*>ctx
    _col2im_channel(j.cur_col + m * j.KK * j.cur_pc, j.cur_y + m * j.OH * j.OW, j.H, j.W,
                    j.OH, j.OW, j.cur_p0, j.cur_pc, j.cur_pc, j.geo)


cdef int _ct_item(CtJob* j, Py_ssize_t it, float* col, int n_threads) noexcept nogil:
    # y[n, group g] += col2im(w_g^T @ x[n, g]), chunk by chunk of input pixels
    cdef Py_ssize_t n = it // j.group, g = it % j.group, p0 = 0, pc, m
    cdef float* yg = j.yp + (n * j.M + g * j.Mg) * j.OH * j.OW
    cdef cy_operand A = packed_operand(j.wp + g * j.group_size), B
    cdef int err = CY_OK, nt
    while p0 < j.P and err == CY_OK:
        pc = j.chunk if j.P - p0 > j.chunk else j.P - p0
        B = strided_operand(j.xp + (n * j.C + g * j.Cg) * j.P + p0, j.P, 1)
        err = sgemm_ex(j.Mcol, <int>pc, j.Cg, 1.0, A, B, 0, col, pc, NULL, n_threads)
        # a chunk's scatter-add (~COL_FLOATS elements, strided read-modify-writes) costs
        # about 4 multiply-adds of the direct kernels per element
        nt = _threads(4.0 * j.Mcol * pc, j.Mg, n_threads)
        if nt > 1:
            # each output channel's plane is written by one thread only
            j.cur_col, j.cur_y, j.cur_p0, j.cur_pc = col, yg, p0, pc
            parallel_for(j.Mg, nt, _ct_channel_task, j)
        else:
            for m in range(j.Mg):
                _col2im_channel(col + m * j.KK * pc, yg + m * j.OH * j.OW, j.H, j.W, j.OH,
                                j.OW, p0, pc, pc, j.geo)
        p0 += pc
    return err


cdef void _ct_item_task(void* ctx, long it, int tid) noexcept nogil:
    cdef CtJob* j = <CtJob*>ctx
    if _ct_item(j, it, j.col + <Py_ssize_t>tid * j.Mcol * j.chunk, 1) != CY_OK:
        j.failed = 1


cdef class ConvTransposePlan:
    """A 2-D transposed convolution (NCHW, float32) with W^T packed once per group.

    Parameters
    ----------
    w : float32 (C, M/group, KH, KW)
    bias : float32 (M,) or None
    strides, dilations : (int, int)
    group : int
    """
    cdef readonly int C, M, group, Cg, Mg, KH, KW, sh, sw, dh, dw
    cdef object w_packed
    cdef object bias
    cdef int packed_mr
    cdef size_t group_size

    def __init__(self, w, bias, strides, dilations, int group):
        cdef Py_ssize_t g
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.ndim != 4:
            raise ValueError(f"ConvTranspose weights must be 4-D, got shape {w.shape}")
        self.C, self.Mg, self.KH, self.KW = w.shape
        if group < 1 or self.C % group:
            raise ValueError(f"group={group} must divide the {self.C} input channels")
        self.group = group
        self.Cg, self.M = self.C // group, self.Mg * group
        self.sh, self.sw = strides
        self.dh, self.dw = dilations
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(self.M)
        # A_g[(m, kh, kw), c] = w[g*Cg + c, m, kh, kw]: w_g^T through strides (rs 1, cs Mcol)
        cdef int Mcol = self.Mg * self.KH * self.KW
        self.group_size = sgemm_packed_a_size(Mcol, self.Cg)
        self.w_packed = np.empty(max(1, self.group_size * group), np.float32)
        cdef float[::1] dst = self.w_packed
        cdef const float* src = <const float*>cnp.PyArray_DATA(w)
        for g in range(group):
            sgemm_pack_a(Mcol, self.Cg, src + g * self.Cg * Mcol, 1, Mcol,
                         &dst[g * self.group_size])
        self.packed_mr = gemm_mr()

    def run(self, x, pads, output_hw, int n_threads=1):
        """y = conv_transpose(x); x float32 (N, C, H, W).

        ``pads`` (top, left, bottom, right) may be negative (output_shape larger than the
        natural size); ``output_hw`` = (OH, OW) is the output size they imply.

        Returns
        -------
        y : float32 (N, M, OH, OW)
        """
        x = _check_x(x, self.C, "ConvTranspose")
        if self.packed_mr != gemm_mr():
            raise RuntimeError("ConvTranspose: GEMM micro-kernel changed since packing")
        cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3], P = H * W
        cdef Py_ssize_t OH = output_hw[0], OW = output_hw[1]
        cdef Geometry geo = _geometry(self.KH, self.KW, self.sh, self.sw, self.dh, self.dw,
                                      pads)
        if self.bias is None:
            y = np.zeros((N, self.M, OH, OW), np.float32)
        else:
            y = np.empty((N, self.M, OH, OW), np.float32)
            y[...] = self.bias.reshape(1, self.M, 1, 1)
        if N == 0 or self.M == 0 or P == 0 or OH * OW == 0:
            return y
        # Items (image, group) in parallel, each with its own col scratch, when there are
        # enough of them; otherwise one item at a time, its GEMM splitting rows and its
        # col2im splitting output channels across the threads.
        cdef CtJob job
        cdef Py_ssize_t items = N * self.group, it, p0, pc
        cdef int nt = n_threads if items >= n_threads > 1 else 1
        job.xp = <const float*>cnp.PyArray_DATA(x)
        job.yp = <float*>cnp.PyArray_DATA(y)
        job.wp = <const float*>cnp.PyArray_DATA(self.w_packed)
        job.C, job.M, job.H, job.W, job.OH, job.OW, job.P = self.C, self.M, H, W, OH, OW, P
        job.group, job.Cg, job.Mg = self.group, self.Cg, self.Mg
        job.Mcol = self.Mg * self.KH * self.KW
        job.KK = self.KH * self.KW
        job.group_size = self.group_size
        job.geo = geo
        job.chunk = _chunk(job.Mcol, P)
        job.failed = 0
        col_arr = np.empty(max(1, <Py_ssize_t>job.Mcol * job.chunk * nt), np.float32)
        job.col = <float*>cnp.PyArray_DATA(col_arr)
        cdef int err = CY_OK
        with nogil:
            if nt > 1:
                job.n_threads = 1
                parallel_for(items, nt, _ct_item_task, &job)
                err = CY_ENOMEM if job.failed else CY_OK
            else:
                job.n_threads = n_threads
                for it in range(items):
                    err = _ct_item(&job, it, job.col, n_threads)
                    if err != CY_OK:
                        break
        if err == CY_ENOMEM:
            raise MemoryError("ConvTranspose: could not allocate GEMM packing buffers")
        if err != CY_OK:
            raise RuntimeError(f"ConvTranspose: GEMM failed ({err})")
        return y


include "conv_block.pxi"
