# cython: language_level=3
"""The native executor: a graph prepared for one set of input shapes, run as a C loop.

A session (engine/session.py) asks each step's kernel for a :class:`NativeOp`, the op
prepared for its input shapes: a C function plus parameters (weights, geometry, thread
split and scratch buffers, all decided once). :class:`NativePlan` strings them together with
the memory plan (engine/plan.py): every intermediate value lives at a fixed offset of one
arena, so a run only points the graph inputs at the caller's arrays, allocates the outputs
it returns, and calls the steps one after another without the GIL: no per-node Python,
no allocation, no shape checks (done when the plan was made).

Shape legend: values are float32 C-contiguous tensors; ``vals[v]`` is value v's buffer.
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from cyconv.kernels.gemm._gemm cimport parallel_for

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "gemm/gemm.h" nogil:
    enum:
        CY_OK
        CY_ENOMEM


cdef class NativeOp:
    """An op prepared for one input shape (subclasses fill ``fn`` and ``params``)."""

    def __cinit__(self):
        self.inplace_input = -1

    def __repr__(self):
        return f"NativeOp({self.what})"


# ---- data movement ops that need no kernel module -------------------------------------------

cdef struct ConcatParams:
    # y = concat(x_0 .. x_{n-1}) along an axis: each x_i is `outer` blocks of inner[i] floats,
    # y is `outer` blocks of total floats
    int n
    Py_ssize_t outer, total
    Py_ssize_t* inner


cdef int _concat_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef ConcatParams* p = <ConcatParams*>params
    cdef Py_ssize_t o, at
    cdef int i
    cdef float* y = outs[0]
    for o in range(p.outer):
        at = o * p.total
        for i in range(p.n):
            memcpy(y + at, ins[i] + o * p.inner[i], p.inner[i] * sizeof(float))
            at += p.inner[i]
    return CY_OK


cdef class ConcatOp(NativeOp):
    """Concat of float32 tensors along ``axis``: a copy of contiguous blocks per outer index.

    ``parts``: when the output is its inputs laid end to end (one outer block: axis 0, or
    axis 1 at batch 1), each input's size in floats, in order; else None. A memory plan can
    then place the inputs in the output's buffer and skip the copy (engine/plan.py)."""
    cdef ConcatParams p
    cdef object inner_arr
    cdef readonly object parts

    def __init__(self, shapes, int axis):
        shapes = [tuple(s) for s in shapes]
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        self.out_shapes = (tuple(out),)
        self.inner_arr = np.array([int(np.prod(s[axis:], dtype=np.int64)) for s in shapes],
                                  np.intp)
        self.p.n = len(shapes)
        self.p.outer = int(np.prod(out[:axis], dtype=np.int64))
        self.p.total = int(np.prod(out[axis:], dtype=np.int64))
        self.p.inner = <Py_ssize_t*>cnp.PyArray_DATA(self.inner_arr)
        self.fn, self.params = _concat_fn, &self.p
        self.what = f"Concat axis {axis} -> {tuple(out)}"
        self.parts = tuple(int(v) for v in self.inner_arr) if self.p.outer == 1 else None


TRANSPOSE_MAX_RANK = 6


cdef struct TransposeParams:
    # y = x.transpose(perm), x of `shape`: y walked in order, x's offset stepped by
    # stride[d] (x's stride of the axis that is y's axis d), odometer style
    int rank
    Py_ssize_t dims[6]          # y's shape
    Py_ssize_t stride[6]


cdef int _transpose_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef TransposeParams* p = <TransposeParams*>params
    cdef Py_ssize_t idx[6]
    cdef Py_ssize_t n = 1, i, src = 0, inner = p.dims[p.rank - 1], s = p.stride[p.rank - 1]
    cdef int d
    cdef const float* x = ins[0]
    cdef float* y = outs[0]
    for d in range(p.rank):
        idx[d] = 0
        n *= p.dims[d]
    i = 0
    while i < n:
        for d in range(inner):           # the innermost axis of y: one strided run of x
            y[i + d] = x[src + d * s]
        i += inner
        d = p.rank - 2
        while d >= 0:                    # next index of the outer axes
            idx[d] += 1
            src += p.stride[d]
            if idx[d] < p.dims[d]:
                break
            src -= idx[d] * p.stride[d]
            idx[d] = 0
            d -= 1
    return CY_OK


cdef class TransposeOp(NativeOp):
    """Transpose of a float32 tensor (rank <= 6): one pass over the output."""
    cdef TransposeParams p

    def __init__(self, shape, perm):
        shape, perm = tuple(shape), tuple(perm)
        if not 1 <= len(shape) <= TRANSPOSE_MAX_RANK or sorted(perm) != list(range(len(shape))):
            raise ValueError(f"transpose of {shape} by {perm}")
        strides = [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape))]
        self.p.rank = len(shape)
        for d, axis in enumerate(perm):
            self.p.dims[d] = shape[axis]
            self.p.stride[d] = strides[axis]
        self.out_shapes = (tuple(shape[a] for a in perm),)
        self.fn, self.params = _transpose_fn, &self.p
        self.what = f"Transpose {shape} by {perm}"


# ---- rows of an image split into bands (engine/bands.py) ------------------------------------

cdef struct RowGatherParams:
    # y = rows [row0, row0 + rows) of an image of `channels` planes `width` wide, from n
    # sources each holding rows [src_row0[i], src_row0[i] + src_rows[i]) of it (bands, or the
    # whole image); each row of y comes from the first source that holds it
    int n
    Py_ssize_t channels, width, row0, rows
    Py_ssize_t* src_row0
    Py_ssize_t* src_rows


cdef int _row_gather_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef RowGatherParams* p = <RowGatherParams*>params
    cdef Py_ssize_t c, lo, hi, at = p.row0, end = p.row0 + p.rows
    cdef int i
    cdef float* y = outs[0]
    for i in range(p.n):
        lo = p.src_row0[i] if p.src_row0[i] > at else at
        hi = p.src_row0[i] + p.src_rows[i]
        if hi > end:
            hi = end
        if hi <= lo:
            continue
        for c in range(p.channels):
            memcpy(y + (c * p.rows + lo - p.row0) * p.width,
                   ins[i] + (c * p.src_rows[i] + lo - p.src_row0[i]) * p.width,
                   (hi - lo) * p.width * sizeof(float))
        at = hi
    return CY_OK


cdef class RowGatherOp(NativeOp):
    """Rows ``[row0, row0 + rows)`` of a batch-1 image (1, C, H, W) assembled from sources
    that each hold a run of its rows: a band's input with the rows it borrows from its
    neighbours (its halo), a band cut from a whole feed, or the whole image joined from its
    bands. One memcpy per channel and source."""
    cdef RowGatherParams p
    cdef object arrays

    def __init__(self, int channels, int width, int row0, int rows, sources):
        sources = [(int(a), int(n)) for a, n in sources]
        covered = row0
        for a, n in sources:                   # in order of their first row
            if a <= covered:
                covered = max(covered, a + n)
        if rows < 1 or covered < row0 + rows or sources != sorted(sources):
            raise ValueError(f"rows {row0}..{row0 + rows} are not all in {sources} (sources "
                             f"in order of their first row)")
        self.arrays = (np.array([a for a, _ in sources], np.intp),
                       np.array([n for _, n in sources], np.intp))
        self.p.n = len(sources)
        self.p.channels, self.p.width, self.p.row0, self.p.rows = channels, width, row0, rows
        self.p.src_row0 = <Py_ssize_t*>cnp.PyArray_DATA(self.arrays[0])
        self.p.src_rows = <Py_ssize_t*>cnp.PyArray_DATA(self.arrays[1])
        self.out_shapes = ((1, channels, rows, width),)
        self.fn, self.params = _row_gather_fn, &self.p
        self.what = f"rows {row0}..{row0 + rows} of 1x{channels}x?x{width}"


cdef struct BandMeanParams:
    # y[i] = sum over bands b of weight[b] * x_b[i], i < n: per-channel means of an image
    # from the means of its bands (weight: the band's share of the rows)
    int bands
    Py_ssize_t n
    float* weight


cdef int _band_mean_fn(void* params, const float** ins, float** outs) noexcept nogil:
    cdef BandMeanParams* p = <BandMeanParams*>params
    cdef Py_ssize_t i
    cdef int b
    cdef float acc
    for i in range(p.n):
        acc = 0
        for b in range(p.bands):
            acc = acc + p.weight[b] * ins[b][i]
        outs[0][i] = acc
    return CY_OK


cdef class BandMeanOp(NativeOp):
    """A global average pool of an image in row bands, from each band's own pool: the
    means weighted by the bands' shares of the rows (engine/bands.py). No band is copied."""
    cdef BandMeanParams p
    cdef object weight_arr

    def __init__(self, weights, out_shape):
        out_shape = tuple(int(d) for d in out_shape)
        self.weight_arr = np.array(weights, np.float32)
        self.p.bands = len(weights)
        self.p.n = int(np.prod(out_shape, dtype=np.int64))
        self.p.weight = <float*>cnp.PyArray_DATA(self.weight_arr)
        self.out_shapes = (out_shape,)
        self.fn, self.params = _band_mean_fn, &self.p
        self.what = f"mean of {len(weights)} bands' means -> {out_shape}"


# ---- a step with no native form, run in Python inside the plan ------------------------------

# The error code of a Python step that raised (the exception is kept on its op).
cdef enum:
    CY_EPYTHON = -100


class PythonStepFailed(Exception):
    """A Python step of a native plan raised ``error`` (its op: ``op``); the session runs the
    call again in its Python loop, which reports the error as it always does."""

    def __init__(self, op, error):
        super().__init__(f"{op.what}: {type(error).__name__}: {error}")
        self.op, self.error = op, error


class OutputShapeChanged(Exception):
    """A Python step's result differs in shape or dtype from the one its plan was made
    with: its output shape depends on input values, so the plan cannot hold it."""


cdef int _python_fn(void* params, const float** ins, float** outs) noexcept nogil:
    with gil:
        return (<PythonOp>params).call_from_plan(ins, outs)


cdef class PythonOp(NativeOp):
    """An op with no native form as a step of a plan: ``call(*inputs)`` (numpy arrays
    viewing the plan's buffers, read-only, in ``in_shapes``) returns the op's float32 outputs,
    copied into the plan's buffers. The plan takes the GIL for it, so one odd op (LRN, Resize,
    a Split) costs its own Python call, not the whole graph its native plan."""
    cdef object call
    cdef tuple in_shapes, in_sizes
    cdef public object error

    def __init__(self, call, in_shapes, out_shapes, str what):
        self.call = call
        self.in_shapes = tuple(tuple(s) for s in in_shapes)
        self.in_sizes = tuple(int(np.prod(s, dtype=np.int64)) for s in self.in_shapes)
        self.out_shapes = tuple(tuple(s) for s in out_shapes)
        self.fn, self.params = _python_fn, <void*>self
        self.what = what
        self.error = None

    cdef int call_from_plan(self, const float** ins, float** outs) noexcept:
        cdef Py_ssize_t n
        try:
            arrays = []
            for i, shape in enumerate(self.in_shapes):
                n = self.in_sizes[i]
                a = np.asarray(<float[:n]>ins[i]).reshape(shape) if n else \
                    np.empty(shape, np.float32)
                a.flags.writeable = False
                arrays.append(a)
            result = self.call(*arrays)
            if type(result) is not tuple and type(result) is not list:
                result = (result,)
            if len(result) != len(self.out_shapes):
                raise OutputShapeChanged(f"{len(result)} outputs, planned "
                                         f"{len(self.out_shapes)}")
            for j, value in enumerate(result):
                r = np.ascontiguousarray(value)
                if r.dtype != np.float32 or tuple(r.shape) != self.out_shapes[j]:
                    raise OutputShapeChanged(f"output {j} is {r.dtype} {tuple(r.shape)}, "
                                             f"planned float32 {self.out_shapes[j]}")
                memcpy(outs[j], cnp.PyArray_DATA(<cnp.ndarray>r), r.size * sizeof(float))
            return CY_OK
        except BaseException as exc:      # noqa: B036: re-raised by NativePlan.run
            self.error = exc
            return CY_EPYTHON


cdef class _Block:
    """Frees a malloc'ed block with its owner."""
    cdef void* p

    def __cinit__(self):
        self.p = NULL

    def __dealloc__(self):
        free(self.p)


cdef _Block _block(void* p):
    cdef _Block b = _Block.__new__(_Block)
    b.p = p
    return b


# ---- the plan -------------------------------------------------------------------------------

cdef struct Step:
    native_fn fn            # NULL: an alias, vals[outs[0]] = vals[ins[0]]
    void* params
    int n_in, n_out
    int* ins                # value ids
    int* outs


# ---- a section of steps in streams, one thread per stream (engine/bands.py) ----------------

cdef extern from *:
    """
    static inline int cy_ld(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void cy_st(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline int cy_cas(int *p, int expect, int desired) {
        return __atomic_compare_exchange_n(p, &expect, desired, 0, __ATOMIC_ACQ_REL,
                                           __ATOMIC_ACQUIRE);
    }
    static inline void cy_add(int *p, int v) { __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
    static inline void cy_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #endif
    }
    """
    int cy_ld(int* p) noexcept nogil
    void cy_st(int* p, int v) noexcept nogil
    bint cy_cas(int* p, int expect, int desired) noexcept nogil
    void cy_add(int* p, int v) noexcept nogil
    void cy_relax() noexcept nogil

cdef extern from "<sched.h>" nogil:
    int sched_yield()

# ints per cache line: each stream's counters on a line of their own
cdef enum:
    LINE = 16


cdef struct Section:
    # The plan's first n_steps steps, run by one thread per stream: stream s's steps are
    # order[start[s] .. start[s + 1]), in order; step k may run once the steps
    # deps[dep_start[k] .. dep_start[k + 1]) are done (its inputs' producers, the step before
    # it in its stream). Per run (gen): done[k] = gen once step k finished; next[LINE * s]
    # the position of stream s's next step to claim; owner[LINE * s] = gen once a thread
    # has taken stream s as its own. state[0]: steps finished, state[LINE]: an error code.
    Step* steps
    const float** vals
    int n_steps, n_streams, max_args, gen, failed
    int* order
    int* start
    int* dep_start
    int* deps
    int* done
    int* next
    int* owner
    int* state
    double* seconds


cdef inline bint _ready(Section* S, int k) noexcept nogil:
    cdef int d
    for d in range(S.dep_start[k], S.dep_start[k + 1]):
        if cy_ld(&S.done[S.deps[d]]) != S.gen:
            return False
    return True


cdef int _run_step(const Step* st, const float** vals, const float** ins, float** outs,
                   double* seconds) noexcept nogil:
    """One step: an alias points its output at its input; an op gets its buffers (``ins``,
    ``outs``: the caller's pointer scratch) and, if ``seconds`` is not NULL, its wall time
    is stored there."""
    cdef int j, err
    cdef timespec t0, t1
    if st.fn == NULL:
        vals[st.outs[0]] = vals[st.ins[0]]
        return CY_OK
    for j in range(st.n_in):
        ins[j] = vals[st.ins[j]]
    for j in range(st.n_out):
        outs[j] = <float*>vals[st.outs[j]]
    if seconds != NULL:
        clock_gettime(CLOCK_MONOTONIC, &t0)
    err = st.fn(st.params, ins, outs)
    if seconds != NULL:
        clock_gettime(CLOCK_MONOTONIC, &t1)
        seconds[0] = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9
    return err


cdef void _section_task(void* ctx, long piece, int tid) noexcept nogil:
    """One thread's share of a section: it takes stream ``tid`` as its own (if no thread
    has), runs that stream's steps as their inputs become ready, and runs steps of streams
    no thread owns (a worker that is late, or fewer threads than streams) while it waits;
    it never runs a step of a stream another thread owns, so each band stays on the core
    that writes it. Returns when every step is done or one failed."""
    cdef Section* S = <Section*>ctx
    cdef int mine = -1, s, i, pos, k, err, v
    cdef long idle = 0
    cdef bint ran
    cdef const float** ins = <const float**>malloc(2 * S.max_args * sizeof(float*))
    if ins == NULL:
        S.failed = -1
        cy_st(&S.state[LINE], CY_ENOMEM)
        return
    cdef float** outs = <float**>(ins + S.max_args)
    if tid < S.n_streams:
        v = cy_ld(&S.owner[LINE * tid])
        if v != S.gen and cy_cas(&S.owner[LINE * tid], v, S.gen):
            mine = tid
    while cy_ld(&S.state[LINE]) == CY_OK and cy_ld(&S.state[0]) < S.n_steps:
        ran = False
        for i in range(S.n_streams):
            s = (mine + i) % S.n_streams if mine >= 0 else i
            if s != mine and cy_ld(&S.owner[LINE * s]) == S.gen:
                continue                 # another thread's stream
            pos = cy_ld(&S.next[LINE * s])
            if pos >= S.start[s + 1] - S.start[s]:
                continue
            k = S.order[S.start[s] + pos]
            if not _ready(S, k) or not cy_cas(&S.next[LINE * s], pos, pos + 1):
                continue
            err = _run_step(&S.steps[k], S.vals, ins, outs,
                            S.seconds + k if S.seconds != NULL else NULL)
            if err != CY_OK:
                S.failed = k
                cy_st(&S.state[LINE], err)
                break
            cy_st(&S.done[k], S.gen)
            cy_add(&S.state[0], 1)
            ran = True
            break
        if ran:
            idle = 0
        else:
            idle += 1
            if idle < 20000:
                cy_relax()
            else:                        # the owner of what we wait for may be off its core
                sched_yield()
    free(<void*>ins)


# ---- where the threads' cores are: a cache line's round trip through the pool ----------------

cdef struct ProbeJob:
    int turn                # the line the two threads take turns on
    int pad[15]
    int present, abort, rounds
    double ns


cdef inline double _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec * 1e9 + t.tv_nsec


cdef void _probe_task(void* ctx, long piece, int tid) noexcept nogil:
    cdef ProbeJob* j = <ProbeJob*>ctx
    cdef int k
    cdef double start
    if piece == 1:
        if tid == 0:
            return                       # no worker took the partner's piece
        cy_st(&j.present, 1)
        for k in range(j.rounds):
            while cy_ld(&j.turn) != 2 * k + 1:
                if cy_ld(&j.abort):
                    return
                cy_relax()
            cy_st(&j.turn, 2 * k + 2)
        return
    start = _now_ns()
    while not cy_ld(&j.present):
        if _now_ns() - start > 50000:    # the worker sleeps: no probe this time
            cy_st(&j.abort, 1)
            return
        cy_relax()
    start = _now_ns()
    for k in range(j.rounds):
        cy_st(&j.turn, 2 * k + 1)
        while cy_ld(&j.turn) != 2 * k + 2:
            cy_relax()
    j.ns = (_now_ns() - start) / j.rounds
    if j.ns > 10000:                     # one of the two was off its core: no probe
        j.ns = -1.0


def pool_round_trip_ns(int rounds=32):
    """Mean round trip of a cache line between this thread and the thread pool's worker
    (engine/bands.py BandChoice): ~60 ns with the 2-vCPU VMs' cores near, ~330 far; 2-10 us
    in all. -1.0 when no worker was running within 50 us (asleep, just started, or the pool
    busy) or a thread was preempted during it."""
    cdef ProbeJob j
    j.turn, j.present, j.abort, j.rounds, j.ns = 0, 0, 0, max(1, rounds), -1.0
    with nogil:
        parallel_for(2, 2, _probe_task, &j)
    return j.ns


cdef class NativePlan:
    """A graph's steps for one set of input shapes, run in C.

    Parameters
    ----------
    steps : list of (NativeOp or None, input value ids, output value ids)
        None: an alias (the output is the input's buffer under another shape).
    n_values : int
    feeds : list of value ids, one per graph input, in feed order
    outputs : list of (value id, shape, copy): the graph outputs in order; ``copy``: the
        value is some other buffer (an alias, a feed, a constant), copied out after the run
    constants : list of (value id, float32 C-contiguous array)
    arena : list of (value id, offset in floats): intermediates, in one buffer of
    arena_floats : int
    nodes : list of int, optional
        Per step, the index of the session step it runs (for profiles).
    notes : list of str, optional
        What the plan did beyond running the steps (concats written in place), for profiles.
    section : (streams, deps), optional
        The first ``len(streams)`` steps run as a section (engine/bands.py): ``streams[k]``
        is step k's stream (one thread each), ``deps[k]`` the steps it waits for (earlier
        section steps). The steps after the section run one after another as usual.
    """
    cdef Step* steps
    cdef int n_steps, n_values
    cdef const float** vals
    cdef const float** ptr_scratch
    cdef int max_args
    cdef object keep            # the NativeOps, constants and arena, alive with the plan
    cdef readonly list step_ops  # per step, its NativeOp (None: an alias)
    cdef object arena_arr
    cdef list feed_ids, out_ids, out_shapes, out_copy
    cdef readonly Py_ssize_t arena_bytes
    cdef readonly list nodes
    cdef readonly list notes
    cdef Section sec
    cdef int first_step          # the first step after the section
    cdef object sec_arrays
    cdef readonly list streams   # per section step, its stream (thread)

    def __cinit__(self):
        self.steps = NULL
        self.vals = NULL
        self.ptr_scratch = NULL
        self.first_step = 0

    def __init__(self, steps, int n_values, feeds, outputs, constants, arena,
                 Py_ssize_t arena_floats, nodes=None, notes=None, section=None):
        cdef int k, i, total = 0
        cdef NativeOp op
        self.n_steps, self.n_values = len(steps), n_values
        self.keep = []
        self.max_args = 1
        for _, ins, outs in steps:
            total += len(ins) + len(outs)
            self.max_args = max(self.max_args, len(ins), len(outs))
        self.steps = <Step*>malloc(max(1, self.n_steps) * sizeof(Step))
        cdef int* ids = <int*>malloc(max(1, total) * sizeof(int))
        self.vals = <const float**>malloc(max(1, n_values) * sizeof(float*))
        self.ptr_scratch = <const float**>malloc(2 * self.max_args * sizeof(float*))
        if not self.steps or not ids or not self.vals or not self.ptr_scratch:
            free(ids)
            raise MemoryError()
        self.keep.append(_block(ids))      # freed with the plan; ids walks on below
        self.step_ops = [native for native, _, _ in steps]
        for i in range(n_values):
            self.vals[i] = NULL
        for k, (native, ins, outs) in enumerate(steps):
            if native is None:
                self.steps[k].fn, self.steps[k].params = NULL, NULL
            else:
                op = <NativeOp?>native
                self.steps[k].fn, self.steps[k].params = op.fn, op.params
                self.keep.append(op)
            self.steps[k].n_in, self.steps[k].n_out = len(ins), len(outs)
            self.steps[k].ins = ids
            for i, v in enumerate(ins):
                ids[i] = v
            ids += len(ins)
            self.steps[k].outs = ids
            for i, v in enumerate(outs):
                ids[i] = v
            ids += len(outs)
        self.arena_arr = np.empty(max(1, arena_floats), np.float32)
        self.arena_bytes = arena_floats * 4
        cdef float* base = <float*>cnp.PyArray_DATA(self.arena_arr)
        for v, offset in arena:
            self.vals[v] = base + <Py_ssize_t>offset
        for v, array in constants:
            self.keep.append(array)
            self.vals[v] = <const float*>cnp.PyArray_DATA(array)
        # every value a step reads has memory: a buffer, a feed, a graph output (both set
        # per run) or an earlier step's output (aliases, set as they run); a planner bug
        # would otherwise read through NULL
        known = set(feeds) | {v for v, _, _ in outputs}
        for k, (_, ins, outs) in enumerate(steps):
            for v in ins:
                if self.vals[<int>v] == NULL and v not in known:
                    raise ValueError(f"native step {k} reads value {v}, which no step, "
                                     f"feed or buffer provides")
            known.update(outs)
        self.feed_ids = list(feeds)
        self.out_ids = [v for v, _, _ in outputs]
        self.out_shapes = [tuple(s) for _, s, _ in outputs]
        self.out_copy = [bool(c) for _, _, c in outputs]
        self.nodes = list(nodes) if nodes is not None else list(range(self.n_steps))
        self.notes = list(notes) if notes is not None else []
        if section is not None:
            self._set_section(*section)

    def _set_section(self, streams, deps):
        cdef int n = len(streams), k
        n_streams = max(streams) + 1 if n else 0
        if n > self.n_steps or min(streams, default=0) < 0:
            raise ValueError("section streams do not fit the steps")
        for k in range(n):
            if any(not 0 <= d < k for d in deps[k]):
                raise ValueError(f"section step {k} waits for a step not before it")
        order = [k for s in range(n_streams) for k in range(n) if streams[k] == s]
        start = np.cumsum([0] + [streams.count(s) for s in range(n_streams)])
        dep_start = np.cumsum([0] + [len(d) for d in deps])
        flat = [d for ds in deps for d in ds]
        arrays = [np.array(order or [0], np.intc), np.array(start, np.intc),
                  np.array(dep_start, np.intc), np.array(flat or [0], np.intc),
                  np.zeros(max(1, n), np.intc),
                  np.zeros(LINE * max(1, n_streams), np.intc),
                  np.zeros(LINE * max(1, n_streams), np.intc), np.zeros(2 * LINE, np.intc)]
        self.sec_arrays = arrays
        self.sec.steps, self.sec.vals = self.steps, self.vals
        self.sec.n_steps, self.sec.n_streams = n, n_streams
        self.sec.max_args, self.sec.gen, self.sec.failed = self.max_args, 0, -1
        self.sec.order = <int*>cnp.PyArray_DATA(arrays[0])
        self.sec.start = <int*>cnp.PyArray_DATA(arrays[1])
        self.sec.dep_start = <int*>cnp.PyArray_DATA(arrays[2])
        self.sec.deps = <int*>cnp.PyArray_DATA(arrays[3])
        self.sec.done = <int*>cnp.PyArray_DATA(arrays[4])
        self.sec.next = <int*>cnp.PyArray_DATA(arrays[5])
        self.sec.owner = <int*>cnp.PyArray_DATA(arrays[6])
        self.sec.state = <int*>cnp.PyArray_DATA(arrays[7])
        self.sec.seconds = NULL
        self.first_step = n
        self.streams = list(streams)

    @property
    def section_streams(self):
        """Threads the plan's section runs on (0: no section)."""
        return self.sec.n_streams if self.first_step else 0

    def __dealloc__(self):
        free(self.steps)
        free(<void*>self.vals)
        free(<void*>self.ptr_scratch)

    def run(self, feeds, double[::1] seconds=None):
        """Run on ``feeds`` (float32 C-contiguous arrays, the planned shapes, feed order);
        returns the graph outputs as new arrays. ``seconds`` (float64, one per step): each
        step's wall time is stored there (profiles)."""
        cdef int i, k, err = CY_OK, failed = -1
        cdef bint timed = seconds is not None
        if timed and seconds.shape[0] != self.n_steps:
            raise ValueError(f"seconds must have {self.n_steps} entries")
        cdef cnp.ndarray a
        for i, v in enumerate(self.feed_ids):
            a = feeds[i]
            self.vals[<int>v] = <const float*>cnp.PyArray_DATA(a)
        results = []
        for i in range(len(self.out_ids)):
            a = np.empty(self.out_shapes[i], np.float32)
            results.append(a)
            if not self.out_copy[i]:
                self.vals[<int>self.out_ids[i]] = <const float*>cnp.PyArray_DATA(a)
        cdef const float** ins = self.ptr_scratch
        cdef float** outs = <float**>(self.ptr_scratch + self.max_args)
        cdef int s
        if self.first_step:
            self.sec.gen += 1
            self.sec.seconds = &seconds[0] if timed else NULL
            self.sec.failed = -1
            self.sec.state[0] = self.sec.state[LINE] = CY_OK
            for s in range(self.sec.n_streams):
                self.sec.next[LINE * s] = 0
        with nogil:
            if self.first_step:
                parallel_for(self.sec.n_streams, self.sec.n_streams, _section_task, &self.sec)
                err = self.sec.state[LINE]
                failed = self.sec.failed
            for k in range(self.first_step, self.n_steps):
                if err != CY_OK:
                    break
                err = _run_step(&self.steps[k], self.vals, ins, outs,
                                &seconds[k] if timed else NULL)
                if err != CY_OK:
                    failed = k
        if err == CY_EPYTHON:
            op = self.step_ops[failed]
            error, op.error = op.error, None
            raise PythonStepFailed(op, error)
        if err == CY_ENOMEM:
            raise MemoryError(f"native step {failed}: out of memory")
        if err != CY_OK:
            raise RuntimeError(f"native step {failed} failed ({err})")
        for i in range(len(self.out_ids)):
            if self.out_copy[i]:
                a = results[i]
                memcpy(cnp.PyArray_DATA(a), self.vals[<int>self.out_ids[i]],
                       a.size * sizeof(float))
        return results
