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


def assign_offsets(sizes: dict, lifetimes: dict) -> tuple[dict, int]:
    """Offsets in floats for values of ``sizes`` {value: floats} alive over
    ``lifetimes`` {value: (first step, last step)}.

    Returns
    -------
    offsets : {value: offset}, each a multiple of ALIGN_FLOATS
    total : int, the arena's size in floats
    """
    placed = []            # (offset, end, first, last)
    offsets = {}
    total = 0
    for v in sorted(sizes, key=lambda v: (-sizes[v], lifetimes[v])):
        size = -(-max(1, sizes[v]) // ALIGN_FLOATS) * ALIGN_FLOATS
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
