"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp, ArgMax/ArgMin.

Numpy is reference and implementation (these ops sit in heads and pooling-like tails of CNNs,
never on the convolution hot path). Axis lists follow ONNX: ``None`` reduces every axis, an
empty tuple reduces none (``noop_with_empty_axes``), which numpy spells ``axis=()``; the pre-
and post-maps of each reduction (``|x|``, ``x**2``, ``sqrt``, ``log``) still apply then, as in
ONNX's reference.

Dtypes: the output has the input's dtype. float16 accumulates in float32, integers in
(u)int64, then the result is cast back (wrapping like C on overflow).
"""
from __future__ import annotations

import math

import numpy as np

from ..engine.registry import consumes, natively, register
from ..kernels import pool as _kp
from .shape import attr_int, attr_ints, int_list, norm_axes, norm_axis, run_error


def _acc_dtype(dtype: np.dtype):
    if dtype == np.float16:
        return np.float32
    if dtype.kind == "i":
        return np.int64
    if dtype.kind == "u":
        return np.uint64
    return dtype


def _extreme(dtype: np.dtype, largest: bool):
    """The identity of max (``largest=False``) or min (``largest=True``) over ``dtype``."""
    if dtype.kind == "b":
        return largest
    if dtype.kind == "f":
        return np.inf if largest else -np.inf
    info = np.iinfo(dtype)
    return info.max if largest else info.min


def _sum(x, axes, keepdims):
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=_acc_dtype(x.dtype))


def _mean(x, axes, keepdims):
    s = _sum(x, axes, keepdims)
    count = x.size // max(s.size, 1) if x.size else 0
    if x.dtype.kind in "iu":
        # Integer mean truncates toward zero, as C integer division (ONNX Runtime).
        if count == 0:
            return np.zeros_like(s)
        return np.sign(s) * (np.abs(s) // count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / s.dtype.type(count) if count else s * np.nan


def _log_sum_exp(x, axes, keepdims):
    # Shift by the max so exp() cannot overflow; an all -inf (or empty) slice stays -inf.
    acc = x.astype(_acc_dtype(x.dtype), copy=False)
    m = np.maximum.reduce(acc, axis=axes, keepdims=True, initial=-np.inf)
    shift = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(acc - shift), axis=axes, keepdims=True)) + shift
    if not keepdims:
        out = np.squeeze(out, axis=axes if axes is not None else tuple(range(x.ndim)))
    return out


_REDUCERS = {
    "Sum": _sum,
    "Mean": _mean,
    "Max": lambda x, a, k: np.maximum.reduce(x, axis=a, keepdims=k,
                                             initial=_extreme(x.dtype, False)),
    "Min": lambda x, a, k: np.minimum.reduce(x, axis=a, keepdims=k,
                                             initial=_extreme(x.dtype, True)),
    "Prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=_acc_dtype(x.dtype)),
    "L1": lambda x, a, k: _sum(np.abs(x), a, k),
    "L2": lambda x, a, k: np.sqrt(_sum(np.square(x.astype(_acc_dtype(x.dtype))), a, k)),
    "SumSquare": lambda x, a, k: _sum(np.square(x.astype(_acc_dtype(x.dtype))), a, k),
    "LogSum": lambda x, a, k: np.log(_sum(x, a, k)),
    "LogSumExp": _log_sum_exp,
}


def reduce_reference(kind: str, x: np.ndarray, axes=None, keepdims: bool = True) -> np.ndarray:
    """Reduce ``x`` over ``axes`` with the ONNX reduction ``kind`` ("Sum", "Mean", "L2", ...).

    Parameters
    ----------
    kind : str
        Suffix of the ONNX op name (``ReduceSum`` -> ``"Sum"``).
    x : ndarray, shape (d0, ..., d{r-1})
    axes : None | sequence of int
        Non-negative axes; ``None`` reduces all, ``()`` none.
    keepdims : bool
        Keep reduced axes as size 1.

    Returns
    -------
    ndarray of ``x.dtype``
    """
    if axes is not None:
        axes = tuple(axes)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = _REDUCERS[kind](x, axes, bool(keepdims))
        return np.asarray(out).astype(x.dtype, copy=False)




def _trailing_start(axes, rank: int):
    """k when ``axes`` (normalised, or None for all) are exactly k, k+1, ..., rank-1 (a
    reduction over each block of the trailing axes), else None; an empty tuple (reduce
    nothing) is None."""
    if axes is None:
        return 0
    axes = sorted(set(axes))
    if not axes or axes != list(range(axes[0], rank)):
        return None
    return axes[0]


def _reduced_shape(shape, start: int, keepdims) -> tuple:
    return tuple(shape[:start]) + ((1,) * (len(shape) - start) if keepdims else ())


def _make_reduce(kind: str, axes_input_from: int):
    """Builder of ``Reduce<kind>``: ``axes`` is an attribute before ``axes_input_from``, then
    an input."""

    def build(node, *, axes=None, keepdims=1, noop_with_empty_axes=None):
        keepdims = attr_int(node, "keepdims", keepdims)
        attr_axes = attr_ints(node, "axes", axes)
        if attr_axes is not None and node.opset >= axes_input_from:
            raise node.error(f"'axes' is an input from opset {axes_input_from}, not an attribute")
        if attr_axes is not None and node.opset < 11 and any(a < 0 for a in attr_axes):
            raise node.error(f"negative axes {attr_axes} need opset 11")
        if noop_with_empty_axes is not None and node.opset < axes_input_from:
            raise node.error(f"attribute 'noop_with_empty_axes' needs opset {axes_input_from}")
        noop = bool(attr_int(node, "noop_with_empty_axes", noop_with_empty_axes or 0))
        # A float32 mean over trailing axes runs the global-pool kernel. Not Max: the
        # kernel's max skips a NaN, where ONNX's ReduceMax (numpy) returns it.
        pooled = kind == "Mean"

        def axes_of(axes_in, rank):
            ax = int_list(node, axes_in, "axes") if axes_in is not None else attr_axes
            if not ax:
                # Missing or empty axes: reduce everything, or nothing with noop_with_empty_axes.
                return () if noop else None
            return norm_axes(node, ax, rank)

        def run(ctx, x, axes_in=None):
            ax = axes_of(axes_in, x.ndim)
            if kind in ("Max", "Min") and x.dtype.kind == "b" and node.opset < 20:
                raise run_error(node, f"bool input needs opset 20 (model has {node.opset})")
            if pooled and x.dtype == np.float32 and x.size:
                start = _trailing_start(ax, x.ndim)
                if start is not None:
                    y = np.empty(_reduced_shape(x.shape, start, keepdims), np.float32)
                    _kp.global_pool(np.ascontiguousarray(x).reshape(-1, math.prod(
                        x.shape[start:])), y.reshape(-1), False, ctx.n_threads)
                    return y
            return reduce_reference(kind, x, ax, keepdims)

        if not pooled or (attr_axes is None and node.num_inputs > 1 and node.const(1) is None):
            return run
        # Axes known at load: a mean over trailing axes is a global pool over
        # prod(shape[:start]) planes of prod(shape[start:]) values (the kernel of
        # GlobalAveragePool). PyTorch's dynamo exporter writes adaptive_avg_pool2d(x, 1) as
        # ReduceMean(x, axes=[-1, -2]), so without this, a whole model would leave the
        # native plan for its last pooling step.
        load_axes = node.const(1) if attr_axes is None and node.num_inputs > 1 else None
        captured = run if load_axes is None else consumes(
            lambda ctx, x, axes_in=None: run(ctx, x, load_axes), 1)

        def native(in_shapes, n_threads):
            shape = tuple(in_shapes[0])
            start = _trailing_start(axes_of(load_axes, len(shape)), len(shape))
            if start is None or math.prod(shape) == 0:
                return None
            op = _kp.global_pool_native(math.prod(shape[:start]), math.prod(shape[start:]),
                                        False, n_threads)
            op.out_shapes = (_reduced_shape(shape, start, keepdims),)
            return op

        return natively(captured, native)

    name = "Reduce" + kind
    build.__name__ = build.__qualname__ = name
    register(name, reference=lambda x, axes=None, keepdims=True: reduce_reference(
        kind, x, axes, keepdims))(build)
    return build


ReduceSum = _make_reduce("Sum", 13)
ReduceMean = _make_reduce("Mean", 18)
ReduceMax = _make_reduce("Max", 18)
ReduceMin = _make_reduce("Min", 18)
ReduceProd = _make_reduce("Prod", 18)
ReduceL1 = _make_reduce("L1", 18)
ReduceL2 = _make_reduce("L2", 18)
ReduceSumSquare = _make_reduce("SumSquare", 18)
ReduceLogSum = _make_reduce("LogSum", 18)
ReduceLogSumExp = _make_reduce("LogSumExp", 18)


# ----------------------------------------------------------------------------- ArgMax / ArgMin

def arg_reference(x: np.ndarray, axis: int = 0, keepdims: bool = True,
                  select_last_index: bool = False, largest: bool = True) -> np.ndarray:
    """Index (int64) of the max (``largest``) or min along ``axis``; ties go to the first
    index unless ``select_last_index``."""
    f = np.argmax if largest else np.argmin
    if select_last_index:
        # Search the reversed axis, then map the index back.
        idx = x.shape[axis] - 1 - f(np.flip(x, axis=axis), axis=axis)
    else:
        idx = f(x, axis=axis)
    idx = idx.astype(np.int64)
    return np.expand_dims(idx, axis) if keepdims else idx


def _make_arg(largest: bool):
    def build(node, *, axis=0, keepdims=1, select_last_index=0):
        axis = attr_int(node, "axis", axis)
        keepdims = attr_int(node, "keepdims", keepdims)
        last = attr_int(node, "select_last_index", select_last_index)
        if last and node.opset < 12:
            raise node.error("select_last_index needs opset 12")
        if axis < 0 and node.opset < 11:
            raise node.error(f"negative axis {axis} needs opset 11")

        def run(ctx, x):
            ax = norm_axis(node, axis, x.ndim)
            if x.shape[ax] == 0:
                raise run_error(node, f"cannot take the arg{'max' if largest else 'min'} "
                                      f"of an empty axis {ax}")
            return arg_reference(x, ax, keepdims, last, largest)

        return run

    name = "ArgMax" if largest else "ArgMin"
    build.__name__ = build.__qualname__ = name
    register(name, reference=lambda x, axis=0, keepdims=True, select_last_index=False:
             arg_reference(x, axis, keepdims, select_last_index, largest))(build)
    return build


ArgMax = _make_arg(True)
ArgMin = _make_arg(False)
