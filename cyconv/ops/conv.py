"""Conv, ConvTranspose (and com.microsoft FusedConv): numpy references, geometry, builders.

Shape legend: ``x[N, C, *in]`` input, ``y[N, M, *out]`` output, ``g`` groups; Conv weights
``w[M, C/g, *k]``, ConvTranspose weights ``w[C, M/g, *k]``; ``dk = (k - 1) * d + 1`` is the
dilated kernel extent along an axis.

Conv geometry (per spatial axis):

* ``NOTSET``: pads as given (default 0), ``out = floor((in + pb + pe - dk) / s) + 1``;
* ``VALID``: no padding;
* ``SAME_UPPER`` / ``SAME_LOWER``: ``out = ceil(in / s)``, total padding
  ``max(0, (out - 1) * s + dk - in)`` split evenly, the odd one at the end (UPPER) or the
  beginning (LOWER).

ConvTranspose geometry: ``full = s * (in - 1) + output_padding + dk`` and
``out = full - pb - pe``. With ``output_shape`` (or SAME_*, where ``out = in * s``) the pads
are derived from ``total = max(0, full - out)``: SAME_UPPER puts the odd one at the end,
NOTSET / SAME_LOWER at the beginning (the ONNX spec, as ONNX Runtime does).

float32 inputs with one or two spatial axes run :mod:`cyconv.kernels.conv` (weights packed
once when W is a load-time constant); other dtypes and ranks use the numpy reference. A
packed W (and B) is declared consumed (``registry.consumes``): the session then drops the
original arrays, and the run checks X against their shapes, once per input shape.
"""
from __future__ import annotations

import itertools
import os

import numpy as np

from ..engine.registry import consumes, model_hint, natively, register
from ..errors import InputError
from ..kernels import conv as _kc

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
_F32 = np.dtype(np.float32)
# Input shapes a prepared Conv remembers; a model fed ever new shapes starts over past this.
_SHAPE_CACHE_SIZE = 64


# ------------------------------------------------------------------------------------------
# geometry

def conv_geometry(in_shape, kernel, strides, dilations, pads, auto_pad):
    """Output spatial shape and begin/end pads of a Conv (rules in the module docstring).

    Parameters
    ----------
    in_shape, kernel, strides, dilations : sequences of int, one per spatial axis
    pads : ``[b_1 .. b_n, e_1 .. e_n]`` (used only when auto_pad is NOTSET)
    auto_pad : str

    Returns
    -------
    out_shape, pads_begin, pads_end : tuples of int (out may be <= 0 for too small inputs)
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
        else:
            pb, pe = pads[a], pads[nd + a]
        out.append((n + pb + pe - dk) // s + 1)
        begin.append(pb)
        end.append(pe)
    return tuple(out), tuple(begin), tuple(end)


def conv_transpose_geometry(in_shape, kernel, strides, dilations, pads, auto_pad,
                            output_padding, output_shape):
    """Output spatial shape and begin/end pads of a ConvTranspose (module docstring).

    Returns
    -------
    out_shape, pads_begin, pads_end : tuples of int; pads may be negative when
    ``output_shape`` is larger than the natural size (the extra outputs get only the bias).
    """
    nd = len(in_shape)
    if output_shape is not None and len(output_shape) == nd + 2:
        output_shape = output_shape[2:]          # some exporters write the full N, C, ... shape
    out, begin, end = [], [], []
    for a in range(nd):
        n, k, s, d = in_shape[a], kernel[a], strides[a], dilations[a]
        full = s * (n - 1) + output_padding[a] + (k - 1) * d + 1
        if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = output_shape[a] if output_shape is not None else n * s
            total = max(0, full - o)
            small = total // 2
            pb, pe = (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
            pe = full - o - pb                   # makes out == o also when full < o
        elif auto_pad == "VALID":
            pb = pe = 0
        else:
            pb, pe = pads[a], pads[nd + a]
        out.append(full - pb - pe)
        begin.append(pb)
        end.append(pe)
    return tuple(out), tuple(begin), tuple(end)


def _defaults(nd, strides, dilations, pads):
    strides = tuple(int(v) for v in strides) if strides is not None else (1,) * nd
    dilations = tuple(int(v) for v in dilations) if dilations is not None else (1,) * nd
    pads = tuple(int(v) for v in pads) if pads is not None else (0,) * (2 * nd)
    return strides, dilations, pads


def _auto_pad(auto_pad):
    return auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)


# ------------------------------------------------------------------------------------------
# numpy references (the oracles): one accumulation per kernel offset

def conv_reference(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
                   kernel_shape=None, pads=None, strides=None):
    """ONNX Conv in numpy: ``y[n, m, o] = b[m] + sum_{c, t} w[m, c, t] * x_pad[n, gc, o*s + t*d]``.

    Parameters
    ----------
    x : (N, C, *in);  w : (M, C/group, *k);  b : (M,) or None
    remaining keywords: the ONNX attributes

    Returns
    -------
    y : (N, M, *out), dtype of ``x``
    """
    x, w = np.asarray(x), np.asarray(w)
    nd = x.ndim - 2
    strides, dilations, pads = _defaults(nd, strides, dilations, pads)
    kernel = w.shape[2:]
    out, pb, pe = conv_geometry(x.shape[2:], kernel, strides, dilations, pads,
                                _auto_pad(auto_pad))
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)))
    N, M, Cg = x.shape[0], w.shape[0], w.shape[1]
    Mg = M // group
    y = np.zeros((N, M) + out, dtype=np.result_type(x, w))
    for g in range(group):
        xg = xp[:, g * Cg:(g + 1) * Cg]
        for t in itertools.product(*(range(k) for k in kernel)):
            # input positions o*s + t*d for o in [0, out): one strided slice per axis
            window = tuple(slice(t[a] * dilations[a], t[a] * dilations[a]
                                 + strides[a] * (out[a] - 1) + 1, strides[a]) for a in range(nd))
            patch = xg[(slice(None), slice(None)) + window]                 # N, Cg, *out
            tap = w[(slice(g * Mg, (g + 1) * Mg), slice(None)) + t]        # Mg, Cg
            y[:, g * Mg:(g + 1) * Mg] += np.einsum("nc...,mc->nm...", patch, tap)
    if b is not None:
        y += np.asarray(b).reshape((1, M) + (1,) * nd)
    return y.astype(x.dtype, copy=False)


def conv_transpose_reference(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
                             kernel_shape=None, output_padding=None, output_shape=None,
                             pads=None, strides=None):
    """ONNX ConvTranspose in numpy: every input pixel scatters ``x * w`` into the output,
    ``y[n, gm, i*s + t*d - pb] += sum_c x[n, gc, i] * w[gc, m, t]``.

    Parameters
    ----------
    x : (N, C, *in);  w : (C, M/group, *k);  b : (M,) or None
    remaining keywords: the ONNX attributes

    Returns
    -------
    y : (N, M, *out), dtype of ``x``
    """
    x, w = np.asarray(x), np.asarray(w)
    nd = x.ndim - 2
    strides, dilations, pads = _defaults(nd, strides, dilations, pads)
    output_padding = tuple(output_padding) if output_padding is not None else (0,) * nd
    kernel = w.shape[2:]
    out, pb, pe = conv_transpose_geometry(x.shape[2:], kernel, strides, dilations, pads,
                                          _auto_pad(auto_pad), output_padding, output_shape)
    N, C, Mg = x.shape[0], x.shape[1], w.shape[1]
    Cg, M = C // group, Mg * group
    # the un-cropped result: full[a] = s*(in-1) + (k-1)*d + 1 along each axis
    full = tuple(strides[a] * (x.shape[2 + a] - 1) + (kernel[a] - 1) * dilations[a] + 1
                 for a in range(nd))
    acc = np.zeros((N, M) + full, dtype=np.result_type(x, w))
    for g in range(group):
        xg = x[:, g * Cg:(g + 1) * Cg]
        for t in itertools.product(*(range(k) for k in kernel)):
            window = tuple(slice(t[a] * dilations[a], t[a] * dilations[a]
                                 + strides[a] * (x.shape[2 + a] - 1) + 1, strides[a])
                           for a in range(nd))
            tap = w[(slice(g * Cg, (g + 1) * Cg), slice(None)) + t]        # Cg, Mg
            acc[(slice(None), slice(g * Mg, (g + 1) * Mg)) + window] += \
                np.einsum("nc...,cm->nm...", xg, tap)
    # y[o] = acc[o + pb] where that index exists, else 0 (output_padding / larger output_shape)
    y = np.zeros((N, M) + tuple(out), dtype=acc.dtype)
    dst, src = [slice(None)] * 2, [slice(None)] * 2
    for a in range(nd):
        lo, hi = max(0, -pb[a]), min(out[a], full[a] - pb[a])
        dst.append(slice(lo, max(lo, hi)))
        src.append(slice(lo + pb[a], max(lo, hi) + pb[a]))
    y[tuple(dst)] = acc[tuple(src)]
    if b is not None:
        y += np.asarray(b).reshape((1, M) + (1,) * nd)
    return y.astype(x.dtype, copy=False)


# ------------------------------------------------------------------------------------------
# attribute checks shared by the builders

def _spatial_attrs(node, w_shape, nd, kernel_shape, strides, dilations, pads, auto_pad):
    """Validate attributes at load; nd may be None when neither W nor kernel_shape is known."""
    auto_pad = _auto_pad(auto_pad)
    if auto_pad not in _AUTO_PADS:
        raise node.error(f"auto_pad must be one of {_AUTO_PADS}, got {auto_pad!r}")
    if kernel_shape is not None:
        kernel_shape = tuple(int(v) for v in kernel_shape)
        if nd is not None and len(kernel_shape) != nd:
            raise node.error(f"kernel_shape {kernel_shape} has {len(kernel_shape)} axes but W "
                             f"has {nd} spatial axes")
        if w_shape is not None and kernel_shape != tuple(w_shape[2:]):
            raise node.error(f"kernel_shape {kernel_shape} differs from W's spatial shape "
                             f"{tuple(w_shape[2:])}")
        nd = len(kernel_shape)
    for name, v, n in (("strides", strides, 1), ("dilations", dilations, 1), ("pads", pads, 2)):
        if v is None:
            continue
        v = [int(e) for e in v]
        if nd is not None and len(v) != n * nd:
            raise node.error(f"{name} has {len(v)} values, expected {n * nd}")
        if name != "pads" and any(e < 1 for e in v):
            raise node.error(f"{name} must be positive, got {v}")
    return auto_pad, nd


def _check_input(op, x_shape, w_shape, C):
    if len(x_shape) != len(w_shape):
        raise InputError(f"{op}: X must have rank {len(w_shape)} (like W {w_shape}), got shape "
                         f"{x_shape}")
    if x_shape[1] != C:
        raise InputError(f"{op}: X must have {C} channels for W {w_shape}, got shape {x_shape}")


def _check_float32(op, x):
    # a prepared plan holds float32 weights only: ONNX types X like W, so this is a bad feed
    if x.dtype != _F32:
        raise InputError(f"{op}: X must be float32 like W, got {x.dtype}")


def _pads4(nd, pb, pe):
    """The kernels' (top, left, bottom, right) pads; a 1-D problem has H = 1 and no H pads."""
    return (pb[0], pb[1], pe[0], pe[1]) if nd == 2 else (0, pb[0], 0, pe[0])


def _as_2d(nd, x, strides, dilations, pb, pe):
    """1-D problems as 2-D ones with H = 1 (the kernels are 2-D only)."""
    if nd == 2:
        return x, strides, dilations, _pads4(nd, pb, pe)
    return x[:, :, None, :], (1, strides[0]), (1, dilations[0]), _pads4(nd, pb, pe)


def _shape_cache(derive):
    """``(cache, remember)``: what ``derive(shape)`` (checks + geometry) says, once per shape.

    The hot path reads ``cache.get(x.shape)`` inline and calls ``remember(x.shape)`` on a
    miss. ``derive`` raises for a bad shape and nothing is stored then, so a bad feed fails
    the same way every time. Bounded: a model fed ever new shapes must not grow it forever.
    """
    cache = {}

    def remember(shape):
        got = derive(shape)
        if len(cache) >= _SHAPE_CACHE_SIZE:
            cache.clear()
        cache[shape] = got
        return got
    return cache, remember


# ------------------------------------------------------------------------------------------
# builders

def _conv_builder(node, *, auto_pad, dilations, group, kernel_shape, pads, strides,
                  activation=None, z_broadcast=False, pre=None):
    """Conv and FusedConv. ``activation``: None, or (name, params) of a FusedConv, applied
    after the residual input Z (input 3) is added."""
    act_name, act_params = activation if activation is not None else ("Identity", ())
    W, B = node.const(1), node.const(2)
    w_shape = None if W is None else W.shape
    group = int(group)
    if group < 1:
        raise node.error(f"group must be >= 1, got {group}")
    nd = None if W is None else W.ndim - 2
    if W is not None:
        if W.ndim < 3:
            raise node.error(f"W must have rank >= 3, got shape {W.shape}")
        if W.shape[0] % group:
            raise node.error(f"group={group} does not divide the {W.shape[0]} output channels")
    auto_pad, nd = _spatial_attrs(node, w_shape, nd, kernel_shape, strides, dilations, pads,
                                  auto_pad)
    if pads is not None and any(int(p) < 0 for p in pads):
        raise node.error(f"pads must be >= 0, got {list(pads)}")
    if B is not None and W is not None and B.shape != (W.shape[0],):
        raise node.error(f"B must have shape ({W.shape[0]},), got {B.shape}")
    if act_name == "PRelu" and W is not None and len(act_params) not in (1, W.shape[0]):
        raise node.error(f"PRelu needs 1 or {W.shape[0]} activation_params (slopes), got "
                         f"{len(act_params)}")
    kernel_act = _kernel_activation(act_name, act_params)

    def make_plan(w, b, winograd=0):
        w4 = w if w.ndim == 4 else w[:, :, None, :]
        st, dl, _ = _defaults(w.ndim - 2, strides, dilations, pads)
        if w.ndim == 3:
            st, dl = (1,) + st, (1,) + dl
        return _kc.ConvPlan(w4, b, st, dl, group, winograd=winograd, **kernel_act)

    fast = W is not None and W.dtype == np.float32 and W.ndim in (3, 4) and W.shape[0] > 0 \
        and (B is None or B.dtype == np.float32)
    if fast and (B is not None or _omitted(node, 2)):
        tile = _use_winograd(node, W, strides, dilations, pads, auto_pad, group)
        plan = make_plan(W, B, tile)
        # Spatial size unknown at load (dynamic exports, dense evaluation): decide Winograd
        # per input shape at run time; the plan for a tile is built on first use, so the
        # original weights stay in this closure.
        later = None
        if tile == 0 and _winograd_later(node, W, strides, dilations, group):
            later = lambda t: make_plan(W, B, t)  # noqa: E731
        pd = _defaults(2, strides, dilations, pads)[2]
        if pre is not None and not plan.preactivation_applies(_pads4(2, pd[:2], pd[2:])):
            raise node.error("a pre-activation needs a 1x1, stride-1, unpadded conv of one "
                             "group")
        run = _prepared_conv(plan, W.shape, group, strides, dilations, pads, auto_pad,
                             (act_name, act_params) if z_broadcast else None, later, pre)
        # W and B live on in the plan only (packed / transformed): the session drops them
        return consumes(run, 1, 2) if B is not None else consumes(run, 1)

    def run(ctx, x, w, b=None, z=None):
        if pre is not None:
            x = _preactivate(x, *pre)
        n = w.ndim - 2
        if w.ndim < 3 or w.shape[0] % group:
            raise InputError(f"Conv: W shape {w.shape} does not fit group={group}")
        if act_name == "PRelu" and len(act_params) not in (1, w.shape[0]):
            raise InputError(f"FusedConv: PRelu needs 1 or {w.shape[0]} slopes, got "
                             f"{len(act_params)}")
        _check_input("Conv", x.shape, w.shape, w.shape[1] * group)
        if b is not None and b.shape != (w.shape[0],):
            raise InputError(f"Conv: B must have shape ({w.shape[0]},), got {b.shape}")
        st, dl, pd = _defaults(n, strides, dilations, pads)
        out, pb, pe = conv_geometry(x.shape[2:], w.shape[2:], st, dl, pd, auto_pad)
        if any(o < 1 for o in out):
            raise InputError(f"Conv: input spatial shape {x.shape[2:]} is smaller than the "
                             f"dilated kernel {w.shape[2:]} (output would be {out})")
        y_shape = (x.shape[0], w.shape[0]) + tuple(out)
        if z is not None and z.shape != y_shape and not z_broadcast:
            raise InputError(f"FusedConv: Z must have the output's shape {y_shape}, got "
                             f"{z.shape}")
        use_kernel = (x.dtype == np.float32 and w.dtype == np.float32 and n in (1, 2)
                      and (b is None or b.dtype == np.float32)
                      and (z is None or (z.dtype == np.float32 and z.shape == y_shape)))
        if not use_kernel:
            y = conv_reference(x, w, b, auto_pad=auto_pad, dilations=dl, group=group,
                               pads=pd, strides=st)
            if z is not None:
                y = y + z
            if activation is None:
                return y
            return fused_activation_reference(y, act_name, act_params).astype(y.dtype)
        x2, _, _, pads4 = _as_2d(n, x, st, dl, pb, pe)
        z2 = None if z is None else (z if n == 2 else z[:, :, None, :])
        y = make_plan(w, b).run(x2, pads4, ctx.n_threads, z2)
        return y if n == 2 else y[:, :, 0, :]
    return run


def _omitted(node, index):
    """Input ``index`` is absent (not given, or given as the empty name)."""
    return index >= node.num_inputs or not node.input_names[index]


def _preactivate(x, scale, shift):
    """relu(scale * x + shift) per channel of x (N, C, ...): the unfused path."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.maximum(x * scale.reshape(shape) + shift.reshape(shape), 0).astype(x.dtype)


def _prepared_conv(plan, w_shape, group, strides, dilations, pads, auto_pad,
                   broadcast_z=None, winograd_plan=None, pre=None):
    """The run of a Conv / FusedConv whose W (and B) ``plan`` holds: the checks and the
    geometry are done once per input shape, so a repeated shape costs a dict lookup.

    ``broadcast_z``: (activation name, params) when a Z of another shape is the residual Add
    it replaced (cyconv's fusion pass, shapes unknown at load): then act(conv + z) follows
    numpy broadcasting, on a slower path; otherwise such a Z is an error.
    ``winograd_plan(tile)``: builds the plan for a Winograd tile; given, each new input shape
    picks its algorithm (``winograd_tile``) and plans are built once per tile.
    ``pre``: (scale, shift) float32 per input channel: the conv reads relu(scale*x + shift),
    computed while the GEMM packs x (ConvPlan.run)."""
    n = len(w_shape) - 2
    st, dl, pd = _defaults(n, strides, dilations, pads)
    kernel, M = tuple(w_shape[2:]), w_shape[0]

    plans = {0: plan}

    def plan_for(shape, out):
        if winograd_plan is None:
            return plan
        tile = int(_kc.winograd_tile(w_shape[1], M, max(shape[0], 1), out[0], out[1]))
        if tile not in plans:
            plans[tile] = winograd_plan(tile)
        return plans[tile]

    def derive(shape):
        _check_input("Conv", shape, w_shape, w_shape[1] * group)
        out, pb, pe = conv_geometry(shape[2:], kernel, st, dl, pd, auto_pad)
        if any(o < 1 for o in out):
            raise InputError(f"Conv: input spatial shape {shape[2:]} is smaller than the "
                             f"dilated kernel {kernel} (output would be {out})")
        return (shape[0], M) + tuple(out), _pads4(n, pb, pe), plan_for(shape, out)

    cache, remember = _shape_cache(derive)

    def run(ctx, x, w=None, b=None, z=None, activate=True):
        got = cache.get(x.shape)
        if got is None:
            got = remember(x.shape)
        y_shape, pads4, shape_plan = got
        _check_float32("Conv", x)
        if z is not None:
            if z.dtype != _F32:
                raise InputError(f"FusedConv: Z must be float32 like W, got {z.dtype}")
            if z.shape != y_shape:
                if broadcast_z is None:
                    raise InputError(f"FusedConv: Z must have the output's shape {y_shape}, "
                                     f"got {z.shape}")
                y = run(ctx, x, z=None, activate=False)
                try:
                    y = y + z
                except ValueError as exc:
                    raise InputError(f"Add: shapes {y.shape} and {z.shape} do not "
                                     f"broadcast") from exc
                return fused_activation_reference(y, *broadcast_z).astype(np.float32)
        if n == 2:
            return shape_plan.run(x, pads4, ctx.n_threads, z, activate, pre)
        z2 = None if z is None else z[:, :, None, :]
        return shape_plan.run(x[:, :, None, :], pads4, ctx.n_threads, z2, activate,
                              pre)[:, :, 0, :]

    def native(in_shapes, n_threads):
        # 2-D, with a residual (if any) of the output's shape (the broadcast one is numpy)
        x_shape = in_shapes[0]
        z_shape = in_shapes[3] if len(in_shapes) > 3 else None
        if n != 2 or any(s is not None for s in in_shapes[1:3]):
            return None
        got = cache.get(x_shape)
        if got is None:
            got = remember(x_shape)
        y_shape, pads4, shape_plan = got
        if z_shape is not None and tuple(z_shape) != y_shape:
            return None
        return shape_plan.native(x_shape, pads4, z_shape is not None, n_threads, pre)

    def rows(in_shapes):
        # the H axis as engine/bands.py sees it: (window extent, stride, top pad, output rows)
        if n != 2 or len(in_shapes[0]) != 4:
            return None
        got = cache.get(in_shapes[0]) or remember(in_shapes[0])
        return (kernel[0] - 1) * dl[0] + 1, st[0], got[1][0], got[0][2]

    def native_rows(in_shapes, n_threads, a, b, lo, hi):
        # output rows [lo, hi) from input rows [a, b) (engine/bands.py), for in_shapes that
        # ``native`` takes: the pads of the rows the band's window runs over outside [a, b)
        # are the conv's own at the image's edges, none inside it
        x_shape = tuple(in_shapes[0])
        y_shape, pads4, _ = cache.get(x_shape) or remember(x_shape)
        top = a - (lo * st[0] - pads4[0])
        bottom = (hi - 1) * st[0] - pads4[0] + (kernel[0] - 1) * dl[0] + 1 - b
        band = x_shape[:2] + (b - a, x_shape[3])
        shape_plan = plan_for(band, (hi - lo, y_shape[3]))
        z = len(in_shapes) > 3 and in_shapes[3] is not None
        return shape_plan.native(band, (top, pads4[1], bottom, pads4[3]), z, n_threads, pre)
    run = natively(run, native)
    run.rows, run.native_rows = rows, native_rows
    return run


def winograd_enabled() -> bool:
    """Winograd convolution is on unless the environment sets ``CYCONV_WINOGRAD=0``."""
    return os.environ.get("CYCONV_WINOGRAD", "1").strip() != "0"


def _winograd_candidate(W, strides, dilations, group) -> bool:
    """Winograd is on and computes this conv (3x3, stride 1, dilation 1, one group)."""
    if not winograd_enabled() or W.ndim != 4:
        return False
    st, dl, _ = _defaults(2, strides, dilations, None)
    return bool(_kc.winograd_applies(W.shape[2], W.shape[3], st, dl, group))


def _static_spatial(shape):
    """The declared (N, C, H, W) input shape when H and W are known at load, else None."""
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        return None
    return shape


def _input_shape(node):
    return node.input_shapes[0] if node.input_shapes else None


def _winograd_later(node, W, strides, dilations, group) -> bool:
    """Winograd may pay for this Conv but its output size is unknown at load."""
    return (_winograd_candidate(W, strides, dilations, group)
            and _static_spatial(_input_shape(node)) is None
            and W.shape[0] >= 16 and W.shape[1] >= 16)


def _use_winograd(node, W, strides, dilations, pads, auto_pad, group) -> int:
    """The Winograd output tile for this Conv (4: F(4x4, 3x3), 2: F(2x2, 3x3)) or 0 (im2col
    + GEMM). Only where it computes the same conv (3x3, stride 1, dilation 1, one group) and
    pays for its weight memory at the input size the model declares (kernels/conv.pyx
    ``winograd_tile``, told whether the model's small-plane layers fit the cache together:
    ``node.hints``, :func:`small_plane_winograd`); with an unknown spatial size the choice
    is made per input shape at run time instead (``_winograd_later``); a symbolic batch
    counts as one image (the latency case). Either algorithm accepts any input size."""
    return _tile_at_load(_input_shape(node), W, strides, dilations, pads, auto_pad, group,
                         node.hints.get("small_plane_winograd", False))


def _tile_at_load(shape, W, strides, dilations, pads, auto_pad, group, weights_cached):
    shape = _static_spatial(shape)
    if shape is None or not _winograd_candidate(W, strides, dilations, group):
        return 0
    st, dl, pd = _defaults(2, strides, dilations, pads)
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
    out, _, _ = conv_geometry(shape[2:], W.shape[2:], st, dl, pd, auto_pad)
    return int(_kc.winograd_tile(W.shape[1], W.shape[0], batch, out[0], out[1],
                                 weights_cached))


# Most bytes of F(4x4) weights (36 packed M x C panels a layer) that a model's small-plane
# convs may take together and still run as Winograd (winograd_tile's weights_cached): twice
# the 1 MiB L2 of the Zen 4 cores measured. The CIFAR CNN's one such layer takes 0.59 MB (the
# model ran 0.945x / 0.96x on 1 / 2 threads with it), DenseNet-121's 24 take 14 MB (0.99x
# near, 1.04x with the vCPUs far apart: they stream from memory every run).
SMALL_PLANE_WINOGRAD_BYTES = 2 << 20


@model_hint
def small_plane_winograd(graph) -> dict:
    """``{"small_plane_winograd": bool}``: whether the F(4x4) weights of the model's convs
    that take Winograd only while their weights stay cached come to
    SMALL_PLANE_WINOGRAD_BYTES or less together (False when there are none)."""
    total = 0
    for node in graph.nodes:
        if (node.domain or "ai.onnx", node.op_type) not in (("ai.onnx", "Conv"),
                                                            ("com.microsoft", "FusedConv")):
            continue
        W = graph.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
        if W is None or W.ndim != 4:
            continue
        a = node.attrs
        tiles = [_tile_at_load(graph.value_shapes.get(node.inputs[0]), W, a.get("strides"),
                               a.get("dilations"), a.get("pads"),
                               _auto_pad(a.get("auto_pad", "NOTSET")), int(a.get("group", 1)),
                               cached) for cached in (False, True)]
        if tiles == [0, 4]:
            total += _kc.winograd_weight_bytes(W.shape[0], W.shape[1], 4)
    return {"small_plane_winograd": 0 < total <= SMALL_PLANE_WINOGRAD_BYTES}


@register("Conv", reference=conv_reference)
def Conv(node, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    return _conv_builder(node, auto_pad=auto_pad, dilations=dilations, group=group,
                         kernel_shape=kernel_shape, pads=pads, strides=strides)


# ------------------------------------------------------------------------------------------
# fused activations (com.microsoft FusedConv / FusedGemm), applied in the GEMM epilogue

# Activations the fused kernels implement. ONNX Runtime's FusedConv/FusedGemm know Relu,
# LeakyRelu, Clip, Sigmoid, Tanh, HardSigmoid (and Identity); HardSwish, Swish and PRelu are
# cyconv extensions (graphs using them run only here).
FUSED_ACTIVATIONS = ("Identity", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh",
                     "HardSigmoid", "HardSwish", "Swish", "PRelu")
FUSED_CONV_ACTIVATIONS = frozenset(FUSED_ACTIVATIONS)
# FusedConv's kernel takes Z: act(Conv(X, W, B) + Z), tested in tests/ops/test_conv.py; the
# residual-fusion pass (engine/passes/fuse_conv.py) emits it.
FUSED_CONV_RESIDUAL = True

# ONNX defaults of each activation's parameters, in activation_params order
_ACT_DEFAULTS = {"LeakyRelu": (0.01,), "Clip": (-np.inf, np.inf), "HardSigmoid": (0.2, 0.5)}


def fused_activation_reference(y, activation, params=()):
    """``activation(y)`` in numpy, as the ONNX operator of that name (``params`` as in
    FusedConv's activation_params: LeakyRelu [alpha], Clip [min, max], HardSigmoid
    [alpha, beta], PRelu [slope] or one slope per channel (axis 1)); extensions:
    HardSwish ``x * clip(x/6 + 1/2, 0, 1)``, Swish ``x * sigmoid(x)``."""
    p = _activation_params(activation, params)
    if activation == "Identity":
        return y
    if activation == "Relu":
        return np.maximum(y, 0)
    if activation == "LeakyRelu":
        return np.where(y >= 0, y, p[0] * y)
    if activation == "Clip":
        return np.minimum(np.maximum(y, p[0]), p[1])
    if activation == "Sigmoid":
        return 1 / (1 + np.exp(-y))
    if activation == "Tanh":
        return np.tanh(y)
    if activation == "HardSigmoid":
        return np.clip(p[0] * y + p[1], 0, 1)
    if activation == "HardSwish":
        return y * np.clip(y / 6 + 0.5, 0, 1)
    if activation == "Swish":
        return y / (1 + np.exp(-y))
    if activation == "PRelu":
        slope = np.asarray(p, dtype=y.dtype)
        if slope.size > 1:
            slope = slope.reshape((1, -1) + (1,) * (y.ndim - 2))
        return np.where(y >= 0, y, slope * y)
    raise ValueError(f"unknown activation {activation!r}")


def _activation_params(activation, params):
    params = tuple(float(v) for v in (params if params is not None else ()))
    if activation == "PRelu":
        return params if params else (0.01,)
    defaults = _ACT_DEFAULTS.get(activation, ())
    return params + defaults[len(params):]


def _kernel_activation(name, params):
    """ConvPlan keywords for an activation (validated by the caller)."""
    p = _activation_params(name, params)
    if name == "PRelu":
        return {"activation": name, "slopes": np.asarray(p, np.float32)}
    return {"activation": name, "act_alpha": p[0] if p else 0.0,
            "act_beta": p[1] if len(p) > 1 else 0.0}


def fused_conv_reference(x, w, b=None, z=None, *, activation="Identity", activation_params=None,
                         **attrs):
    """com.microsoft FusedConv: ``activation(Conv(x, w, b) + z)``.

    Parameters
    ----------
    x, w, b : as :func:`conv_reference`;  z : (N, M, *out) or None
    activation : str in FUSED_ACTIVATIONS;  activation_params : floats (see
    :func:`fused_activation_reference`); remaining keywords: Conv's attributes
    """
    y = conv_reference(x, w, b, **attrs)
    if z is not None:
        y = y + np.asarray(z)
    return fused_activation_reference(y, _decode(activation), activation_params).astype(y.dtype)


def _decode(s):
    return s.decode() if isinstance(s, bytes) else str(s)


@register("FusedConv", reference=fused_conv_reference, domain="com.microsoft")
def FusedConv(node, *, activation="Identity", activation_params=None, auto_pad="NOTSET",
              dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
              cyconv_z_broadcast=0, _pre=None):
    # ONNX Runtime's contrib op, emitted by the graph passes: act(Conv(X, W, B) + Z).
    # cyconv_z_broadcast=1 (cyconv's residual fusion, when shapes were unknown at load): Z
    # may differ from the output's shape and is added under broadcasting, as the Add was.
    activation = _decode(activation)
    if activation not in FUSED_ACTIVATIONS:
        raise node.error(f"activation {activation!r} is not supported; expected one of "
                         f"{', '.join(FUSED_ACTIVATIONS)}")
    params = tuple(float(v) for v in (activation_params or ()))
    if node.num_inputs > 4 and _pre is None:
        raise node.error(f"FusedConv takes at most 4 inputs (X, W, B, Z), got {node.num_inputs}")
    return _conv_builder(node, auto_pad=auto_pad, dilations=dilations, group=group,
                         kernel_shape=kernel_shape, pads=pads, strides=strides,
                         activation=(activation, params), z_broadcast=bool(cyconv_z_broadcast),
                         pre=_pre)


def preactivation_conv_reference(x, w, b=None, z=None, scale=None, shift=None, **attrs):
    """FusedConv(relu(scale * x + shift), w, b, z): a BatchNormalization -> Relu -> Conv of a
    pre-activation network (DenseNet, ResNet v2) in one node."""
    return fused_conv_reference(_preactivate(np.asarray(x), np.asarray(scale),
                                             np.asarray(shift)), w, b, z, **attrs)


# cyconv's own operators (graph passes only; never in a model file users give)
CYCONV_DOMAIN = "ai.cyconv"


@register("PreActivationConv", reference=preactivation_conv_reference, domain=CYCONV_DOMAIN)
def PreActivationConv(node, *, activation="Identity", activation_params=None,
                      auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
                      strides=None, cyconv_z_broadcast=0):
    # inputs X, W, B, Z (either may be ""), scale, shift: FusedConv(relu(scale*X + shift), ...)
    # with scale and shift constants, applied while the GEMM packs X (no tensor stored)
    if node.num_inputs != 6:
        raise node.error(f"PreActivationConv takes 6 inputs (X, W, B, Z, scale, shift), got "
                         f"{node.num_inputs}")
    scale, shift = node.const(4), node.const(5)
    if scale is None or shift is None:
        raise node.error("scale and shift must be constants")
    pre = (np.ascontiguousarray(scale, np.float32).reshape(-1),
           np.ascontiguousarray(shift, np.float32).reshape(-1))
    inner = FusedConv(node, activation=activation, activation_params=activation_params,
                      auto_pad=auto_pad, dilations=dilations, group=group,
                      kernel_shape=kernel_shape, pads=pads, strides=strides,
                      cyconv_z_broadcast=cyconv_z_broadcast, _pre=pre)

    def run(ctx, x, w=None, b=None, z=None, scale=None, shift=None):
        return inner(ctx, x, w, b, z)
    inner_native = getattr(inner, "native", None)
    if inner_native is not None:
        natively(run, lambda in_shapes, n_threads: (
            None if any(s is not None for s in in_shapes[4:])
            else inner_native(in_shapes[:4], n_threads)))
    if hasattr(inner, "native_rows"):       # row bands (engine/bands.py)
        run.rows = lambda in_shapes: inner.rows(in_shapes[:4])
        run.native_rows = lambda in_shapes, n_threads, a, b, lo, hi: (
            None if any(s is not None for s in in_shapes[4:])
            else inner.native_rows(in_shapes[:4], n_threads, a, b, lo, hi))
    return consumes(run, *getattr(inner, "consumed_inputs", ()), 4, 5)


@register("ConvTranspose", reference=conv_transpose_reference)
def ConvTranspose(node, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                  output_padding=None, output_shape=None, pads=None, strides=None):
    W, B = node.const(1), node.const(2)
    group = int(group)
    if group < 1:
        raise node.error(f"group must be >= 1, got {group}")
    nd = None if W is None else W.ndim - 2
    if W is not None:
        if W.ndim < 3:
            raise node.error(f"W must have rank >= 3, got shape {W.shape}")
        if W.shape[0] % group:
            raise node.error(f"group={group} does not divide the {W.shape[0]} input channels")
    auto_pad, nd = _spatial_attrs(node, None if W is None else W.shape, nd, kernel_shape,
                                  strides, dilations, pads, auto_pad)
    if output_padding is not None:
        output_padding = tuple(int(v) for v in output_padding)
        if nd is not None and len(output_padding) != nd:
            raise node.error(f"output_padding has {len(output_padding)} values, expected {nd}")
        st, dl, _ = _defaults(len(output_padding), strides, dilations, None)
        if any(op < 0 or (op >= s and op >= d)
               for op, s, d in zip(output_padding, st, dl)):
            raise node.error(f"output_padding {output_padding} must be >= 0 and smaller than "
                             f"the stride or the dilation")
    if output_shape is not None:
        output_shape = tuple(int(v) for v in output_shape)
        if nd is not None and len(output_shape) not in (nd, nd + 2):
            raise node.error(f"output_shape {output_shape} does not have {nd} spatial axes")
    if B is not None and W is not None and B.shape != (W.shape[1] * group,):
        raise node.error(f"B must have shape ({W.shape[1] * group},), got {B.shape}")

    def make_plan(w, b):
        w4 = w if w.ndim == 4 else w[:, :, None, :]
        st, dl, _ = _defaults(w.ndim - 2, strides, dilations, pads)
        if w.ndim == 3:
            st, dl = (1,) + st, (1,) + dl
        return _kc.ConvTransposePlan(w4, b, st, dl, group)

    fast = W is not None and W.dtype == np.float32 and W.ndim in (3, 4) \
        and (B is None or B.dtype == np.float32)
    if fast and (B is not None or _omitted(node, 2)):
        run = _prepared_conv_transpose(make_plan(W, B), W.shape, group, strides, dilations,
                                       pads, auto_pad, output_padding, output_shape)
        return consumes(run, 1, 2) if B is not None else consumes(run, 1)

    def run(ctx, x, w, b=None):
        n = w.ndim - 2
        if w.ndim < 3 or w.shape[0] % group:
            raise InputError(f"ConvTranspose: W shape {w.shape} does not fit group={group}")
        _check_input("ConvTranspose", x.shape, w.shape, w.shape[0])
        if b is not None and b.shape != (w.shape[1] * group,):
            raise InputError(f"ConvTranspose: B must have shape ({w.shape[1] * group},), "
                             f"got {b.shape}")
        st, dl, pd = _defaults(n, strides, dilations, pads)
        op = output_padding if output_padding is not None else (0,) * n
        out, pb, pe = conv_transpose_geometry(x.shape[2:], w.shape[2:], st, dl, pd, auto_pad,
                                              op, output_shape)
        if any(o < 0 for o in out):
            raise InputError(f"ConvTranspose: pads {pd} leave a negative output shape {out}")
        use_kernel = (x.dtype == np.float32 and w.dtype == np.float32 and n in (1, 2)
                      and (b is None or b.dtype == np.float32))
        if not use_kernel:
            return conv_transpose_reference(x, w, b, dilations=dl, group=group, pads=pb + pe,
                                            output_padding=op, strides=st)
        x2, _, _, pads4 = _as_2d(n, x, st, dl, pb, pe)
        out2 = tuple(out) if n == 2 else (1,) + tuple(out)
        y = make_plan(w, b).run(x2, pads4, out2, ctx.n_threads)
        return y if n == 2 else y[:, :, 0, :]
    return run


def _prepared_conv_transpose(plan, w_shape, group, strides, dilations, pads, auto_pad,
                             output_padding, output_shape):
    """The run of a ConvTranspose whose W (and B) ``plan`` holds; checks and geometry once
    per input shape, as :func:`_prepared_conv`."""
    n = len(w_shape) - 2
    st, dl, pd = _defaults(n, strides, dilations, pads)
    op = output_padding if output_padding is not None else (0,) * n
    kernel = tuple(w_shape[2:])

    def derive(shape):
        _check_input("ConvTranspose", shape, w_shape, w_shape[0])
        out, pb, pe = conv_transpose_geometry(shape[2:], kernel, st, dl, pd, auto_pad, op,
                                              output_shape)
        if any(o < 0 for o in out):
            raise InputError(f"ConvTranspose: pads {pd} leave a negative output shape {out}")
        return _pads4(n, pb, pe), tuple(out) if n == 2 else (1,) + tuple(out)

    cache, remember = _shape_cache(derive)

    def run(ctx, x, w=None, b=None):
        got = cache.get(x.shape)
        if got is None:
            got = remember(x.shape)
        pads4, out2 = got
        _check_float32("ConvTranspose", x)
        if n == 2:
            return plan.run(x, pads4, out2, ctx.n_threads)
        return plan.run(x[:, :, None, :], pads4, out2, ctx.n_threads)[:, :, 0, :]
    return run
