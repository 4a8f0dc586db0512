"""Memory plan: one arena for a native plan's intermediate values, offsets from liveness.

Each intermediate value (not a graph input, output or constant) lives from the step that
writes it to the last step that reads it. Two values whose lifetimes overlap (inclusive: a
step's outputs never share memory with its inputs) get disjoint ranges of the arena; others
may share. Placement is greedy by size (TensorFlow Lite's "greedy by size" planner): the
largest value first, each at the lowest offset free over its whole lifetime. On a chain of
layers that is about the two largest neighbouring activations; ResNet-50 at batch 1 needs
about 3 of its largest activation where allocating every value would take the sum of all.
"""
from __future__ import annotations

ALIGN_FLOATS = 16          # 64-byte boundaries: whole cache lines, aligned vector loads


def assign_offsets(sizes: dict, lifetimes: dict,
                   align: int = ALIGN_FLOATS) -> tuple[dict, int]:
    """Offsets in floats for values of ``sizes`` {value: floats} alive over
    ``lifetimes`` {value: (first step, last step)}.

    Returns
    -------
    offsets : {value: offset}, each a multiple of ``align``
    total : int, the arena's size in floats
    """
    placed = []            # (offset, end, first, last)
    offsets = {}
    total = 0
    for v in sorted(sizes, key=lambda v: (-sizes[v], lifetimes[v])):
        size = -(-max(1, sizes[v]) // align) * align
        first, last = lifetimes[v]
        busy = sorted((o, e) for o, e, f, l in placed if f <= last and first <= l)
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            offset = max(offset, e)
        placed.append((offset, offset + size, first, last))
        offsets[v] = offset
        total = max(total, offset + size)
    return offsets, total


def assign_offsets_by_plane(sizes: dict, lifetimes: dict,
                            planes: dict) -> tuple[dict, int]:
    """As :func:`assign_offsets`, but a value only ever reuses the memory of values of its
    own plane size: ``planes`` {value: floats per (image, channel) plane, or 0 for a value
    that may go anywhere (not a batch-1 image)}.

    Why: the thread pool gives each thread the same pieces call after call (gemm/pool.c),
    and at batch 1 the ops split an image by position: thread t writes the same stretch of
    every channel plane. A float at offset o of a value of plane P thus belongs to the
    thread of position o mod P. Within a group every value starts at a multiple of P from
    the group's start, so memory changes values but not threads: what a thread overwrites
    is already in its own cache. Shared by values of other plane sizes, half the lines a
    thread writes had last been written by the other core, and each must come from there
    first: ~60 ns a line with the vCPUs near, ~330 ns far (benchmarks/placement_states.py).
    The groups take about twice the memory of one arena (SqueezeNet 1.1: 3.75 -> 6.45 MiB).

    Values of a group are placed at multiples of their plane (so a value's start is
    64-byte aligned only when the plane is a multiple of ALIGN_FLOATS); each group starts
    on ALIGN_FLOATS, the largest planes first.
    """
    groups = {}
    for v in sizes:
        groups.setdefault(planes[v], []).append(v)
    offsets, base = {}, 0
    for plane, values in sorted(groups.items(), key=lambda kv: -kv[0]):
        unit = plane if plane > 0 else 1
        placed, total = assign_offsets({v: -(-sizes[v] // unit) for v in values},
                                       {v: lifetimes[v] for v in values},
                                       1 if plane > 0 else ALIGN_FLOATS)
        offsets.update({v: base + placed[v] * unit for v in values})
        base += -(-total * unit // ALIGN_FLOATS) * ALIGN_FLOATS
    return offsets, base


def concats_in_place(steps, sizes: dict, may_nest) -> tuple[dict, set]:
    """Concats whose inputs can be written straight into the output's buffer, so the copy
    is skipped: SqueezeNet's fire modules and GoogLeNet's inception blocks each end in one,
    and DenseNet concatenates all earlier features before every layer (62 concats, 9 of its
    78 ms at batch 1 on 2 threads were these copies).

    A concat qualifies when its output is its inputs laid end to end (``op.parts``, each
    input's floats: one outer block, i.e. axis 1 at batch 1) and every input, and the
    output, ``may_nest``: is a buffer of its own written by one step (not a feed, constant,
    graph output, view or in-place output). An input already placed in an earlier concat
    brings that concat along: DenseNet's concat k is the prefix of concat k+1, so a whole
    dense block lands in one buffer and no feature is ever copied. The values a run
    actually writes (the leaves) must stay disjoint: concat(x, y) and concat(x, z) cannot
    both keep x in place, since y and z would then share the floats after x; the second
    stays a copy.

    Parameters
    ----------
    steps : list of (op, input ids, output ids); a concat step's op has ``parts``
    sizes : {value: floats}
    may_nest : callable value -> bool

    Returns
    -------
    place : {value: (root, offset in floats)} for every value moved into a concat's buffer;
        root is the outermost concat's output, the buffer the arena allocates
    elided : set of the indices of the concat steps that no longer run
    """
    parent = {}                  # value -> (the concat output it lies in, offset there)
    leaves = {}                  # concat output -> [(offset, floats)] of the values written

    def find(v):
        offset = 0
        while v in parent:
            v, o = parent[v]
            offset += o
        return v, offset

    elided = set()
    for k, (op, ins, outs) in enumerate(steps):
        parts = getattr(op, "parts", None)
        if parts is None or len(parts) != len(ins) or len(outs) != 1 or \
                len(set(ins)) != len(ins) or \
                not may_nest(outs[0]) or not all(may_nest(v) for v in ins):
            continue
        out = outs[0]
        moves, at, fits = {}, 0, True        # root -> its offset in out
        for v, floats in zip(ins, parts):
            root, offset = find(v)
            where = at - offset
            if where < 0 or where + sizes[root] > sizes[out] or moves.get(root, where) != where:
                fits = False
                break
            moves[root] = where
            at += floats
        if not fits:
            continue
        spans = sorted((where + lo, where + lo + n) for root, where in moves.items()
                       for lo, n in leaves.get(root, [(0, sizes[root])]))
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
            continue
        leaves[out] = [(lo, hi - lo) for lo, hi in spans]
        for root, where in moves.items():
            parent[root] = (out, where)
            leaves.pop(root, None)
        elided.add(k)
    return {v: find(v) for v in parent}, elided


def fuse_blocks(steps, fuse, keep) -> tuple[dict, set]:
    """Chains of three steps that run better as one: an expand step, a middle step that
    reads only its output, and a last step that reads only the middle's (MobileNet's
    1x1 expand -> depthwise -> 1x1 project, kernels/conv_block.pxi); or, without an expand,
    middle -> last. ``fuse(first or None, middle, last)`` gives the fused op or None.

    The fused step runs where the last one did, reading the first step's input (and the
    last step's other inputs: the residual); the intermediates must be read by nothing else
    and not be ``keep(value)`` (graph outputs). A step joins one chain at most.

    Returns
    -------
    fused : {index of the last step: (op, input ids, output ids, indices of the chain)}
    gone : set of the indices of the steps it replaces
    """
    producer, readers = {}, {}
    for k, (op, ins, outs) in enumerate(steps):
        for v in ins:
            readers[v] = readers.get(v, 0) + 1
        for v in outs:
            producer[v] = k

    def single_use(v):
        k = producer.get(v)
        if k is None or k in gone or k in fused or readers.get(v) != 1 or keep(v):
            return None
        op, ins, outs = steps[k]
        return k if op is not None and len(ins) == 1 and len(outs) == 1 else None

    fused, gone = {}, set()
    for last, (op, ins, outs) in enumerate(steps):
        if op is None or not ins:
            continue
        middle = single_use(ins[0])
        if middle is None:
            continue
        first = single_use(steps[middle][1][0])
        for chain in ([first, middle] if first is not None else [], [middle]):
            if not chain:
                continue
            ops = [steps[k][0] for k in chain]
            block = fuse(*([None] * (3 - len(chain) - 1) + ops + [op]))
            if block is not None:
                fused[last] = (block, [steps[chain[0]][1][0]] + list(ins[1:]), list(outs),
                               chain + [last])
                gone.update(chain)
                break
    return fused, gone
