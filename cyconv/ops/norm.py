"""BatchNormalization (inference) and LRN.

BatchNormalization, per channel c (the normalised axis is 1):

    y = gamma * (x - mean) / sqrt(var + eps) + beta  =  x * scale[c] + shift[c]
    scale = gamma / sqrt(var + eps),  shift = beta - mean * scale

``scale`` and ``shift`` are computed in float64 once at load when the four parameters are
constants (the usual case), else per run. Opset < 9 ``spatial=0`` means per-activation
parameters of shape ``[C, D1, ..., Dn]``; the kernel then treats ``C * D1 * ... * Dn`` as the
channel axis.

Opset >= 14 ``training_mode=1`` normalises with the batch statistics (mean and population
variance over every axis but 1) and also returns the updated running statistics
``running = input * momentum + batch * (1 - momentum)``; it runs in numpy (training is not a
hot path). The opset < 14 training outputs (saved mean/variance) are rejected at load.

LRN (across channels, x of shape [N, C, D1, ..., Dk]):

    y[n, c] = x[n, c] / (bias + alpha / size * sum_{c' in window(c)} x[n, c']^2) ^ beta
    window(c) = [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)]  clipped to [0, C)
"""
from __future__ import annotations

import math

import numpy as np

from ..engine.registry import natively, register
from ..errors import InputError
from ..kernels import norm as _kn


# ------------------------------------------------------------------------------------------
# references

def _param_shape(x, spatial):
    return (-1,) + (1,) * (x.ndim - 2) if spatial else x.shape[1:]


def batch_norm_reference(x, scale, bias, mean, var, epsilon=1e-5, spatial=1):
    """Inference BatchNormalization of ``x[N, C, *spatial]`` in float64, cast to x's dtype."""
    shape = _param_shape(x, spatial)
    p = [np.asarray(a, np.float64).reshape(shape) for a in (scale, bias, mean, var)]
    g, b, m, v = p
    y = g * (x.astype(np.float64) - m) / np.sqrt(v + epsilon) + b
    return y.astype(x.dtype)


def batch_norm_training_reference(x, scale, bias, mean, var, epsilon=1e-5, momentum=0.9):
    """Opset >= 14 training mode: ``(y, running_mean, running_var)`` from batch statistics."""
    axes = tuple(a for a in range(x.ndim) if a != 1)
    xd = x.astype(np.float64)
    batch_mean = xd.mean(axis=axes)
    batch_var = xd.var(axis=axes)
    y = batch_norm_reference(x, scale, bias, batch_mean, batch_var, epsilon)
    running_mean = np.asarray(mean, np.float64) * momentum + batch_mean * (1 - momentum)
    running_var = np.asarray(var, np.float64) * momentum + batch_var * (1 - momentum)
    return y, running_mean.astype(mean.dtype), running_var.astype(var.dtype)


def lrn_reference(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    """LRN across the channel axis of ``x[N, C, ...]``, in float64 (see module docstring)."""
    xd = x.astype(np.float64)
    sq = xd * xd
    channels = x.shape[1]
    sums = np.zeros_like(xd)
    for c in range(channels):
        lo = max(0, c - (size - 1) // 2)
        hi = min(channels - 1, c + math.ceil((size - 1) / 2))
        sums[:, c] = sq[:, lo:hi + 1].sum(axis=1)
    return (xd / (bias + alpha / size * sums) ** beta).astype(x.dtype)


# ------------------------------------------------------------------------------------------
# builders

def _affine_params(scale, bias, mean, var, epsilon):
    """float32 ``(scale, shift)`` flat vectors of the folded affine map, computed in float64."""
    g, b, m, v = (np.asarray(a, np.float64).reshape(-1) for a in (scale, bias, mean, var))
    s = g / np.sqrt(v + epsilon)
    return (np.asarray(s, np.float32, order="C"),
            np.asarray(b - m * s, np.float32, order="C"))


@register("BatchNormalization", reference=batch_norm_reference)
def BatchNormalization(node, *, epsilon=1e-5, momentum=0.9, spatial=1, is_test=0,
                       training_mode=0, consumed_inputs=None):
    if training_mode not in (0, 1):
        raise node.error(f"training_mode must be 0 or 1, got {training_mode}")
    if node.num_inputs != 5:
        raise node.error(f"expects 5 inputs (X, scale, B, mean, var), got {node.num_inputs}")
    if spatial not in (0, 1):
        raise node.error(f"spatial must be 0 or 1, got {spatial}")
    epsilon, momentum = float(epsilon), float(momentum)
    if not epsilon >= 0.0:
        raise node.error(f"epsilon must be >= 0, got {epsilon}")
    if training_mode:
        if node.num_outputs > 3:
            raise node.error(f"training mode has at most 3 outputs, got {node.num_outputs}")
        return _training_run(epsilon, momentum, node.num_outputs)
    if node.num_outputs != 1:
        raise node.error(f"{node.num_outputs} outputs requested: the mean/variance outputs "
                         f"of opset {node.opset} exist only in training, which cyconv supports "
                         f"from opset 14 (training_mode=1) only")
    spatial = bool(spatial) if node.opset < 9 else True
    params = [node.const(i) for i in range(1, 5)]
    folded = _affine_params(*params, epsilon) if all(p is not None for p in params) else None
    if folded is not None and spatial and not (folded[0].size == params[0].size ==
                                               params[1].size == params[2].size ==
                                               params[3].size):
        raise node.error(f"scale/B/mean/var sizes differ: {[p.shape for p in params]}")

    def run(ctx, x, scale, bias, mean, var):
        if x.ndim < 2:
            raise InputError(f"BatchNormalization: input of rank {x.ndim}, expects [N, C, ...]")
        per_channel = x.shape[1] if spatial else math.prod(x.shape[1:])
        for name, p in zip(("scale", "B", "mean", "var"), (scale, bias, mean, var)):
            if p.size != per_channel:
                raise InputError(f"BatchNormalization: {name} has {p.size} values, "
                                 f"input needs {per_channel}")
        if x.dtype != np.float32:
            return batch_norm_reference(x, scale, bias, mean, var, epsilon, spatial)
        s, t = folded if folded is not None else _affine_params(scale, bias, mean, var, epsilon)
        x = np.asarray(x, order="C")
        y = np.empty(x.shape, np.float32)
        q = math.prod(x.shape[2:]) if spatial else 1
        _kn.channel_affine(x.reshape(-1), s, t, y.reshape(-1), x.shape[0], per_channel, q,
                           ctx.n_threads)
        return y

    def native(in_shapes, n_threads):
        shape = tuple(in_shapes[0])
        if folded is None or len(shape) < 2 or math.prod(shape) == 0:
            return None
        per_channel = shape[1] if spatial else math.prod(shape[1:])
        if folded[0].size != per_channel:
            return None
        return _kn.channel_affine_native(shape, folded[0], folded[1], shape[0], per_channel,
                                         math.prod(shape[2:]) if spatial else 1, n_threads)
    return natively(run, native)


def _training_run(epsilon, momentum, num_outputs):
    def run(ctx, x, scale, bias, mean, var):
        outs = batch_norm_training_reference(x, scale, bias, mean, var, epsilon, momentum)
        return outs[:num_outputs] if num_outputs > 1 else outs[0]
    return run


@register("LRN", reference=lrn_reference)
def LRN(node, *, size=None, alpha=1e-4, beta=0.75, bias=1.0):
    if size is None:
        raise node.error("attribute size is required")
    if int(size) != size or size < 1:
        raise node.error(f"size must be a positive int, got {size}")
    size, alpha, beta, bias = int(size), float(alpha), float(beta), float(bias)

    def run(ctx, x):
        if x.ndim < 3:
            raise InputError(f"LRN: input of rank {x.ndim}, expects [N, C, D1, ...]")
        if x.dtype != np.float32:
            return lrn_reference(x, size, alpha, beta, bias)
        x = np.asarray(x, order="C")
        y = np.empty(x.shape, np.float32)
        n, c = x.shape[:2]
        _kn.lrn(x.reshape(n, c, -1), y.reshape(n, c, -1), size, alpha, beta, bias,
                ctx.n_threads)
        return y
    return run
