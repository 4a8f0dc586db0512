"""Resize (opset 10+) and Upsample (opset 7-9): nearest, N-linear and cubic interpolation.

Every mode ONNX defines is separable: an N-D resize is a 1-D resize along each resized axis
in turn (bilinear = linear along H, then along W). So the work is, per axis,

1. map each output index ``y`` to a source coordinate ``x`` (``coordinate_transformation_mode``),
2. nearest: pick one source index; linear/cubic: weight the taps around ``x``,
3. gather along the axis and sum the weighted taps.

Taps sit at ``b + i`` with ``b = ceil(x) - 1`` and ``i`` in ``[i0, 2 - i0)``, ``i0 = floor(-support
/ s) + 1`` (support 1 for linear, 2 for cubic; ``s = min(scale, 1)`` with antialias, else 1), each
weighted by ``kernel(s * (tap - x))``. This is the window ONNX's reference picks (the ``n``
indices nearest ``x``, ties to the left). Taps outside the input read the edge value, or are
dropped and the weights renormalised with ``exclude_outside``.

Where ONNX's reference and its spec text disagree this follows the spec, as ONNX Runtime and
PyTorch do: ``align_corners`` and ``tf_crop_and_resize`` divide by the integer output length
(``length_resized - 1``), not by ``scale * length_original - 1``, and ``pytorch_half_pixel``
maps a length-1 output to coordinate 0. The two ONNX node tests that encode the reference's
variant (``test_resize_downsample_scales_{linear,cubic}_align_corners``) fail in ONNX Runtime
too, and are listed in tests/ops/test_resize.py.

Shapes: ``x`` is ``(d0, ..., d{r-1})``; any subset of axes may be resized.
"""
from __future__ import annotations

import math

import numpy as np

from ..engine.registry import register
from .shape import attr_int, attr_ints, attr_str, norm_axes, run_error

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_POLICIES = ("stretch", "not_larger", "not_smaller")


# ----------------------------------------------------------------------------- 1-D building blocks

def source_coords(mode: str, n_out: int, n_in: int, scale: float, roi=(0.0, 1.0)) -> np.ndarray:
    """Source coordinate (float64, shape ``(n_out,)``) of every output index along one axis."""
    y = np.arange(n_out, dtype=np.float64)
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        # Centres the sampled window when floor() shortened the output.
        offset = n_in / 2 * (1 - n_out / (scale * n_in))
        return offset + (y + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if n_out > 1 else np.zeros(n_out)
    if mode == "align_corners":
        return y * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, end = float(roi[0]), float(roi[1])
        if n_out > 1:
            return start * (n_in - 1) + y * (end - start) * (n_in - 1) / (n_out - 1)
        return np.full(n_out, 0.5 * (start + end) * (n_in - 1))
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def nearest_index(x: np.ndarray, nearest_mode: str, n_in: int, scale: float) -> np.ndarray:
    """Source index of each coordinate, clamped to the input.

    ``"simple"`` is the rule of Resize-10 and Upsample (ONNX Runtime's): floor when upsampling,
    ceil when downsampling along this axis.
    """
    if nearest_mode == "simple":
        nearest_mode = "ceil" if scale < 1 else "floor"
    if nearest_mode == "round_prefer_floor":
        idx = np.ceil(x - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(x + 0.5)
    elif nearest_mode == "floor":
        idx = np.floor(x)
    else:
        idx = np.ceil(x)
    return np.clip(idx, 0, n_in - 1).astype(np.intp)


def _linear_kernel(d: np.ndarray, a: float) -> np.ndarray:
    return np.maximum(1.0 - np.abs(d), 0.0)


def _cubic_kernel(d: np.ndarray, a: float) -> np.ndarray:
    # Keys' cubic convolution kernel with parameter A (-0.75 as TensorFlow/ORT, -0.5 as Keys).
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


_KERNELS = {"linear": (_linear_kernel, 1), "cubic": (_cubic_kernel, 2)}


def interp_taps(x: np.ndarray, n_in: int, mode: str, scale: float, cubic_coeff_a: float = -0.75,
                antialias: bool = False, exclude_outside: bool = False):
    """Tap indices and weights of linear/cubic interpolation at coordinates ``x``.

    Returns
    -------
    idx : ndarray of intp, shape (n_out, n_taps)
        Source indices, clamped to ``[0, n_in)`` (edge padding).
    w : ndarray of float64, shape (n_out, n_taps)
    """
    kernel, support = _KERNELS[mode]
    s = min(scale, 1.0) if antialias else 1.0
    i0 = math.floor(-support / s) + 1
    taps = (np.ceil(x) - 1)[:, None] + np.arange(i0, 2 - i0)[None, :]
    w = kernel(s * (taps - x[:, None]), cubic_coeff_a)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    if exclude_outside:
        w = np.where((taps < 0) | (taps >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(taps, 0, n_in - 1).astype(np.intp), w


def _apply_taps(data: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    # One gather per tap (n_taps is 2..4 without antialias) keeps the intermediate at the
    # output's size instead of n_taps times it.
    shape = [1] * data.ndim
    shape[axis] = idx.shape[0]
    w = w.astype(data.dtype)
    out = np.take(data, idx[:, 0], axis=axis)
    out *= w[:, 0].reshape(shape)
    for k in range(1, idx.shape[1]):
        tap = np.take(data, idx[:, k], axis=axis)
        tap *= w[:, k].reshape(shape)
        out += tap
    return out


# ----------------------------------------------------------------------------- N-D reference

def resize_reference(x: np.ndarray, out_shape, scales, mode: str = "nearest",
                     coordinate_transformation_mode: str = "half_pixel",
                     nearest_mode: str = "round_prefer_floor", cubic_coeff_a: float = -0.75,
                     exclude_outside: bool = False, extrapolation_value: float = 0.0,
                     antialias: bool = False, roi=None) -> np.ndarray:
    """Resize ``x`` to ``out_shape``.

    Parameters
    ----------
    x : ndarray, shape (d0, ..., d{r-1})
    out_shape : sequence of int, length r
    scales : sequence of float, length r
        Scale per axis used by the coordinate transform (``out/in`` when sizes were given).
    mode : {"nearest", "linear", "cubic"}
    roi : None | sequence of float, length 2r
        ``[start_0, ..., start_{r-1}, end_0, ..., end_{r-1}]`` for ``tf_crop_and_resize``.

    Returns
    -------
    ndarray of ``x.dtype``, shape ``out_shape``; integer outputs are rounded and saturated.
    """
    r = x.ndim
    ctm = coordinate_transformation_mode
    work_dtype = np.float32 if x.dtype in (np.float32, np.float16) else np.float64
    data = x if mode == "nearest" else x.astype(work_dtype)
    outside = []        # (axis, mask) of coordinates outside the input, for tf_crop_and_resize
    # Separable passes commute (up to rounding), so order them for speed: shrinking axes first
    # and growing axes last keeps the intermediates small; among equal ratios the last axis goes
    # first, since gathering along the contiguous axis is the slowest pass per element.
    order = sorted(range(r), key=lambda a: (out_shape[a] / max(x.shape[a], 1), -a))
    for axis in order:
        n_in, n_out = x.shape[axis], int(out_shape[axis])
        if n_in == 0 or n_out == 0:
            if n_in != n_out:
                shape = list(data.shape)
                shape[axis] = n_out
                data = np.zeros(shape, data.dtype)
            continue
        axis_roi = (roi[axis], roi[r + axis]) if roi is not None else (0.0, 1.0)
        coords = source_coords(ctm, n_out, n_in, float(scales[axis]), axis_roi)
        if n_out == n_in and np.array_equal(coords, np.arange(n_in)):
            continue    # every mode samples integer coordinates exactly
        if ctm == "tf_crop_and_resize":
            mask = (coords < 0) | (coords > n_in - 1)
            if mask.any():
                outside.append((axis, mask))
        if mode == "nearest":
            data = np.take(data, nearest_index(coords, nearest_mode, n_in, float(scales[axis])),
                           axis=axis)
        else:
            idx, w = interp_taps(coords, n_in, mode, float(scales[axis]), cubic_coeff_a,
                                 antialias, exclude_outside)
            data = _apply_taps(data, axis, idx, w)
    if outside:
        # TF CropAndResize: an output whose source lies outside the input on any axis takes
        # extrapolation_value instead of an interpolated value.
        hit = np.zeros(data.shape, dtype=bool)
        for axis, mask in outside:
            shape = [1] * r
            shape[axis] = mask.size
            hit |= mask.reshape(shape)
        data = np.where(hit, np.asarray(extrapolation_value, data.dtype), data)
    if data.dtype != x.dtype:
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            data = np.clip(np.round(data), info.min, info.max)
        data = data.astype(x.dtype)
    return np.asarray(data, order="C")


def output_geometry(in_shape, scales=None, sizes=None, axes=None, policy: str = "stretch"):
    """Output shape and per-axis scales from either ``scales`` or ``sizes`` (ONNX rules).

    ``scales``: ``out = floor(in * scale)``. ``sizes``: ``stretch`` takes them as they are, with
    ``scale = out / in``; ``not_larger``/``not_smaller`` use one scale for all ``axes`` (the min /
    max of ``sizes / in``) and ``out = round_half_up(scale * in)``.
    """
    r = len(in_shape)
    axes = list(range(r)) if axes is None else list(axes)
    out, sc = list(in_shape), [1.0] * r
    if scales is not None:
        for a, s in zip(axes, scales):
            sc[a] = float(s)
            out[a] = int(math.floor(in_shape[a] * float(s)))
        return out, sc
    ratios = [int(n) / in_shape[a] for a, n in zip(axes, sizes)]
    if policy == "stretch":
        for a, n, q in zip(axes, sizes, ratios):
            out[a], sc[a] = int(n), q
        return out, sc
    q = min(ratios) if policy == "not_larger" else max(ratios)
    for a in axes:
        out[a], sc[a] = int(q * in_shape[a] + 0.5), q
    return out, sc


# ----------------------------------------------------------------------------- builders

def _float_list(node, array, what):
    a = np.asarray(array)
    if a.ndim > 1 or a.dtype.kind not in "fiu":
        raise run_error(node, f"{what} must be a 1-D float tensor, got {a.dtype} {a.shape}")
    return [float(v) for v in a.reshape(-1)]


@register("Resize", reference=resize_reference, min_opset=10)
def Resize(node, *, mode="nearest", coordinate_transformation_mode=None, nearest_mode=None,
           cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, antialias=None,
           axes=None, keep_aspect_ratio_policy=None):
    opset = node.opset
    mode = attr_str(mode)
    if mode not in ("nearest", "linear", "cubic") or (opset < 11 and mode == "cubic"):
        raise node.error(f"mode must be nearest, linear{', cubic' if opset >= 11 else ''}; "
                         f"got {mode!r}")
    later = {"coordinate_transformation_mode": coordinate_transformation_mode,
             "nearest_mode": nearest_mode}
    if opset < 11 and any(v is not None for v in later.values()):
        raise node.error(f"attributes {sorted(k for k, v in later.items() if v is not None)} "
                         "need opset 11")
    if opset < 18 and (antialias is not None or axes is not None or keep_aspect_ratio_policy is not None):
        raise node.error("attributes antialias, axes and keep_aspect_ratio_policy need opset 18")

    # Resize-10 is asymmetric with ONNX Runtime's "simple" nearest rounding.
    ctm = attr_str(coordinate_transformation_mode) or ("asymmetric" if opset < 11 else "half_pixel")
    if ctm not in _COORD_MODES:
        raise node.error(f"coordinate_transformation_mode must be one of {_COORD_MODES}, got {ctm!r}")
    if ctm == "half_pixel_symmetric" and opset < 19:
        raise node.error("coordinate_transformation_mode 'half_pixel_symmetric' needs opset 19")
    if ctm == "tf_half_pixel_for_nn" and opset >= 13:
        raise node.error("coordinate_transformation_mode 'tf_half_pixel_for_nn' was removed in opset 13")
    near = attr_str(nearest_mode) or ("simple" if opset < 11 else "round_prefer_floor")
    if near not in _NEAREST_MODES + ("simple",) or (near == "simple" and opset >= 11):
        raise node.error(f"nearest_mode must be one of {_NEAREST_MODES}, got {near!r}")
    cubic_a = float(cubic_coeff_a)
    exclude = attr_int(node, "exclude_outside", exclude_outside)
    aa = attr_int(node, "antialias", antialias or 0)
    if exclude not in (0, 1) or aa not in (0, 1):
        raise node.error("exclude_outside and antialias must be 0 or 1")
    if aa and mode == "nearest":
        raise node.error("antialias applies to linear and cubic modes only")
    extrapolation = float(extrapolation_value)
    policy = attr_str(keep_aspect_ratio_policy) or "stretch"
    if policy not in _POLICIES:
        raise node.error(f"keep_aspect_ratio_policy must be one of {_POLICIES}, got {policy!r}")
    attr_axes = attr_ints(node, "axes", axes)

    def run(ctx, x, *rest):
        # Opset 10 inputs: (X, scales); from 11: (X, roi, scales, sizes).
        roi, scales, sizes = (None, rest[0] if rest else None, None) if opset < 11 else \
            (tuple(rest) + (None, None, None))[:3]
        scales = None if scales is None or np.asarray(scales).size == 0 else scales
        sizes = None if sizes is None or np.asarray(sizes).size == 0 else sizes
        if (scales is None) == (sizes is None):
            raise run_error(node, "exactly one of 'scales' and 'sizes' must be given")
        r = x.ndim
        ax = norm_axes(node, attr_axes, r) if attr_axes is not None else list(range(r))
        if scales is not None:
            values = _float_list(node, scales, "scales")
            if any(v <= 0 for v in values):
                raise run_error(node, f"scales {values} must be positive")
        else:
            values = [int(v) for v in np.asarray(sizes).reshape(-1)]
            if any(v < 0 for v in values):
                raise run_error(node, f"sizes {values} must be non-negative")
            if policy == "stretch" and any(x.shape[a] == 0 and v for a, v in zip(ax, values)):
                raise run_error(node, "cannot resize an empty axis to a non-empty one")
        if len(values) != len(ax):
            raise run_error(node, f"{'scales' if scales is not None else 'sizes'} {values} "
                                  f"need one value per resized axis ({len(ax)})")
        roi_full = None
        if ctm == "tf_crop_and_resize" and roi is not None and np.asarray(roi).size:
            rv = _float_list(node, roi, "roi")
            if len(rv) != 2 * len(ax):
                raise run_error(node, f"roi {rv} needs a start and an end per resized axis")
            roi_full = [0.0] * r + [1.0] * r
            for i, a in enumerate(ax):
                roi_full[a], roi_full[r + a] = rv[i], rv[len(ax) + i]
        out_shape, sc = output_geometry(
            x.shape, values if scales is not None else None,
            values if sizes is not None else None, ax, policy)
        return resize_reference(x, out_shape, sc, mode, ctm, near, cubic_a, bool(exclude),
                                extrapolation, bool(aa), roi_full)
    return run


@register("Upsample", reference=resize_reference, min_opset=7, max_opset=9)
def Upsample(node, *, mode="nearest", scales=None):
    # Upsample-7 took `scales` as an attribute, Upsample-9 as an input; both are Resize-10:
    # asymmetric coordinates, "simple" nearest rounding, N-linear for "linear".
    mode = attr_str(mode)
    if mode not in ("nearest", "linear", "bilinear"):
        raise node.error(f"mode must be 'nearest' or 'linear', got {mode!r}")
    mode = "linear" if mode == "bilinear" else mode
    attr_scales = None
    if node.opset < 9:
        if scales is None:
            raise node.error("attribute 'scales' is required before opset 9")
        attr_scales = [float(s) for s in scales]
        if any(s <= 0 for s in attr_scales):
            raise node.error(f"scales {attr_scales} must be positive")
    elif scales is not None:
        raise node.error("'scales' is an input from opset 9, not an attribute")

    def run(ctx, x, scales_in=None):
        values = attr_scales if attr_scales is not None else _float_list(node, scales_in, "scales")
        if len(values) != x.ndim or any(v <= 0 for v in values):
            raise run_error(node, f"scales {values} must be {x.ndim} positive values")
        out_shape, sc = output_geometry(x.shape, values)
        return resize_reference(x, out_shape, sc, mode, "asymmetric", "simple")
    return run
