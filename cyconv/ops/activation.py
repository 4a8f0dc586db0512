"""Activations: Relu, LeakyRelu, PRelu, Sigmoid, Tanh, Elu, Selu, Softplus, HardSigmoid,
HardSwish, Clip.

Each op has a numpy reference (computed in float64 for float inputs, then cast back: the
oracle) and a builder that runs the float32 kernel of :mod:`cyconv.kernels.elementwise`.
Other dtypes (float16/float64, the integer types Relu and Clip accept) run the reference and
keep their dtype.
"""
from __future__ import annotations

import numpy as np

from ..engine.registry import natively, register
from ..errors import InputError
from ..kernels import elementwise as _ew
from .arithmetic import _broadcast_layout, binary_float32

_SELU_ALPHA_V1, _SELU_GAMMA_V1 = 1.673200011253357, 1.0506999492645264
# Opset >= 6 defaults (the float32 values of the exact constants of the SELU paper).
_SELU_ALPHA, _SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


# ------------------------------------------------------------------------------------------
# references

def _in_float64(x, f):
    """Apply ``f`` in float64 for float inputs (integers as they are); return x's dtype."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        y = f(x.astype(np.float64)) if x.dtype.kind == "f" else f(x)
    return np.asarray(y).astype(x.dtype, copy=False)


def relu_reference(x):
    return _in_float64(x, lambda v: np.maximum(v, 0))


def leaky_relu_reference(x, alpha=0.01):
    return _in_float64(x, lambda v: np.where(v < 0, alpha * v, v))


def prelu_reference(x, slope):
    """``x < 0 ? slope * x : x`` with ``slope`` broadcast onto ``x`` (unidirectional)."""
    return _in_float64(x, lambda v: np.where(v < 0, slope.astype(v.dtype) * v, v))


def sigmoid_reference(x):
    return _in_float64(x, lambda v: 1.0 / (1.0 + np.exp(-v)))


def tanh_reference(x):
    return _in_float64(x, np.tanh)


def elu_reference(x, alpha=1.0):
    return _in_float64(x, lambda v: np.where(v > 0, v, alpha * np.expm1(v)))


def selu_reference(x, alpha=_SELU_ALPHA, gamma=_SELU_GAMMA):
    return _in_float64(x, lambda v: gamma * np.where(v > 0, v, alpha * np.expm1(v)))


def softplus_reference(x):
    """``log(exp(x) + 1)``, written as logaddexp(0, x) so large x does not overflow."""
    return _in_float64(x, lambda v: np.logaddexp(0.0, v))


def hard_sigmoid_reference(x, alpha=0.2, beta=0.5):
    return _in_float64(x, lambda v: np.clip(alpha * v + beta, 0.0, 1.0))


def hard_swish_reference(x):
    return _in_float64(x, lambda v: v * np.clip(v / 6.0 + 0.5, 0.0, 1.0))


def clip_reference(x, lo=None, hi=None):
    """``min(max(x, lo), hi)``; a missing bound does not clip; ``lo > hi`` gives ``hi``."""
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo).astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi).astype(x.dtype))
    return np.array(y, dtype=x.dtype, copy=True)


# ------------------------------------------------------------------------------------------
# builders

def _unary(code, reference, a=0.0, b=0.0, **ref_kwargs):
    """A run function: the float32 kernel ``code`` with parameters ``a, b``, else reference."""
    def run(ctx, x):
        if x.dtype != np.float32:
            return reference(x, **ref_kwargs)
        x = np.asarray(x, order="C")
        y = np.empty(x.shape, np.float32)
        _ew.unary(x.reshape(-1), y.reshape(-1), code, a, b, ctx.n_threads)
        return y
    return natively(run, lambda in_shapes, n_threads: _ew.unary_native(in_shapes[0], code, a,
                                                                        b, n_threads))


def _float_attr(node, name, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise node.error(f"attribute {name} must be a float, got {value!r}") from None


@register("Relu", reference=relu_reference)
def Relu(node, *, consumed_inputs=None):
    return _unary(_ew.RELU, relu_reference)


@register("LeakyRelu", reference=leaky_relu_reference)
def LeakyRelu(node, *, alpha=0.01, consumed_inputs=None):
    alpha = _float_attr(node, "alpha", alpha)
    return _unary(_ew.LEAKY_RELU, leaky_relu_reference, alpha, alpha=alpha)


@register("Sigmoid", reference=sigmoid_reference)
def Sigmoid(node, *, consumed_inputs=None):
    return _unary(_ew.SIGMOID, sigmoid_reference)


@register("Tanh", reference=tanh_reference)
def Tanh(node, *, consumed_inputs=None):
    return _unary(_ew.TANH, tanh_reference)


@register("Elu", reference=elu_reference)
def Elu(node, *, alpha=1.0, consumed_inputs=None):
    alpha = _float_attr(node, "alpha", alpha)
    return _unary(_ew.ELU, elu_reference, alpha, alpha=alpha)


@register("Selu", reference=selu_reference)
def Selu(node, *, alpha=None, gamma=None, consumed_inputs=None):
    # Opset 1 had rounded defaults; opset 6 switched to the paper's constants.
    old = node.opset < 6
    alpha = _float_attr(node, "alpha", (_SELU_ALPHA_V1 if old else _SELU_ALPHA)
                        if alpha is None else alpha)
    gamma = _float_attr(node, "gamma", (_SELU_GAMMA_V1 if old else _SELU_GAMMA)
                        if gamma is None else gamma)
    return _unary(_ew.SELU, selu_reference, alpha, gamma, alpha=alpha, gamma=gamma)


@register("Softplus", reference=softplus_reference)
def Softplus(node):
    return _unary(_ew.SOFTPLUS, softplus_reference)


@register("HardSigmoid", reference=hard_sigmoid_reference)
def HardSigmoid(node, *, alpha=0.2, beta=0.5, consumed_inputs=None):
    alpha = _float_attr(node, "alpha", alpha)
    beta = _float_attr(node, "beta", beta)
    return _unary(_ew.HARD_SIGMOID, hard_sigmoid_reference, alpha, beta, alpha=alpha, beta=beta)


@register("HardSwish", reference=hard_swish_reference)
def HardSwish(node):
    return _unary(_ew.HARD_SWISH, hard_swish_reference)


@register("PRelu", reference=prelu_reference)
def PRelu(node, *, consumed_inputs=None):
    if node.num_inputs != 2:
        raise node.error(f"expects 2 inputs (X, slope), got {node.num_inputs}")
    const_slope = node.const(1)
    if const_slope is not None and const_slope.dtype == np.float32:
        const_slope = np.asarray(const_slope, order="C")

    def run(ctx, x, slope):
        if const_slope is not None:
            slope = const_slope
        if node.opset < 7 and slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] \
                and slope.shape[0] != 1:
            # Opset 6 and earlier: a 1-D slope of length C is per channel (axis 1).
            slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
        try:
            if np.broadcast_shapes(x.shape, slope.shape) != x.shape:
                raise ValueError
        except ValueError:
            raise InputError(f"PRelu: slope {slope.shape} does not broadcast onto X "
                             f"{x.shape}") from None
        if x.dtype == np.float32 and slope.dtype == np.float32:
            y = binary_float32(_ew.PRELU, x, slope, ctx.n_threads)
            if y is not None:
                return y
        return prelu_reference(x, slope)

    def native(in_shapes, n_threads):
        # a constant slope broadcast along one run of axes (per channel, per feature)
        x_shape = tuple(in_shapes[0])
        if const_slope is None or const_slope.dtype != np.float32 or node.opset < 7:
            return None
        if const_slope.shape == x_shape:
            return _ew.binary_native(x_shape, _ew.PRELU, None, n_threads)
        layout = _broadcast_layout(x_shape, const_slope.shape, min_row=1)
        if layout is None or layout[1]:           # the slope must be the small operand
            return None
        return _ew.binary_native(x_shape, _ew.PRELU, (False, *layout[2]), n_threads)
    return natively(run, native)


def _scalar_bound(value, name):
    arr = np.asarray(value)
    if arr.size != 1:
        raise InputError(f"Clip: {name} must be a scalar, got shape {arr.shape}")
    return arr.reshape(())


@register("Clip", reference=clip_reference)
def Clip(node, *, min=None, max=None, consumed_inputs=None):  # noqa: A002 (ONNX names)
    if node.opset < 11:
        if node.num_inputs != 1:
            raise node.error(f"opset {node.opset} takes 1 input, got {node.num_inputs}")
        lo = None if min is None else _float_attr(node, "min", min)
        hi = None if max is None else _float_attr(node, "max", max)
        if node.opset >= 6:           # opset 6 gave the attributes +-FLT_MAX defaults
            lo = -3.4028234663852886e38 if lo is None else lo
            hi = 3.4028234663852886e38 if hi is None else hi
        const_bounds = (lo, hi)
    else:
        if min is not None or max is not None:
            raise node.error("opset >= 11 takes min/max as inputs, not attributes")
        if node.num_inputs > 3:
            raise node.error(f"takes at most 3 inputs, got {node.num_inputs}")
        known = [i >= node.num_inputs or node.const(i) is not None for i in (1, 2)]
        const_bounds = None
        if all(known):
            const_bounds = tuple(None if node.const(i) is None
                                 else _scalar_bound(node.const(i), ("min", "max")[i - 1])
                                 for i in (1, 2))

    def run(ctx, x, lo=None, hi=None):
        if const_bounds is not None:
            lo, hi = const_bounds
        else:
            lo = None if lo is None else _scalar_bound(lo, "min")
            hi = None if hi is None else _scalar_bound(hi, "max")
        if x.dtype != np.float32:
            return clip_reference(x, lo, hi)
        # float32 bounds: infinities stand in for an absent bound
        a = np.float32(-np.inf if lo is None else lo)
        b = np.float32(np.inf if hi is None else hi)
        x = np.asarray(x, order="C")
        y = np.empty(x.shape, np.float32)
        _ew.unary(x.reshape(-1), y.reshape(-1), _ew.CLIP, a, b, ctx.n_threads)
        return y

    def native(in_shapes, n_threads):
        if const_bounds is None:
            return None
        lo, hi = const_bounds
        return _ew.unary_native(in_shapes[0], _ew.CLIP, np.float32(-np.inf if lo is None else lo),
                                np.float32(np.inf if hi is None else hi), n_threads)
    return natively(run, native)
