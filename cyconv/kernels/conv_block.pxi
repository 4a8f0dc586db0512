# Included by conv.pyx: MobileNet's inverted residual block as one native step.
#
#   x (N, Cin, H, W) --1x1 expand, act--> e (N, Cexp, H, W) --depthwise kxk, act-->
#   d (N, Cexp, OH, OW) --1x1 project (+ z), act--> y (N, Cout, OH, OW)
#
# Run as three steps, e and d make a round trip through memory: MobileNetV2's second block
# writes and rereads 4.8 MB of e at 112x112 and 1.2 MB of d, its 56x56 blocks 1.8 MB of e
# each, on a machine whose 512 KiB L2 holds neither. ONNX Runtime keeps them in its NCHWc
# layout and loses less to it; here those layers measured up to 2x their time alone.
#
# Fused, each thread walks bands of output rows of one image. For a strip of S output rows
# it expands only the input rows the depthwise taps of that strip read (a 1x1 conv of a row
# range is a GEMM over those columns), keeps the KH - sh rows the next strip shares (moved
# to the front of its buffer, not recomputed), runs the depthwise kernel over the strip and
# projects the strip's S*OW columns straight into y, the residual added in the epilogue.
# e and d live in the thread's strip buffers, sized to stay in L2 beside the weights.
#
# Every output element is the same sum in the same order as the three steps compute it (the
# GEMMs' sums run over K in the same k-blocks whatever the columns, the depthwise kernel's
# over its taps), so the results are bitwise the unfused ones, whatever the thread count.
#
# The block without an expand (MobileNetV2's first: depthwise then project) fuses the same
# way, the depthwise reading x in place.

cdef enum:
    # floats of one thread's strip buffers (e rows + d rows): 256 KiB, half the L2 of the
    # machines measured, the rest for the GEMMs' packed panels and the weights (128 KiB
    # and 512 KiB measured the same, within the noise)
    BLOCK_STRIP_FLOATS = 65536
    # the smallest depthwise input plane fused: 28x28. MobileNetV2, 2 threads, in process,
    # against 56x56: batch 1 0.97-0.98x, batch 8 0.95-0.97x; 14x14 too was 3-10% slower
    # than 28x28 (those intermediates stay in L2 between the steps anyway, and the GEMMs
    # lose more to the strips than the copies they save)
    FUSE_MIN_PLANE = 784


cdef struct BlockCall:
    const ConvCall* expand      # NULL: the block has none (the depthwise reads x)
    const ConvCall* dw
    const ConvCall* project
    Py_ssize_t N, Cin, Cexp, Cout, H, W, OH, OW
    Py_ssize_t S                # output rows per strip
    Py_ssize_t Er               # rows of e a strip buffer holds: (S - 1) * sh + KH
    Py_ssize_t ranges, per      # row ranges per image, output rows per range
    Py_ssize_t e_floats, d_floats   # per thread
    const ptrdiff_t* d_off      # row k of d at k * S * OW: the project reads d in place
    float* scratch              # nt * (e_floats + d_floats)
    int nt


cdef struct BlockJob:
    const BlockCall* b
    const float* x
    const float* z
    float* y
    int failed


cdef class BlockNative(NativeOp):
    """An inverted residual block (1x1 expand, depthwise, 1x1 project) as one native step:
    inputs x (and z, the project's residual), output y. Keeps its three convs alive."""
    cdef BlockCall b
    cdef object convs, scratch, d_off


cdef int _block_native_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef BlockCall* b = <BlockCall*>params
    cdef BlockJob j
    j.b, j.x, j.y, j.failed = b, ins[0], outs[0], 0
    j.z = ins[1] if b.project.has_z else NULL
    parallel_for(b.N * b.ranges, b.nt, _block_task, &j)
    return CY_ENOMEM if j.failed else CY_OK


cdef void _block_task(void* ctx, long t, int tid) noexcept nogil:
    # output rows [o_a, o_b) of image n, strip by strip
    cdef BlockJob* j = <BlockJob*>ctx
    cdef const BlockCall* b = j.b
    cdef const ConvCall* dwc = b.dw
    cdef const DwJob* dw = &b.dw.dw
    cdef Geometry geo = dwc.geo
    cdef Py_ssize_t n = t // b.ranges, r = t - n * b.ranges
    cdef Py_ssize_t o_a = r * b.per, o_b = min(o_a + b.per, b.OH)
    cdef Py_ssize_t HW = b.H * b.W, P = b.OH * b.OW, W = b.W, Er = b.Er
    cdef const float* x = j.x + n * b.Cin * HW
    cdef float* e = b.scratch + tid * (b.e_floats + b.d_floats)
    cdef float* d = e + b.e_floats
    cdef Py_ssize_t e0 = 0, e1 = 0        # e holds input rows [e0, e1) from its row 0
    cdef Py_ssize_t o0, o1, r0, r1, ch, src_stride
    cdef const float* src
    cdef cy_epilogue ep
    cdef Geometry strip = geo
    cdef int err
    if o_a >= o_b:
        return
    o0 = o_a
    while o0 < o_b:
        o1 = min(o0 + b.S, o_b)
        # the input rows the strip's taps read, clipped to the image (the rest is padding)
        r0 = max(0, o0 * geo.sh - geo.pt)
        r1 = min(b.H, (o1 - 1) * geo.sh - geo.pt + geo.KH)
        if b.expand != NULL:
            if e0 <= r0 < e1:
                # rows the previous strip expanded: to the front of each channel's rows
                if r0 > e0:
                    for ch in range(b.Cexp):
                        memmove(e + ch * Er * W, e + (ch * Er + r0 - e0) * W,
                                (e1 - r0) * W * sizeof(float))
                e0 = r0
            else:
                e0 = e1 = r0
            if r1 > e1:
                ep = b.expand.ep
                err = sgemm_rows(<int>b.Cexp, 0, <int>b.Cexp, <int>((r1 - e1) * W),
                                 <int>b.Cin, 1.0, packed_operand(b.expand.job.w),
                                 strided_operand(x + e1 * W, HW, 1), 0,
                                 e + (e1 - e0) * W, Er * W, &ep)
                if err != CY_OK:
                    j.failed = 1
                    return
                e1 = r1
            src, src_stride = e, Er * W
        else:
            src, src_stride = x + r0 * W, HW
        # the strip's depthwise rows: local input row 0 is image row r0
        strip.pt = <int>(r0 - (o0 * geo.sh - geo.pt))
        for ch in range(b.Cexp):
            _dw_channel(dw, ch, src + ch * src_stride, r1 - r0, d + ch * b.S * b.OW,
                        o1 - o0, strip)
        ep = b.project.ep
        ep.residual = j.z + n * b.Cout * P + o0 * b.OW if j.z != NULL else NULL
        ep.ldr = P
        err = sgemm_rows(<int>b.Cout, 0, <int>b.Cout, <int>((o1 - o0) * b.OW), <int>b.Cexp,
                         1.0, packed_operand(b.project.job.w),
                         offsets_operand(d, b.d_off) if b.d_off != NULL
                         else strided_operand(d, b.S * b.OW, 1), 0,
                         j.y + n * b.Cout * P + o0 * b.OW, P, &ep)
        if err != CY_OK:
            j.failed = 1
            return
        o0 = o1


cdef bint _pointwise(const ConvCall* c, bint residual_ok):
    # a 1x1 stride-1 unpadded conv of one group on the GEMM path, x read as it is
    return (c.path == PATH_GEMM and c.job.direct and c.job.group == 1
            and c.pre_scale == NULL and (residual_ok or not c.has_z))


def fuse_inverted_residual(expand, depthwise, project):
    """One native step for ``expand`` (a ConvNative 1x1 conv, or None), ``depthwise`` and
    ``project`` (a 1x1 conv, possibly with its residual) prepared for consecutive shapes,
    or None where the three do not form such a block or fusing would not pay (small planes,
    whose intermediates stay in cache anyway, measured no faster).

    The step's inputs are the block's x (and the project's residual), its output y."""
    if not isinstance(depthwise, ConvNative) or not isinstance(project, ConvNative):
        return None
    if expand is not None and not isinstance(expand, ConvNative):
        return None
    cdef ConvNative e_op = expand, d_op = depthwise, p_op = project
    cdef const ConvCall* dwc = &d_op.c
    cdef const ConvCall* pc = &p_op.c
    cdef const ConvCall* ec = &e_op.c if expand is not None else NULL
    if (dwc.path != PATH_DEPTHWISE or dwc.has_z or dwc.dw.extra or dwc.dw.mult != 1
            or dwc.geo.dh != 1 or dwc.geo.dw != 1 or not _pointwise(pc, True)):
        return None
    if ec != NULL and not _pointwise(ec, False):
        return None
    cdef Py_ssize_t Cin = ec.C if ec != NULL else dwc.C
    if (pc.C != dwc.M or pc.N != dwc.N or pc.H != dwc.OH or pc.W != dwc.OW
            or (ec != NULL and (ec.M != dwc.C or ec.N != dwc.N or ec.H != dwc.H
                                or ec.W != dwc.W))):
        return None
    if dwc.H * dwc.W < FUSE_MIN_PLANE:
        return None
    cdef BlockNative op = BlockNative.__new__(BlockNative)
    cdef BlockCall* b = &op.b
    b.expand, b.dw, b.project = ec, dwc, pc
    b.N, b.Cin, b.Cexp, b.Cout = dwc.N, Cin, dwc.M, pc.M
    b.H, b.W, b.OH, b.OW = dwc.H, dwc.W, dwc.OH, dwc.OW
    b.nt = pc.n_threads
    cdef Py_ssize_t sh = dwc.geo.sh, KH = dwc.geo.KH
    # output rows per strip: its e rows (when expanded) and d rows in BLOCK_STRIP_FLOATS
    cdef Py_ssize_t per_row = b.Cexp * ((sh * b.W if ec != NULL else 0) + b.OW)
    b.S = max(1, min(b.OH, (BLOCK_STRIP_FLOATS - (b.Cexp * (KH - sh) * b.W if ec != NULL
                                                  else 0)) // per_row))
    b.Er = (b.S - 1) * sh + KH
    # Pieces are whole images when they go round the threads evenly, else ranges of rows
    # (each re-expands the KH - sh rows above its first): one per thread when the threads
    # share the images evenly, else about 4 pieces per thread.
    if b.N % b.nt == 0:
        b.ranges = 1
    elif b.nt % b.N == 0:
        b.ranges = b.nt // b.N
    else:
        b.ranges = (4 * b.nt + b.N - 1) // b.N
    b.ranges = min(b.ranges, b.OH)
    b.per = (b.OH + b.ranges - 1) // b.ranges
    b.ranges = (b.OH + b.per - 1) // b.per
    b.e_floats = (b.Cexp * b.Er * b.W + 15) // 16 * 16 if ec != NULL else 0
    # + NR: the project's micro-kernel reads d's rows in whole panels (gemm.h's row_off)
    b.d_floats = (b.Cexp * b.S * b.OW + gemm_nr() + 15) // 16 * 16
    b.d_off = NULL
    if gemm_has_row_offsets():
        op.d_off = np.arange(b.Cexp, dtype=np.intp) * (b.S * b.OW)
        b.d_off = <const ptrdiff_t*>cnp.PyArray_DATA(op.d_off)
    op.scratch = np.empty(max(1, b.nt * (b.e_floats + b.d_floats)), np.float32)
    b.scratch = <float*>cnp.PyArray_DATA(op.scratch)
    op.convs = (expand, depthwise, project)
    op.fn, op.params = _block_native_fn, <void*>b
    op.out_shapes = project.out_shapes
    op.what = (f"inverted residual block {(b.N, Cin, b.H, b.W)} -> "
               f"{(b.N, b.Cout, b.OH, b.OW)}")
    return op

