"""Add, Sub, Mul, Div, Pow, Sqrt, Sum: numpy references and builders.

Broadcasting is numpy's (ONNX "multidirectional"). Opset < 7 ``Add/Sub/Mul/Div/Pow`` instead
carried ``broadcast`` / ``axis`` attributes: B is broadcast onto A with B's dims aligned at
``axis`` (suffix-aligned when ``axis`` is absent); :func:`legacy_align` turns that into a numpy
broadcast.

Fast path (float32 operands of one dtype): same shape, or one operand broadcast onto the other
as ``big[P, M, Q] (op) small[M]`` (see :func:`broadcast_plan`), which covers scalars,
per-channel ``[C, 1, 1]`` / ``[1, C, 1, 1]``, row biases ``[C]`` on ``[N, C]`` and
``[N, C, 1, 1]`` gates. Anything else, and every other dtype, runs the numpy reference.
"""
from __future__ import annotations

import functools

import math

import numpy as np

from ..engine.registry import natively, register
from ..errors import InputError
from ..kernels import elementwise as _ew

# Below this many rows' length a Q == 1 broadcast is a loop of tiny calls; numpy is faster.
_MIN_ROW = 16
# Broadcast layouts remembered per node (one per distinct pair of input shapes).
_MAX_CACHED_SHAPES = 64


# ------------------------------------------------------------------------------------------
# references

def _as_dtype(y, dtype):
    y = np.asarray(y)
    return y if y.dtype == dtype else y.astype(dtype)


def add_reference(a, b):
    return _as_dtype(np.add(a, b), a.dtype)


def sub_reference(a, b):
    return _as_dtype(np.subtract(a, b), a.dtype)


def mul_reference(a, b):
    return _as_dtype(np.multiply(a, b), a.dtype)


def div_reference(a, b):
    """Float: true division. Integer: C division, truncating toward zero (not numpy's floor)."""
    if np.issubdtype(a.dtype, np.integer):
        a, b = np.broadcast_arrays(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.floor_divide(a, b)
            # floor and trunc differ where the remainder is nonzero and the signs differ
            fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        return _as_dtype(q + fix, a.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _as_dtype(np.divide(a, b), a.dtype)


def pow_reference(x, y):
    """``x ** y`` with the type of ``x`` (ONNX allows the exponent a different type)."""
    with np.errstate(all="ignore"):
        if np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer):
            return _as_dtype(np.power(x.astype(np.int64), y.astype(np.int64)), x.dtype)
        return _as_dtype(np.power(x.astype(np.float64), y.astype(np.float64)), x.dtype)


def sqrt_reference(x):
    with np.errstate(invalid="ignore"):
        return _as_dtype(np.sqrt(x), x.dtype)


def sum_reference(*xs):
    return _as_dtype(functools.reduce(np.add, xs), xs[0].dtype)


# ------------------------------------------------------------------------------------------
# broadcast plans

def broadcast_plan(out_shape, small_shape):
    """Describe ``small`` broadcast onto ``out_shape`` as ``(P, M, Q)`` or return None.

    ``small``, left-padded with ones to the rank of ``out_shape``, must equal ``out_shape`` on
    one contiguous run of axes ``[i, j]`` and be 1 elsewhere; then element ``(p, m, q)`` of the
    output (viewed as ``[P, M, Q]`` with ``P = prod(out[:i])``, ``M = prod(out[i:j+1])``,
    ``Q = prod(out[j+1:])``) pairs with ``small.flat[m]``. A scalar gives ``(1, 1, size)``.

    Parameters
    ----------
    out_shape : tuple of int
        Shape of the result, equal to the shape of the larger operand.
    small_shape : tuple of int
        Shape of the broadcast operand (rank <= len(out_shape)).
    """
    rank = len(out_shape)
    if len(small_shape) > rank:
        return None
    small = (1,) * (rank - len(small_shape)) + tuple(small_shape)
    spans = [k for k in range(rank) if small[k] != 1]
    if not spans:
        return 1, 1, math.prod(out_shape)
    i, j = spans[0], spans[-1]
    if any(small[k] != out_shape[k] for k in range(i, j + 1)):
        return None
    prod = math.prod
    return prod(out_shape[:i]), prod(out_shape[i:j + 1]), prod(out_shape[j + 1:])


def legacy_align(a_ndim, b, broadcast, axis):
    """Opset < 7: reshape ``b`` so numpy broadcasting reproduces the ``broadcast/axis`` rule."""
    if not broadcast or axis is None:
        return b
    axis = axis + a_ndim if axis < 0 else axis
    trailing = a_ndim - axis - b.ndim
    if trailing < 0:
        raise InputError(f"legacy broadcast: B of rank {b.ndim} does not fit at axis {axis}")
    return b.reshape(b.shape + (1,) * trailing)


def binary_float32(op, a, b, n_threads, plans=None):
    """``a (op) b`` for float32 arrays via the kernels, or None if no fast path applies.

    Parameters
    ----------
    op : int
        An ``elementwise`` binary op code.
    a, b : float32 ndarray
        Operands broadcastable to each other.
    n_threads : int
    plans : dict, optional
        Per-node cache {(a.shape, b.shape): layout}: the broadcast analysis is done once per
        pair of shapes, not on every run.

    Returns
    -------
    ndarray (new float32 array of the broadcast shape) or None
    """
    if a.shape == b.shape:
        a = np.asarray(a, order="C")
        b = np.asarray(b, order="C")
        y = np.empty(a.shape, np.float32)
        _ew.binary_same(a.reshape(-1), b.reshape(-1), y.reshape(-1), op, n_threads)
        return y
    key = (a.shape, b.shape)
    layout = plans.get(key, False) if plans is not None else False
    if layout is False:
        layout = _broadcast_layout(a.shape, b.shape)
        if plans is not None:
            if len(plans) >= _MAX_CACHED_SHAPES:   # many input shapes: don't grow forever
                plans.clear()
            plans[key] = layout
    if layout is None:
        return None
    out_shape, small_first, (P, M, Q) = layout
    big, small = (b, a) if small_first else (a, b)
    big = np.asarray(big, order="C")
    small = np.asarray(small, order="C")
    y = np.empty(out_shape, np.float32)
    _ew.binary_bcast(big.reshape(-1), small.reshape(-1), y.reshape(-1), op, P, M, Q,
                     small_first, n_threads)
    return y


def _broadcast_layout(a_shape, b_shape, min_row=None):
    """(out_shape, small_first, (P, M, Q)) when one operand broadcasts onto the other's shape
    along one contiguous run of axes (see :func:`broadcast_plan`), else None. Rows shorter
    than ``min_row`` (default _MIN_ROW: numpy is faster on them from Python) give None."""
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    if out_shape == a_shape:
        small_shape, small_first = b_shape, False
    elif out_shape == b_shape:
        small_shape, small_first = a_shape, True
    else:
        return None
    plan = broadcast_plan(out_shape, small_shape)
    if plan is None or (plan[2] == 1 and plan[1] < (_MIN_ROW if min_row is None else min_row)):
        return None
    return out_shape, small_first, plan


# ------------------------------------------------------------------------------------------
# builders

def _binary_builder(node, op, reference, broadcast, axis):
    if broadcast not in (0, 1):
        raise node.error(f"broadcast must be 0 or 1, got {broadcast}")
    if node.num_inputs != 2:
        raise node.error(f"expects 2 inputs, got {node.num_inputs}")
    # Opset < 7 without broadcast=1 demands equal shapes; checked at run time below.
    legacy = node.opset < 7
    consts = [node.const(0), node.const(1)]
    # Constant operands: make them contiguous float32 once, at load.
    consts = [np.asarray(c, order="C") if c is not None and c.dtype == np.float32 else c
              for c in consts]
    plans = {}

    def run(ctx, a, b):
        a = consts[0] if consts[0] is not None else a
        b = consts[1] if consts[1] is not None else b
        if legacy:
            if not broadcast and a.shape != b.shape:
                raise InputError(f"{node.op_type}: shapes {a.shape} and {b.shape} differ and "
                                 f"broadcast=0 (opset {node.opset})")
            b = legacy_align(a.ndim, b, broadcast, axis)
        if a.dtype == np.float32 and b.dtype == np.float32:
            y = binary_float32(op, a, b, ctx.n_threads, plans)
            if y is not None:
                return y
        return reference(a, b)

    def native(in_shapes, n_threads):
        a_shape, b_shape = (tuple(s) for s in in_shapes)
        if legacy:
            return None
        if a_shape == b_shape:
            return _ew.binary_native(a_shape, op, None, n_threads)
        layout = _broadcast_layout(a_shape, b_shape, min_row=1)
        if layout is None:
            return None
        out_shape, small_first, pmq = layout
        return _ew.binary_native(out_shape, op, (small_first, *pmq), n_threads)
    return natively(run, native)


@register("Add", reference=add_reference)
def Add(node, *, broadcast=0, axis=None, consumed_inputs=None):
    return _binary_builder(node, _ew.ADD, add_reference, broadcast, axis)


@register("Sub", reference=sub_reference)
def Sub(node, *, broadcast=0, axis=None, consumed_inputs=None):
    return _binary_builder(node, _ew.SUB, sub_reference, broadcast, axis)


@register("Mul", reference=mul_reference)
def Mul(node, *, broadcast=0, axis=None, consumed_inputs=None):
    return _binary_builder(node, _ew.MUL, mul_reference, broadcast, axis)


@register("Div", reference=div_reference)
def Div(node, *, broadcast=0, axis=None, consumed_inputs=None):
    return _binary_builder(node, _ew.DIV, div_reference, broadcast, axis)


@register("Pow", reference=pow_reference)
def Pow(node, *, broadcast=0, axis=None):
    return _binary_builder(node, _ew.POW, pow_reference, broadcast, axis)


@register("Sqrt", reference=sqrt_reference)
def Sqrt(node, *, consumed_inputs=None):
    def run(ctx, x):
        if x.dtype != np.float32:
            return sqrt_reference(x)
        x = np.asarray(x, order="C")
        y = np.empty(x.shape, np.float32)
        _ew.unary(x.reshape(-1), y.reshape(-1), _ew.SQRT, 0.0, 0.0, ctx.n_threads)
        return y
    return run


@register("Sum", reference=sum_reference)
def Sum(node, *, consumed_inputs=None):
    if node.num_inputs < 1:
        raise node.error("needs at least one input")
    broadcasting = node.opset >= 8

    def run(ctx, *xs):
        shape0 = xs[0].shape
        if not broadcasting and any(x.shape != shape0 for x in xs):
            raise InputError(f"Sum opset {node.opset}: input shapes differ "
                             f"{[x.shape for x in xs]}")
        if all(x.dtype == np.float32 and x.shape == shape0 for x in xs):
            y = np.array(xs[0], dtype=np.float32, order="C", copy=True)
            flat = y.reshape(-1)
            for x in xs[1:]:
                _ew.accumulate(flat, np.asarray(x, order="C").reshape(-1), ctx.n_threads)
            return y
        return sum_reference(*xs)
    return run
