"""Statistics normalisations: LayerNormalization, InstanceNormalization, GroupNormalization,
RMSNormalization.

All four standardise *rows* of a 2-D view of the input and then apply an affine map:

    row r of x2[R, L]:   y = (x - mean_r) / sqrt(var_r + eps)        (population variance)
    RMS:                 y = x / sqrt(mean_r(x^2) + eps)

=========================  =========================  ================================
op                          rows R x length L          affine (scale, bias)
=========================  =========================  ================================
LayerNormalization(axis)    prod(d[:axis]) x           broadcast onto d[axis:]
                            prod(d[axis:])
InstanceNormalization       N*C x prod(spatial)        per channel C
GroupNormalization(G)       N*G x (C/G)*prod(spatial)  opset 18: per group G,
                                                       opset 21: per channel C
RMSNormalization(axis)      as LayerNormalization      scale only
=========================  =========================  ================================

(x of shape [N, C, *spatial] = d.) ``stash_type`` selects the precision of the statistics
(1: float32, 11: float64); LayerNormalization's optional outputs Mean and InvStdDev have that
type and shape ``d[:axis] + [1] * (rank - axis)``.

The references compute in float64 and cast back (the oracle). The run path for float32
inputs stays in float32 numpy: blocks of rows of ~32K elements, each through mean, centring,
row dot product, scaling and the affine map while it is in cache (a ViT-B/16 LayerNorm
[8, 197, 768] takes ~2-3 ms on one core). Other dtypes and stash types run the reference.
"""
from __future__ import annotations

import numpy as np

from ..engine.registry import register
from ..errors import InputError

_STASH = {1: np.float32, 11: np.float64}  # ONNX TensorProto codes -> numpy types


# ------------------------------------------------------------------------------------------
# references

def _stats64(x2, epsilon, rms=False):
    """float64 ``(mean[R, 1], inv_std[R, 1])`` of the rows of ``x2[R, L]``."""
    xd = x2.astype(np.float64)
    mean = np.zeros((xd.shape[0], 1)) if rms else xd.mean(axis=1, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=1, keepdims=True)
    return mean, 1.0 / np.sqrt(var + epsilon)


def _rows(x, axis):
    """``(R, L)`` of the row view that normalises ``x`` over ``d[axis:]``."""
    return int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:],
                                                                       dtype=np.int64))


def layer_norm_reference(x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1):
    """LayerNormalization of ``x`` over ``d[axis:]``: ``(Y, Mean, InvStdDev)``.

    ``scale`` and ``bias`` broadcast onto ``x`` (usually of shape ``d[axis:]``); Mean and
    InvStdDev have shape ``d[:axis] + [1] * (rank - axis)`` and the stash type's dtype.
    """
    axis = axis + x.ndim if axis < 0 else axis
    x2 = x.reshape(_rows(x, axis))
    mean, inv = _stats64(x2, epsilon)
    y = ((x2 - mean) * inv).reshape(x.shape) * np.asarray(scale, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    u = _STASH[stash_type]
    return y.astype(x.dtype), mean.reshape(stat_shape).astype(u), inv.reshape(stat_shape).astype(u)


def rms_norm_reference(x, scale, axis=-1, epsilon=1e-5, stash_type=1):
    """RMSNormalization of ``x`` over ``d[axis:]``: ``x / sqrt(mean(x^2) + eps) * scale``."""
    axis = axis + x.ndim if axis < 0 else axis
    x2 = x.reshape(_rows(x, axis))
    _, inv = _stats64(x2, epsilon, rms=True)
    y = (x2 * inv).reshape(x.shape) * np.asarray(scale, np.float64)
    return y.astype(x.dtype)


def instance_norm_reference(x, scale, bias, epsilon=1e-5):
    """InstanceNormalization of ``x[N, C, *spatial]`` with per-channel ``scale``, ``bias``."""
    n, c = x.shape[:2]
    mean, inv = _stats64(x.reshape(n * c, -1), epsilon)
    y = (x.reshape(n * c, -1) - mean) * inv
    p = (n, c, -1)
    y = y.reshape(p) * np.asarray(scale, np.float64).reshape(1, c, 1) \
        + np.asarray(bias, np.float64).reshape(1, c, 1)
    return y.reshape(x.shape).astype(x.dtype)


def group_norm_reference(x, scale, bias, num_groups, epsilon=1e-5, per_channel=True):
    """GroupNormalization of ``x[N, C, *spatial]`` in ``num_groups`` groups of channels.

    ``per_channel``: scale/bias have C values (opset 21); else one per group (opset 18).
    """
    n, c = x.shape[:2]
    g = num_groups
    mean, inv = _stats64(x.reshape(n * g, -1), epsilon)
    y = ((x.reshape(n * g, -1) - mean) * inv).reshape(n, c, -1)
    s, b = (np.asarray(v, np.float64).reshape(-1) for v in (scale, bias))
    if not per_channel:
        s, b = np.repeat(s, c // g), np.repeat(b, c // g)
    y = y * s.reshape(1, c, 1) + b.reshape(1, c, 1)
    return y.reshape(x.shape).astype(x.dtype)


# ------------------------------------------------------------------------------------------
# float32 run path

_BLOCK = 32768  # elements per block of rows: the block's passes stay in L2


def _row_dot(y):
    """``sum_j y[i, j]^2`` per row: numpy >= 2's vectorised vecdot, else einsum (2.5x slower)."""
    vecdot = getattr(np, "vecdot", None)
    return vecdot(y, y) if vecdot is not None else np.einsum("ij,ij->i", y, y)


def _standardize32(x2, epsilon, rms=False, scale=None, bias=None):
    """float32 rows of ``x2[R, L]`` standardised into a new array; ``(y, mean[R, 1], inv[R, 1])``.

    Mean by numpy's pairwise sum, centred second moment by a row dot product (no temporary
    of the squares); both in float32 as ONNX Runtime's stash_type=1. ``scale`` / ``bias``: optional
    float32 vectors of length L applied in the same pass. Rows go by blocks of ~32K elements
    so the five passes over a block hit cache (ViT-B LayerNorm [8, 197, 768]: 3x faster).
    """
    rows, length = x2.shape
    y = np.empty((rows, length), np.float32)
    mean = np.zeros((rows, 1), np.float32)
    inv = np.empty((rows, 1), np.float32)
    step = max(1, _BLOCK // max(length, 1))
    for r0 in range(0, rows, step):
        r1 = min(r0 + step, rows)
        yb, mb = y[r0:r1], mean[r0:r1]
        if rms:
            yb[...] = x2[r0:r1]
        else:
            np.mean(x2[r0:r1], axis=1, keepdims=True, dtype=np.float32, out=mb)
            np.subtract(x2[r0:r1], mb, out=yb, dtype=np.float32)
        var = _row_dot(yb)[:, None] / np.float32(length)
        ib = inv[r0:r1]
        np.sqrt(var + np.float32(epsilon), out=ib)
        np.divide(np.float32(1.0), ib, out=ib)
        yb *= ib
        if scale is not None:
            yb *= scale
        if bias is not None:
            yb += bias
    return y, mean, inv


def _trailing_vector(p, tail):
    """``p`` flattened when it is exactly one value per position of ``tail`` (else None)."""
    p = np.asarray(p)
    dims = list(p.shape)
    while dims and dims[0] == 1 and len(dims) > len(tail):
        dims.pop(0)
    if tuple(dims) == tuple(tail) or (p.size == 1 and all(t == 1 for t in tail)):
        return p.reshape(-1)
    return None


def _fused_params(tail, scale, bias):
    """``(scale, bias)`` as float32 vectors over the normalised positions ``tail`` when both
    fit (bias may be None), for the fused pass; else ``(None, None)``."""
    s = _trailing_vector(scale, tail)
    b = _trailing_vector(bias, tail) if bias is not None else None
    if s is None or s.dtype != np.float32 or (bias is not None and
                                               (b is None or b.dtype != np.float32)):
        return None, None
    return s, b


def _affine_rows(y2, x_shape, scale, bias):
    """``y * scale + bias`` with the parameters broadcast onto ``x_shape`` (the general
    case: parameters that are not one float32 value per normalised position)."""
    y = y2.reshape(x_shape) * scale
    if bias is not None:
        y = y + bias
    return y.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------
# builders

def _epsilon(node, epsilon):
    try:
        epsilon = float(epsilon)
    except (TypeError, ValueError):
        raise node.error(f"epsilon must be a float, got {epsilon!r}") from None
    if not epsilon >= 0.0:
        raise node.error(f"epsilon must be >= 0, got {epsilon}")
    return epsilon


def _int_attr(node, name, value):
    if isinstance(value, (bool, np.bool_)) or int(value) != value:
        raise node.error(f"{name} must be an int, got {value!r}")
    return int(value)


def _stash(node, stash_type):
    stash_type = _int_attr(node, "stash_type", stash_type)
    if stash_type not in _STASH:
        raise node.error(f"stash_type {stash_type} is not supported (1: float, 11: double)")
    return stash_type


def _run_axis(node, axis, x):
    if x.ndim == 0:
        raise InputError(f"{node.op_type} node {node.name!r}: scalar input, expects rank >= 1")
    if not -x.ndim <= axis < x.ndim:
        raise InputError(f"{node.op_type} node {node.name!r}: axis {axis} is out of range "
                         f"for rank {x.ndim}")
    return axis + x.ndim if axis < 0 else axis


def _check_broadcast(node, name, p, x_shape):
    try:
        ok = np.broadcast_shapes(np.shape(p), x_shape) == tuple(x_shape)
    except ValueError:
        ok = False
    if not ok:
        raise InputError(f"{node.op_type} node {node.name!r}: {name} {np.shape(p)} does not "
                         f"broadcast onto X {tuple(x_shape)}")


@register("LayerNormalization", reference=layer_norm_reference, min_opset=17)
def LayerNormalization(node, *, axis=-1, epsilon=1e-5, stash_type=1):
    axis = _int_attr(node, "axis", axis)
    epsilon = _epsilon(node, epsilon)
    stash_type = _stash(node, stash_type)
    if node.num_inputs not in (2, 3):
        raise node.error(f"expects 2 or 3 inputs (X, Scale[, B]), got {node.num_inputs}")
    if node.num_outputs > 3:
        raise node.error(f"has at most 3 outputs (Y, Mean, InvStdDev), got {node.num_outputs}")
    n_out = node.num_outputs

    def run(ctx, x, scale, bias=None):
        a = _run_axis(node, axis, x)
        _check_broadcast(node, "Scale", scale, x.shape)
        if bias is not None:
            _check_broadcast(node, "B", bias, x.shape)
        if x.dtype != np.float32 or stash_type != 1:
            outs = layer_norm_reference(x, scale, bias, a, epsilon, stash_type)
        else:
            s, b = _fused_params(x.shape[a:], scale, bias)
            fused = s is not None
            y2, mean, inv = _standardize32(x.reshape(_rows(x, a)), epsilon, scale=s, bias=b)
            y = y2.reshape(x.shape) if fused else _affine_rows(y2, x.shape, scale, bias)
            stat_shape = x.shape[:a] + (1,) * (x.ndim - a)
            outs = (y, mean.reshape(stat_shape), inv.reshape(stat_shape))
        return outs[0] if n_out == 1 else outs[:n_out]
    return run


@register("RMSNormalization", reference=rms_norm_reference, min_opset=23)
def RMSNormalization(node, *, axis=-1, epsilon=1e-5, stash_type=1):
    axis = _int_attr(node, "axis", axis)
    epsilon = _epsilon(node, epsilon)
    stash_type = _stash(node, stash_type)
    if node.num_inputs != 2:
        raise node.error(f"expects 2 inputs (X, scale), got {node.num_inputs}")

    def run(ctx, x, scale):
        a = _run_axis(node, axis, x)
        _check_broadcast(node, "scale", scale, x.shape)
        if x.dtype != np.float32 or stash_type != 1:
            return rms_norm_reference(x, scale, a, epsilon, stash_type)
        s, _ = _fused_params(x.shape[a:], scale, None)
        y2, _, _ = _standardize32(x.reshape(_rows(x, a)), epsilon, rms=True, scale=s)
        return y2.reshape(x.shape) if s is not None else _affine_rows(y2, x.shape, scale, None)
    return run


def _channel_params(node, x, params, per):
    """Check that each of ``params`` holds ``per`` values; return them flat."""
    if x.ndim < 2:
        raise InputError(f"{node.op_type} node {node.name!r}: input of rank {x.ndim}, "
                         f"expects [N, C, ...]")
    flat = []
    for name, p in zip(("scale", "B"), params):
        if np.size(p) != per:
            raise InputError(f"{node.op_type} node {node.name!r}: {name} has {np.size(p)} "
                             f"values, expects {per}")
        flat.append(np.asarray(p).reshape(-1))
    return flat


def _grouped32(x, groups, epsilon, scale_c, bias_c):
    """float32 ``x[N, C, *]`` standardised over ``groups`` channel groups, then per channel
    ``y * scale_c[C] + bias_c[C]``."""
    n, c = x.shape[:2]
    y2, _, _ = _standardize32(x.reshape(n * groups, -1), epsilon)
    y3 = y2.reshape(n, c, -1)
    y3 *= scale_c.astype(np.float32).reshape(1, c, 1)
    y3 += bias_c.astype(np.float32).reshape(1, c, 1)
    return y3.reshape(x.shape)


@register("InstanceNormalization", reference=instance_norm_reference, min_opset=6)
def InstanceNormalization(node, *, epsilon=1e-5):
    epsilon = _epsilon(node, epsilon)
    if node.num_inputs != 3:
        raise node.error(f"expects 3 inputs (input, scale, B), got {node.num_inputs}")

    def run(ctx, x, scale, bias):
        s, b = _channel_params(node, x, (scale, bias), x.shape[1] if x.ndim >= 2 else 0)
        if x.dtype != np.float32:
            return instance_norm_reference(x, s, b, epsilon)
        return _grouped32(x, x.shape[1], epsilon, s, b)
    return run


@register("GroupNormalization", reference=group_norm_reference, min_opset=18)
def GroupNormalization(node, *, num_groups=None, epsilon=1e-5, stash_type=1):
    if num_groups is None:
        raise node.error("attribute num_groups is required")
    groups = _int_attr(node, "num_groups", num_groups)
    if groups < 1:
        raise node.error(f"num_groups must be >= 1, got {groups}")
    epsilon = _epsilon(node, epsilon)
    stash_type = _stash(node, stash_type)
    if node.num_inputs != 3:
        raise node.error(f"expects 3 inputs (X, scale, bias), got {node.num_inputs}")
    # Opset 18 had one scale/bias per group; opset 21 fixed it to one per channel.
    per_channel = node.opset >= 21

    def run(ctx, x, scale, bias):
        c = x.shape[1] if x.ndim >= 2 else 0
        if c % groups:
            raise InputError(f"GroupNormalization node {node.name!r}: {c} channels do not "
                             f"split into {groups} groups")
        s, b = _channel_params(node, x, (scale, bias), c if per_channel else groups)
        if x.dtype != np.float32 or stash_type != 1:
            return group_norm_reference(x, s, b, groups, epsilon, per_channel)
        if not per_channel:
            s, b = np.repeat(s, c // groups), np.repeat(b, c // groups)
        return _grouped32(x, groups, epsilon, s, b)
    return run
