"""Pad: constant / reflect / edge / wrap padding, negative pads crop.

Pads are ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` over ``axes`` (all axes before
opset 18). Negative pads remove elements; cropping happens before padding, as ONNX Runtime
does (the order matters for ``wrap``, where the torus is the cropped tensor).
``reflect`` follows numpy.pad, which the spec cites, including pads wider than the axis
(the spec's own example 2 pads 2 onto a length-2 axis); ONNX Runtime rejects those.
"""
from __future__ import annotations

import numpy as np

from ..engine.registry import register
from .shape import attr_ints, attr_str, int_list, norm_axes, run_error

_MODES = ("constant", "reflect", "edge", "wrap")


def pad_reference(x: np.ndarray, pads, mode: str = "constant", value=0, axes=None) -> np.ndarray:
    """Pad (or crop, for negative pads) ``x``.

    Parameters
    ----------
    x : ndarray, shape (d0, ..., d{r-1})
    pads : sequence of int, length 2 * len(axes)
        Begin pads of every axis, then end pads.
    mode : {"constant", "reflect", "edge", "wrap"}
    value : scalar
        Fill of ``constant`` mode, converted to ``x.dtype``.
    axes : None | sequence of int
        Non-negative axes the pads refer to (default: all, in order).

    Returns
    -------
    ndarray of ``x.dtype``, shape ``d[i] + begin[i] + end[i]`` per axis
    """
    r = x.ndim
    axes = list(range(r)) if axes is None else list(axes)
    n = len(axes)
    begin, end = [0] * r, [0] * r
    for i, a in enumerate(axes):
        begin[a], end[a] = int(pads[i]), int(pads[n + i])
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for b, e, d in zip(begin, end, x.shape))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        # One allocation and one copy; np.pad would fill the whole array first.
        out = np.full([d + b + e for d, (b, e) in zip(x.shape, widths)],
                      np.asarray(value).astype(x.dtype), dtype=x.dtype)
        out[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, widths))] = x
        return out
    return np.asarray(np.pad(x, widths, mode=mode), order="C")


@register("Pad", reference=pad_reference)
def Pad(node, *, mode="constant", pads=None, paddings=None, value=None):
    mode = attr_str(mode)
    if mode not in _MODES:
        raise node.error(f"mode must be one of {_MODES}, got {mode!r}")
    if mode == "wrap" and node.opset < 19:
        raise node.error(f"mode 'wrap' needs opset 19 (model has {node.opset})")
    # Pad-1 named the attribute `paddings`; opsets 2-10 `pads` and `value`; from 11 they are
    # inputs (pads, constant_value, and axes from 18).
    attr_pads = attr_ints(node, "paddings", paddings) if node.opset < 2 else attr_ints(node, "pads", pads)
    if node.opset >= 11:
        if pads is not None or value is not None:
            raise node.error("pads and value are inputs from opset 11, not attributes")
        if node.num_inputs < 2:
            raise node.error("needs inputs data and pads")
        if node.num_inputs >= 4 and node.opset < 18:
            raise node.error("input 'axes' needs opset 18")
    else:
        if attr_pads is None:
            raise node.error("attribute 'pads' is required before opset 11")
        if paddings is not None and node.opset >= 2:
            raise node.error("attribute 'paddings' was renamed 'pads' in opset 2")
    attr_value = 0.0 if value is None else float(value)

    def run(ctx, x, pads_in=None, value_in=None, axes_in=None):
        pad_list = int_list(node, pads_in, "pads") if pads_in is not None else attr_pads
        if node.opset >= 11:
            fill = np.asarray(value_in).reshape(-1)[0] if value_in is not None and \
                np.asarray(value_in).size else (0 if x.dtype != object else "")
        else:
            fill = attr_value
        axes = norm_axes(node, int_list(node, axes_in, "axes"), x.ndim) \
            if axes_in is not None else list(range(x.ndim))
        if len(pad_list) != 2 * len(axes):
            raise run_error(node, f"pads {pad_list} must hold 2 values for each of {len(axes)} axes")
        n = len(axes)
        for i, a in enumerate(axes):
            if max(-pad_list[i], 0) + max(-pad_list[n + i], 0) > x.shape[a]:
                raise run_error(node, f"pads {pad_list} crop more than axis {a} holds")
        try:
            return pad_reference(x, pad_list, mode, fill, axes)
        except ValueError as exc:
            # numpy refuses to reflect/edge/wrap-pad an empty axis
            raise run_error(node, f"{mode} padding of shape {x.shape}: {exc}") from None
    return run
