"""MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Geometry (per spatial axis; ``dk = (k - 1) * d + 1`` is the dilated window):

* explicit pads ``pb, pe``: ``out = floor((in + pb + pe - dk) / s) + 1`` (``ceil`` with
  ``ceil_mode``, dropping a last window that would start past ``in + pb``, as ONNX Runtime and
  PyTorch do);
* ``VALID``: no padding, ``out = floor((in - dk) / s) + 1``;
* ``SAME_UPPER`` / ``SAME_LOWER``: ``out = ceil(in / s)``, total padding
  ``max(0, (out - 1) * s + dk - in)`` split evenly, the odd one at the end (UPPER) or the
  beginning (LOWER).

Window ``o`` covers input positions ``o * s - pb + t * d`` (t < k). Average pooling divides by
the number of those positions inside the input (``count_include_pad=0``) or inside the padded
extent ``[-pb, in + pe)`` (``count_include_pad=1``); positions that only ``ceil_mode`` adds past
``in + pe`` never count. Max pooling ignores padding.

float32 inputs of rank 3 (1-D pools) and 4 (2-D) run :mod:`cyconv.kernels.pool`; other ranks
and dtypes, and MaxPool's optional Indices output, use the numpy reference.
"""
from __future__ import annotations

import itertools

import math

import numpy as np

from ..engine.registry import natively, register
from ..errors import InputError
from ..kernels import pool as _kp

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


# ------------------------------------------------------------------------------------------
# geometry

def pool_geometry(in_shape, kernel, strides, dilations, pads, auto_pad, ceil_mode):
    """Output spatial shape and the begin/end pads, per the rules in the module docstring.

    Parameters
    ----------
    in_shape, kernel, strides, dilations : sequence of int, one per spatial axis
    pads : sequence of int, ``[b_1 .. b_n, e_1 .. e_n]`` (ignored unless auto_pad is NOTSET)
    auto_pad : str
    ceil_mode : bool

    Returns
    -------
    out_shape, pads_begin, pads_end : tuples of int
    """
    nd = len(in_shape)
    out, begin, end = [], [], []
    for a in range(nd):
        n, k, s, d = in_shape[a], kernel[a], strides[a], dilations[a]
        dk = (k - 1) * d + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // s)
            total = max(0, (o - 1) * s + dk - n)
            small = total // 2
            pb, pe = (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
        elif auto_pad == "VALID":
            pb = pe = 0
            o = (n - dk) // s + 1
        else:
            pb, pe = pads[a], pads[nd + a]
            span = n + pb + pe - dk
            if ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= n + pb:
                    o -= 1
            else:
                o = span // s + 1
        out.append(max(o, 0))
        begin.append(pb)
        end.append(pe)
    return tuple(out), tuple(begin), tuple(end)


def window_counts(n_out, n_in, k, s, d, pb, pe, include_pad):
    """Taps counted by the average of each window along one axis (see module docstring).

    Returns
    -------
    float32[n_out]
    """
    o = np.arange(n_out)[:, None]
    pos = o * s - pb + np.arange(k)[None, :] * d
    if include_pad:
        inside = (pos >= -pb) & (pos < n_in + pe)
    else:
        inside = (pos >= 0) & (pos < n_in)
    return inside.sum(axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------
# references

def _windows(x_shape, out_shape, kernel, strides, dilations, pads_begin):
    """Yield (kernel offset, per-axis input index arrays) for every tap of every window."""
    for offs in itertools.product(*[range(k) for k in kernel]):
        yield [np.arange(out_shape[a]) * strides[a] - pads_begin[a] + offs[a] * dilations[a]
               for a in range(len(kernel))]


def _gather(x, idx):
    """x[..., idx_1, idx_2, ...] (outer product of index arrays) with a validity mask;
    out-of-range indices are clamped for the gather and masked out."""
    spatial = x.shape[2:]
    masks, clamped = [], []
    for a, ix in enumerate(idx):
        masks.append((ix >= 0) & (ix < spatial[a]))
        clamped.append(np.clip(ix, 0, spatial[a] - 1))
    vals = x[(slice(None), slice(None)) + tuple(np.ix_(*clamped))]
    mask = masks[0]
    for m in masks[1:]:
        mask = np.multiply.outer(mask, m)
    return vals, mask


def max_pool_reference(x, kernel_shape, strides=None, dilations=None, pads=None,
                       auto_pad="NOTSET", ceil_mode=0, storage_order=0, with_indices=False):
    """MaxPool over ``x[N, C, *spatial]`` -> ``y[N, C, *out]`` (and int64 Indices if asked).

    Indices are flat positions in ``x``: ``((n * C + c) * H + h) * W + w`` (row major), or with
    the spatial axes in reverse order for ``storage_order=1``. Ties keep the first tap.
    """
    nd = x.ndim - 2
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = list(pads or [0] * 2 * nd)
    out, pb, _ = pool_geometry(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad,
                               bool(ceil_mode))
    if x.dtype.kind == "f":
        lowest = -np.inf
    else:
        lowest = np.iinfo(x.dtype).min
    best = np.full(x.shape[:2] + out, lowest, dtype=x.dtype)
    best_pos = np.zeros(x.shape[:2] + out, dtype=np.int64)
    found = np.zeros(x.shape[:2] + out, dtype=bool)
    spatial = x.shape[2:]
    for idx in _windows(x.shape, out, kernel_shape, strides, dilations, pb):
        vals, mask = _gather(x, idx)
        # flat spatial position of each tap, in the requested storage order
        grids = np.meshgrid(*[np.clip(ix, 0, spatial[a] - 1) for a, ix in enumerate(idx)],
                            indexing="ij")
        axes = range(nd) if not storage_order else reversed(range(nd))
        pos = np.zeros(out, dtype=np.int64)
        for a in axes:
            pos = pos * spatial[a] + grids[a]
        take = mask & (~found | (vals > best))
        best = np.where(take, vals, best)
        best_pos = np.where(take, pos, best_pos)
        found |= mask
    if not with_indices:
        return best
    plane = math.prod(spatial)
    base = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2])
    indices = best_pos + (base * plane).reshape(x.shape[:2] + (1,) * nd)
    return best, indices


def average_pool_reference(x, kernel_shape, strides=None, dilations=None, pads=None,
                           auto_pad="NOTSET", ceil_mode=0, count_include_pad=0):
    """AveragePool over ``x[N, C, *spatial]`` -> ``y[N, C, *out]``, summed in float64."""
    nd = x.ndim - 2
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = list(pads or [0] * 2 * nd)
    out, pb, pe = pool_geometry(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad,
                                bool(ceil_mode))
    total = np.zeros(x.shape[:2] + out, dtype=np.float64)
    count = np.zeros(out, dtype=np.float64)
    spatial = x.shape[2:]
    for idx in _windows(x.shape, out, kernel_shape, strides, dilations, pb):
        vals, mask = _gather(x, idx)
        total += np.where(mask, vals.astype(np.float64), 0.0)
        if count_include_pad:
            counted = [(ix >= -pb[a]) & (ix < spatial[a] + pe[a]) for a, ix in enumerate(idx)]
            cmask = counted[0]
            for m in counted[1:]:
                cmask = np.multiply.outer(cmask, m)
            count += cmask
        else:
            count += mask
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(x.dtype)


def global_average_pool_reference(x):
    axes = tuple(range(2, x.ndim))
    return np.mean(x.astype(np.float64), axis=axes, keepdims=True).astype(x.dtype)


def global_max_pool_reference(x):
    axes = tuple(range(2, x.ndim))
    return np.max(x, axis=axes, keepdims=True)


# ------------------------------------------------------------------------------------------
# attribute validation

def _int_list(node, name, value, n, minimum):
    try:
        vals = [int(v) for v in value]
    except TypeError:
        raise node.error(f"{name} must be a list of ints, got {value!r}") from None
    if len(vals) != n:
        raise node.error(f"{name} needs {n} values, got {vals}")
    if any(v < minimum for v in vals):
        raise node.error(f"{name} values must be >= {minimum}, got {vals}")
    return vals


def _pool_attrs(node, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    if kernel_shape is None:
        raise node.error("kernel_shape is required")
    kernel = _int_list(node, "kernel_shape", kernel_shape, len(list(kernel_shape)), 1)
    nd = len(kernel)
    if nd == 0:
        raise node.error("kernel_shape must not be empty")
    strides = _int_list(node, "strides", strides, nd, 1) if strides is not None else [1] * nd
    dilations = (_int_list(node, "dilations", dilations, nd, 1) if dilations is not None
                 else [1] * nd)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in _AUTO_PADS:
        raise node.error(f"auto_pad must be one of {_AUTO_PADS}, got {auto_pad!r}")
    if pads is not None:
        pads = _int_list(node, "pads", pads, 2 * nd, 0)
        if auto_pad != "NOTSET" and any(pads):
            raise node.error(f"pads {pads} given together with auto_pad={auto_pad}")
    else:
        pads = [0] * 2 * nd
    if ceil_mode not in (0, 1):
        raise node.error(f"ceil_mode must be 0 or 1, got {ceil_mode}")
    return kernel, strides, dilations, pads, auto_pad, bool(ceil_mode)


def _check_rank(x, nd, op_type):
    if x.ndim != nd + 2:
        raise InputError(f"{op_type}: input of rank {x.ndim} for a {nd}-D kernel_shape "
                         f"(expects [N, C, {nd} spatial dims])")


def _as_planes(x, nd):
    """View x[N, C, *spatial] as float32 planes [N*C, H, W] (1-D pools: H = 1)."""
    x = np.asarray(x, order="C")
    n_planes = x.shape[0] * x.shape[1]
    if nd == 1:
        return x.reshape(n_planes, 1, x.shape[2])
    return x.reshape(n_planes, x.shape[2], x.shape[3])


# ------------------------------------------------------------------------------------------
# builders

@register("MaxPool", reference=max_pool_reference)
def MaxPool(node, *, kernel_shape=None, strides=None, dilations=None, pads=None,
            auto_pad="NOTSET", ceil_mode=0, storage_order=0):
    kernel, strides, dilations, pads, auto_pad, ceil = _pool_attrs(
        node, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if storage_order not in (0, 1):
        raise node.error(f"storage_order must be 0 or 1, got {storage_order}")
    if node.num_outputs > 2:
        raise node.error(f"has at most 2 outputs (Y, Indices), got {node.num_outputs}")
    nd = len(kernel)
    with_indices = node.num_outputs == 2

    geometry = _geometry_cache(kernel, strides, dilations, pads, auto_pad, ceil)

    def run(ctx, x):
        _check_rank(x, nd, "MaxPool")
        if with_indices or nd > 2 or x.dtype != np.float32:
            return max_pool_reference(x, kernel, strides, dilations, pads, auto_pad, ceil,
                                      storage_order, with_indices)
        out, pb, _ = geometry(x.shape[2:])
        return _run_pool2d(x, out, kernel, strides, dilations, pb, True, None, None,
                           ctx.n_threads)

    def native(in_shapes, n_threads):
        if with_indices or nd != 2 or len(in_shapes[0]) != 4:
            return None
        out, pb, _ = geometry(tuple(in_shapes[0][2:]))
        return _pool2d_native(in_shapes[0], out, kernel, strides, dilations, pb, True, None,
                              None, n_threads)

    def native_rows(in_shapes, n_threads, a, b, lo, hi):
        out, pb, _ = geometry(tuple(in_shapes[0][2:]))
        return _pool2d_native(_band(in_shapes[0], a, b), (hi - lo, out[1]), kernel, strides,
                              dilations, (a - (lo * strides[0] - pb[0]), pb[1]), True, None,
                              None, n_threads)
    return _with_rows(natively(run, native), nd, kernel, strides, dilations, geometry,
                      native_rows)


@register("AveragePool", reference=average_pool_reference)
def AveragePool(node, *, kernel_shape=None, strides=None, dilations=None, pads=None,
                auto_pad="NOTSET", ceil_mode=0, count_include_pad=0):
    kernel, strides, dilations, pads, auto_pad, ceil = _pool_attrs(
        node, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if count_include_pad not in (0, 1):
        raise node.error(f"count_include_pad must be 0 or 1, got {count_include_pad}")
    nd = len(kernel)
    include = bool(count_include_pad)
    counts_cache = {}

    def counts(in_spatial, out, pb, pe):
        # Per-axis divisors depend only on the input's spatial shape: computed once per shape.
        key = tuple(in_spatial)
        got = counts_cache.get(key)
        if got is None:
            if len(counts_cache) >= 64:   # many input shapes: don't grow forever
                counts_cache.clear()
            axes = [window_counts(out[a], in_spatial[a], kernel[a], strides[a], dilations[a],
                                  pb[a], pe[a], include) for a in range(nd)]
            got = (np.ones(1, np.float32), axes[0]) if nd == 1 else tuple(axes)
            counts_cache[key] = got
        return got

    geometry = _geometry_cache(kernel, strides, dilations, pads, auto_pad, ceil)

    def run(ctx, x):
        _check_rank(x, nd, "AveragePool")
        if nd > 2 or x.dtype != np.float32:
            return average_pool_reference(x, kernel, strides, dilations, pads, auto_pad, ceil,
                                          include)
        out, pb, pe = geometry(x.shape[2:])
        count_h, count_w = counts(x.shape[2:], out, pb, pe)
        return _run_pool2d(x, out, kernel, strides, dilations, pb, False, count_h, count_w,
                           ctx.n_threads)

    def native(in_shapes, n_threads):
        if nd != 2 or len(in_shapes[0]) != 4:
            return None
        spatial = tuple(in_shapes[0][2:])
        out, pb, pe = geometry(spatial)
        count_h, count_w = counts(spatial, out, pb, pe)
        return _pool2d_native(in_shapes[0], out, kernel, strides, dilations, pb, False,
                              count_h, count_w, n_threads)

    def native_rows(in_shapes, n_threads, a, b, lo, hi):
        # each output row keeps its divisor: the band's windows are the whole image's
        spatial = tuple(in_shapes[0][2:])
        out, pb, pe = geometry(spatial)
        count_h, count_w = counts(spatial, out, pb, pe)
        return _pool2d_native(_band(in_shapes[0], a, b), (hi - lo, out[1]), kernel, strides,
                              dilations, (a - (lo * strides[0] - pb[0]), pb[1]), False,
                              np.ascontiguousarray(count_h[lo:hi]), count_w, n_threads)
    return _with_rows(natively(run, native), nd, kernel, strides, dilations, geometry,
                      native_rows)


def _band(shape, a, b):
    """(N, C, H, W) -> the shape of its rows [a, b)."""
    return tuple(shape[:2]) + (b - a,) + tuple(shape[3:])


def _with_rows(run, nd, kernel, strides, dilations, geometry, native_rows):
    """Attach the row-band hooks of engine/bands.py to a 2-D pool's ``run``: ``rows``
    (window extent, stride, top pad and output rows along H) and ``native_rows`` (output rows
    [lo, hi) from input rows [a, b), for input shapes ``native`` takes)."""
    def rows(in_shapes):
        if nd != 2 or len(in_shapes[0]) != 4:
            return None
        out, pb, _ = geometry(tuple(in_shapes[0][2:]))
        return (kernel[0] - 1) * dilations[0] + 1, strides[0], pb[0], out[0]
    run.rows, run.native_rows = rows, native_rows
    return run


def _geometry_cache(kernel, strides, dilations, pads, auto_pad, ceil, limit=64):
    """spatial input shape -> pool_geometry(...), computed once per shape (bounded)."""
    cache = {}

    def geometry(spatial):
        got = cache.get(spatial)
        if got is None:
            if len(cache) >= limit:
                cache.clear()
            got = cache[spatial] = pool_geometry(spatial, kernel, strides, dilations, pads,
                                                 auto_pad, ceil)
        return got
    return geometry


def _pool2d_native(x_shape, out, kernel, strides, dilations, pb, is_max, count_h, count_w,
                   n_threads):
    """The 2-D pool of an (N, C, H, W) input as a native step, or None for an empty one."""
    N, C, H, W = x_shape
    if N * C * H * W == 0 or out[0] < 1 or out[1] < 1:
        return None
    op = _kp.pool2d_native(N * C, H, W, out[0], out[1], kernel[0], kernel[1], strides[0],
                           strides[1], dilations[0], dilations[1], pb[0], pb[1], is_max,
                           count_h, count_w, n_threads)
    op.out_shapes = ((N, C, out[0], out[1]),)
    return op


def _run_pool2d(x, out, kernel, strides, dilations, pb, is_max, count_h, count_w, n_threads):
    nd = len(kernel)
    if nd == 1:   # a 1-D pool is a 2-D pool over planes of height 1 with a 1-row kernel
        out, kernel, strides, dilations, pb = ((1,) + tuple(out), (1, *kernel), (1, *strides),
                                               (1, *dilations), (0, *pb))
    y = np.empty(x.shape[:2] + tuple(out[-nd:]), np.float32)
    if y.size == 0:
        return y
    if x.size == 0:
        raise InputError(f"pooling an empty input of shape {x.shape}")
    planes = _as_planes(x, nd)
    y_planes = y.reshape(planes.shape[0], out[0], out[1])
    _kp.pool2d(planes, y_planes, kernel[0], kernel[1], strides[0], strides[1], dilations[0],
               dilations[1], pb[0], pb[1], is_max, count_h, count_w, n_threads)
    return y


def _global_builder(node, is_max, reference):
    def run(ctx, x):
        if x.ndim < 3:
            raise InputError(f"{node.op_type}: input of rank {x.ndim}, expects [N, C, ...]")
        if x.dtype != np.float32 or x.size == 0:
            return reference(x)
        n_planes = x.shape[0] * x.shape[1]
        y = np.empty(x.shape[:2] + (1,) * (x.ndim - 2), np.float32)
        planes = np.asarray(x, order="C").reshape(n_planes, -1)
        _kp.global_pool(planes, y.reshape(-1), is_max, ctx.n_threads)
        return y

    def native(in_shapes, n_threads):
        shape = tuple(in_shapes[0])
        hw = math.prod(shape[2:])
        if len(shape) < 3 or shape[0] * shape[1] * hw == 0:
            return None
        op = _kp.global_pool_native(shape[0] * shape[1], hw, is_max, n_threads)
        op.out_shapes = (shape[:2] + (1,) * (len(shape) - 2),)
        return op
    return natively(run, native)


@register("GlobalAveragePool", reference=global_average_pool_reference)
def GlobalAveragePool(node):
    return _global_builder(node, False, global_average_pool_reference)


@register("GlobalMaxPool", reference=global_max_pool_reference)
def GlobalMaxPool(node):
    return _global_builder(node, True, global_max_pool_reference)
