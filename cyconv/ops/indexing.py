"""Index-driven gathers and scatters: GatherElements, GatherND, ScatterElements, ScatterND.

Exporters write them for in-place tensor assignment and advanced indexing: Swin's shifted
window mask (``mask[h0:h1, w0:w1] = k`` becomes ScatterND), Swin-v2's relative-position table
(GatherND), and detection heads' top-k gathers (GatherElements).

Shapes (data of rank r, indices of rank q):

* GatherElements(axis):  out[i...] = data[i... with i[axis] := indices[i...]]  (indices shape)
* GatherND(batch_dims b): indices [*B, *M, k] with B = the first b dims of data;
                         out[*B, *M] = data[*B, *indices[*B, *M, :], ...]
                         (out shape: B + M + data[b+k:])
* ScatterElements(axis, reduction): output = copy of data, then for every position i of indices
                         output[i with i[axis] := indices[i]] (op)= updates[i]
* ScatterND(reduction):  indices [*M, k], updates [*M, *data[k:]];
                         output = copy of data, output[indices[m]] (op)= updates[m]

Negative indices count from the end (opset 11+), an index outside ``[-s, s)`` is an InputError.
``reduction``: "none" (assignment; with duplicate indices the result is unspecified, here the
last write wins), "add", "mul", "max" (18+), "min" (18+), applied with numpy's unbuffered
``ufunc.at`` so duplicates accumulate.
"""
from __future__ import annotations

import numpy as np

from ..engine.registry import register
from ..errors import InputError

_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _run_error(node, message):
    return InputError(f"{node.op_type} node {node.name!r}: {message}")


def _checked(indices, sizes, what="index"):
    """int64 ``indices`` with negatives wrapped; ValueError naming the first one out of range.

    ``sizes`` broadcasts against ``indices`` (the dimension each index addresses).
    """
    idx = np.asarray(indices).astype(np.int64, copy=False)
    sizes = np.asarray(sizes, np.int64)
    bad = (idx < -sizes) | (idx >= sizes)
    if bad.any():
        raise ValueError(f"{what} {int(idx[bad].reshape(-1)[0])} is out of range")
    return np.where(idx < 0, idx + sizes, idx)


def _axis(axis, rank):
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


# ------------------------------------------------------------------------------------------
# references

def gather_elements_reference(data, indices, axis=0):
    """``numpy.take_along_axis`` with ONNX's negative indices."""
    a = _axis(axis, data.ndim)
    if indices.ndim != data.ndim:
        raise ValueError(f"indices rank {indices.ndim} != data rank {data.ndim}")
    return np.take_along_axis(data, _checked(indices, data.shape[a]), axis=a)


def gather_nd_reference(data, indices, batch_dims=0):
    """GatherND (see the module docstring for the shapes)."""
    b, k = batch_dims, indices.shape[-1]
    if b + k > data.ndim:
        raise ValueError(f"batch_dims {b} + index depth {k} exceed data rank {data.ndim}")
    if indices.shape[:b] != data.shape[:b]:
        raise ValueError(f"batch dims of indices {indices.shape[:b]} != data's {data.shape[:b]}")
    idx = _checked(indices, data.shape[b:b + k])
    nb = int(np.prod(data.shape[:b], dtype=np.int64))
    d = data.reshape((nb,) + data.shape[b:])
    m = idx.reshape(nb, -1, k)                                    # [B, M, k]
    batch = np.arange(nb).reshape(nb, 1)
    out = d[(batch,) + tuple(m[..., j] for j in range(k))]         # [B, M, *data[b+k:]]
    return np.asarray(out, order="C").reshape(indices.shape[:-1] + data.shape[b + k:])


def scatter_elements_reference(data, indices, updates, axis=0, reduction="none"):
    """ScatterElements on a copy of ``data`` (see the module docstring)."""
    a = _axis(axis, data.ndim)
    if indices.shape != updates.shape or indices.ndim != data.ndim:
        raise ValueError(f"indices {indices.shape} and updates {updates.shape} must have one "
                         f"shape of data's rank {data.ndim}")
    idx = _checked(indices, data.shape[a])
    grid = list(np.indices(indices.shape, sparse=True))
    grid[a] = idx
    out = np.array(data, copy=True)
    if reduction == "none":
        out[tuple(grid)] = updates
    else:
        _REDUCE[reduction].at(out, tuple(grid), updates)
    return out


def scatter_nd_reference(data, indices, updates, reduction="none"):
    """ScatterND on a copy of ``data`` (see the module docstring)."""
    k = indices.shape[-1]
    if k > data.ndim:
        raise ValueError(f"index depth {k} exceeds data rank {data.ndim}")
    want = indices.shape[:-1] + data.shape[k:]
    if updates.shape != want:
        raise ValueError(f"updates shape {updates.shape} != {want}")
    idx = _checked(indices, data.shape[:k]).reshape(-1, k)
    where = tuple(idx[:, j] for j in range(k))
    upd = updates.reshape((idx.shape[0],) + data.shape[k:])
    out = np.array(data, copy=True)
    if reduction == "none":
        out[where] = upd
    else:
        _REDUCE[reduction].at(out, where, upd)
    return out


# ------------------------------------------------------------------------------------------
# builders

def _reduction(node, reduction):
    if isinstance(reduction, bytes):
        reduction = reduction.decode()
    allowed = ("none", "add", "mul") + (("max", "min") if node.opset >= 18 else ())
    if reduction not in allowed:
        raise node.error(f"reduction {reduction!r} is not one of {allowed} at opset {node.opset}")
    return reduction


def _int(node, name, value):
    if isinstance(value, (bool, np.bool_)) or int(value) != value:
        raise node.error(f"{name} must be an int, got {value!r}")
    return int(value)


def _index_input(node, indices):
    if indices.dtype not in (np.int32, np.int64):
        raise _run_error(node, f"indices must be int32 or int64, got {indices.dtype}")


@register("GatherElements", reference=gather_elements_reference, min_opset=11)
def GatherElements(node, *, axis=0):
    axis = _int(node, "axis", axis)

    def run(ctx, data, indices):
        _index_input(node, indices)
        try:
            return gather_elements_reference(data, indices, axis)
        except ValueError as exc:
            raise _run_error(node, str(exc)) from None
    return run


@register("GatherND", reference=gather_nd_reference, min_opset=11)
def GatherND(node, *, batch_dims=0):
    batch_dims = _int(node, "batch_dims", batch_dims)
    if batch_dims < 0:
        raise node.error(f"batch_dims must be >= 0, got {batch_dims}")

    def run(ctx, data, indices):
        _index_input(node, indices)
        if indices.ndim < 1 or indices.ndim <= batch_dims or data.ndim <= batch_dims:
            raise _run_error(node, f"indices {indices.shape} / data {data.shape} have too few "
                                   f"dims for batch_dims {batch_dims}")
        try:
            return gather_nd_reference(data, indices, batch_dims)
        except ValueError as exc:
            raise _run_error(node, str(exc)) from None
    return run


@register("ScatterElements", reference=scatter_elements_reference, min_opset=11)
def ScatterElements(node, *, axis=0, reduction="none"):
    axis = _int(node, "axis", axis)
    reduction = _reduction(node, reduction)

    def run(ctx, data, indices, updates):
        _index_input(node, indices)
        if updates.dtype != data.dtype:
            raise _run_error(node, f"updates dtype {updates.dtype} != data dtype {data.dtype}")
        try:
            return scatter_elements_reference(data, indices, updates, axis, reduction)
        except ValueError as exc:
            raise _run_error(node, str(exc)) from None
    return run


@register("ScatterND", reference=scatter_nd_reference, min_opset=11)
def ScatterND(node, *, reduction="none"):
    reduction = _reduction(node, reduction)

    def run(ctx, data, indices, updates):
        _index_input(node, indices)
        if indices.ndim < 1:
            raise _run_error(node, "indices must have rank >= 1")
        if updates.dtype != data.dtype:
            raise _run_error(node, f"updates dtype {updates.dtype} != data dtype {data.dtype}")
        try:
            return scatter_nd_reference(data, indices, updates, reduction)
        except ValueError as exc:
            raise _run_error(node, str(exc)) from None
    return run
