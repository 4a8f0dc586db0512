"""Cheap element-wise ops of exported graphs: comparisons, logic, selection, unary math.

Comparisons, selection and unary math that exported detection/OCR graphs use to build masks,
clamp boxes and compute shapes (Where(Equal(shape, -1), ...), Floor(Div(...)), ...). They sit
off the hot path, so numpy is the implementation. Broadcasting is numpy's, which is ONNX's
multidirectional broadcasting (opset 7+; opset 6 Min/Max/Mean required equal shapes, a subset).
"""
from __future__ import annotations

import numpy as np

from ..engine.registry import register
from .shape import run_error


def where_reference(condition, x, y):
    """``x`` where ``condition`` else ``y``, broadcast together."""
    return np.where(condition, x, y)


@register("Where", reference=where_reference)
def Where(node):
    def run(ctx, condition, x, y):
        if x.dtype != y.dtype:
            raise run_error(node, f"X and Y have different dtypes {x.dtype} and {y.dtype}")
        try:
            return where_reference(condition.astype(bool, copy=False), x, y)
        except ValueError:
            raise run_error(node, f"cannot broadcast {condition.shape}, {x.shape}, {y.shape}") from None
    return run


def _binary_builder(name, fn, min_opset):
    def build(node):
        def run(ctx, a, b):
            if a.dtype != b.dtype:
                raise run_error(node, f"inputs have different dtypes {a.dtype} and {b.dtype}")
            try:
                return np.asarray(fn(a, b)).astype(np.bool_, copy=False)
            except ValueError:
                raise run_error(node, f"cannot broadcast {a.shape} and {b.shape}") from None
        return run
    build.__name__ = build.__qualname__ = name
    # Opsets before 7 carried legacy broadcast/axis attributes; exporters write 7+.
    register(name, reference=fn, min_opset=min_opset)(build)
    return build


Equal = _binary_builder("Equal", np.equal, 7)
Less = _binary_builder("Less", np.less, 7)
Greater = _binary_builder("Greater", np.greater, 7)
LessOrEqual = _binary_builder("LessOrEqual", np.less_equal, 12)
GreaterOrEqual = _binary_builder("GreaterOrEqual", np.greater_equal, 12)
And = _binary_builder("And", np.logical_and, 7)
Or = _binary_builder("Or", np.logical_or, 7)


def _unary_builder(name, fn, kinds):
    """Builder of a dtype-preserving unary op accepting dtype kinds ``kinds`` ("f", "i", ...)."""
    def build(node):
        def run(ctx, x):
            if x.dtype.kind not in kinds:
                raise run_error(node, f"does not accept {x.dtype} input")
            with np.errstate(all="ignore"):     # log(0) = -inf, exp overflow = inf, as C
                return np.asarray(fn(x)).astype(x.dtype, copy=False)
        return run
    build.__name__ = build.__qualname__ = name
    # Opset 1 versions carried the obsolete `consumed_inputs` attribute; exporters write 6+.
    register(name, reference=fn, min_opset=6 if name != "Not" else 1)(build)
    return build


Not = _unary_builder("Not", np.logical_not, "b")
Neg = _unary_builder("Neg", np.negative, "fi")
Abs = _unary_builder("Abs", np.abs, "fiu")
Exp = _unary_builder("Exp", np.exp, "f")
Log = _unary_builder("Log", np.log, "f")
Floor = _unary_builder("Floor", np.floor, "f")
Ceil = _unary_builder("Ceil", np.ceil, "f")


def _variadic_builder(name, fn):
    def build(node):
        if node.num_inputs < 1:
            raise node.error("needs at least one input")

        def run(ctx, *xs):
            if any(x.dtype != xs[0].dtype for x in xs):
                raise run_error(node, "inputs must share one dtype")
            try:
                return np.asarray(fn(xs)).astype(xs[0].dtype, copy=False)
            except ValueError:
                raise run_error(node, f"cannot broadcast {[x.shape for x in xs]}") from None
        return run
    build.__name__ = build.__qualname__ = name
    register(name, reference=fn, min_opset=6)(build)
    return build


def _fold(ufunc):
    def f(xs):
        out = np.asarray(xs[0]).copy() if len(xs) == 1 else ufunc(xs[0], xs[1])
        for x in xs[2:]:
            out = ufunc(out, x)
        return out
    return f


Min = _variadic_builder("Min", _fold(np.minimum))
Max = _variadic_builder("Max", _fold(np.maximum))
Mean = _variadic_builder("Mean", lambda xs: _fold(np.add)(xs) / len(xs))
