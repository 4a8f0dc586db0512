# Native steps: an op prepared for one input shape as a C function and its parameters, so a
# session can run a whole graph as a C loop without the GIL (native.pyx's NativePlan).

# Run one prepared op: ins[i] / outs[j] are the op's float32 C-contiguous buffers, in the
# shapes it was prepared for. Returns 0 (CY_OK) or a CY_E* code (gemm.h).
ctypedef int (*native_fn)(void* params, const float** ins, float** outs) noexcept nogil


cdef class NativeOp:
    cdef native_fn fn
    cdef void* params               # points into the subclass's own fields
    cdef public tuple out_shapes    # shape of each output it writes
    cdef public str what            # for error messages: "Conv 1x64x56x56 -> ..."
    # an input the op may write its output over (element-wise ops: each output element is
    # computed from the input elements at its own index only), or -1
    cdef public int inplace_input
