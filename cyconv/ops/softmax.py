"""Softmax and LogSoftmax.

    softmax(x)    = exp(x - max) / sum(exp(x - max))
    logsoftmax(x) = (x - max) - log(sum(exp(x - max)))

Opset < 13: the input is flattened to 2-D at ``axis`` (default 1), ``[prod(shape[:axis]),
prod(shape[axis:])]``, and each row is normalised as a whole. Opset >= 13: normalised along the
single axis ``axis`` (default -1). Both map to ``x[outer, L, inner]`` for the kernel
(``inner = 1`` for the legacy flattening).
"""
from __future__ import annotations

import math

import numpy as np

from ..engine.registry import natively, register
from ..errors import InputError
from ..kernels import softmax as _ks


def _layout(shape, axis, legacy):
    """``(outer, L, inner)`` view of ``shape`` for normalising at ``axis`` (already >= 0)."""
    prod = math.prod   # on tuples of ints: exact, and 20x cheaper than np.prod
    if legacy:
        return prod(shape[:axis]), prod(shape[axis:]), 1
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])


def _normalise_axis(axis, rank, op_type):
    if not -rank <= axis <= rank - 1:
        raise InputError(f"{op_type}: axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _reference(x, axis, legacy, as_log):
    rank = x.ndim
    axis = _normalise_axis(axis, rank, "Softmax")
    outer, length, inner = _layout(x.shape, axis, legacy)
    v = x.astype(np.float64).reshape(outer, length, inner)
    z = v - v.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    y = z - lse if as_log else np.exp(z - lse)
    return y.reshape(x.shape).astype(x.dtype)


def softmax_reference(x, axis=-1, legacy=False):
    """Softmax of ``x`` along ``axis`` (``legacy``: over the flattened block ``shape[axis:]``)."""
    return _reference(x, axis, legacy, False)


def log_softmax_reference(x, axis=-1, legacy=False):
    """LogSoftmax of ``x`` along ``axis`` (``legacy`` as in :func:`softmax_reference`)."""
    return _reference(x, axis, legacy, True)


def _builder(node, axis, as_log, reference):
    legacy = node.opset < 13
    if axis is None:
        axis = 1 if legacy else -1
    if int(axis) != axis:
        raise node.error(f"axis must be an int, got {axis!r}")
    axis = int(axis)

    def run(ctx, x):
        if x.ndim == 0:
            raise InputError(f"{node.op_type}: scalar input, expects rank >= 1")
        a = _normalise_axis(axis, x.ndim, node.op_type)
        if x.dtype != np.float32:
            return reference(x, a, legacy)
        outer, length, inner = _layout(x.shape, a, legacy)
        x = np.asarray(x, order="C")
        y = np.empty(x.shape, np.float32)
        _ks.softmax(x.reshape(-1), y.reshape(-1), outer, length, inner, as_log, ctx.n_threads)
        return y

    def native(in_shapes, n_threads):
        shape = tuple(in_shapes[0])
        if len(shape) == 0 or math.prod(shape) == 0:
            return None
        outer, length, inner = _layout(shape, _normalise_axis(axis, len(shape), node.op_type),
                                       legacy)
        return _ks.softmax_native(shape, outer, length, inner, as_log, n_threads)
    return natively(run, native)


@register("Softmax", reference=softmax_reference)
def Softmax(node, *, axis=None):
    return _builder(node, axis, False, softmax_reference)


@register("LogSoftmax", reference=log_softmax_reference)
def LogSoftmax(node, *, axis=None):
    return _builder(node, axis, True, log_softmax_reference)
