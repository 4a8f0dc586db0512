"""Detection post-processing: TopK, NonZero, NonMaxSuppression, RoiAlign.

Exported detectors end in these (torchvision's SSD/RetinaNet/Faster R-CNN heads, YOLO exports
with NMS). They run once per image on small tensors, so numpy is their kernel.

TopK(axis, largest, sorted), X [..., n, ...], K [1]: the k largest (smallest) values along
``axis`` and their int64 indices; ties keep the lower index first (a stable sort, as ONNX
Runtime). ``sorted=0`` leaves the order unspecified: it is sorted here too.

NonZero, X of rank r: int64 [r, nnz], the indices of the non-zero elements in row-major order.

NonMaxSuppression(center_point_box), boxes [B, N, 4], scores [B, C, N],
max_output_boxes_per_class [1], iou_threshold [1], score_threshold [1] (the last three
optional): int64 [num_selected, 3] rows (batch, class, box). Per (batch, class): boxes with
score > score_threshold, by descending score (ties: lower index first), are kept greedily
unless their IoU with a kept box is > iou_threshold, up to max_output_boxes_per_class (0 or
absent: none). Boxes are [y1, x1, y2, x2] with either corner first (center_point_box=0) or
[x_center, y_center, width, height] (1). A pair whose intersection or either area is not
positive never suppresses (ONNX's reference and ONNX Runtime).

RoiAlign(mode, output_height/width = P_h x P_w, sampling_ratio, spatial_scale,
coordinate_transformation_mode), X [N, C, H, W], rois [R, 4] (x1, y1, x2, y2), batch_indices [R]:
Y [R, C, P_h, P_w]. Each output bin averages (or maxes) a g_h x g_w grid of bilinear samples
(g = sampling_ratio, or ceil(roi size / P) when 0). The sample positions of one ROI are a
product of a y-grid and an x-grid, so for ``avg`` the bilinear weights factor into
``A_y [P_h, H]`` and ``A_x [P_w, W]`` and ``Y[r, c] = A_y X[b, c] A_x' / (g_h g_w)``: two small
matmuls per ROI. ``max`` follows ONNX Runtime (and ONNX's reference): per sample the largest
of the four *weighted* corner values, then the largest over the samples. A sample outside
[-1, H] x [-1, W] contributes 0; coordinates below 0 clamp to 0, at or past the last row or
column to it (Caffe2's RoIAlign, which both implement).
"""
from __future__ import annotations

import numpy as np

from ..engine.registry import register
from ..errors import InputError


def _run_error(node, message):
    return InputError(f"{node.op_type} node {node.name!r}: {message}")


# ------------------------------------------------------------------------------------------
# references

def _descending_key(x):
    """A key whose ascending order is x's descending order, without overflow."""
    return ~x if x.dtype.kind in "iu" else -x


def topk_reference(x, k, axis=-1, largest=1, sorted=1):  # noqa: A002 (ONNX name)
    """``(values, int64 indices)`` of the top ``k`` along ``axis`` (stable: ties by index)."""
    key = _descending_key(x) if largest else x
    idx = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)


def nonzero_reference(x):
    """int64 ``[rank, nnz]`` indices of the non-zero elements (row-major order)."""
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


def _corners(boxes, center_point_box):
    """``(y_min, x_min, y_max, x_max)`` columns of ``boxes[N, 4]`` in float64."""
    b = boxes.astype(np.float64)
    if center_point_box:
        xc, yc, w, h = b.T
        return yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2
    return (np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]),
            np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3]))


def _suppressed(c, i, rest, iou_threshold):
    """Which boxes ``rest`` the box ``i`` suppresses (IoU > threshold, positive areas)."""
    y0, x0, y1, x1 = c
    iw = np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest])
    ih = np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])
    inter = iw * ih
    a_i = (x1[i] - x0[i]) * (y1[i] - y0[i])
    a_r = (x1[rest] - x0[rest]) * (y1[rest] - y0[rest])
    union = a_i + a_r - inter
    ok = (iw > 0) & (ih > 0) & (inter > 0) & (a_i > 0) & (a_r > 0) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ok & (inter / np.where(ok, union, 1.0) > iou_threshold)


def nms_reference(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                  score_threshold=None, center_point_box=0):
    """int64 ``[num_selected, 3]`` (batch, class, box) rows of greedy NMS (module docstring)."""
    max_out = 0 if max_output_boxes_per_class is None or np.size(max_output_boxes_per_class) == 0 \
        else int(np.asarray(max_output_boxes_per_class).reshape(-1)[0])
    iou = 0.0 if iou_threshold is None or np.size(iou_threshold) == 0 \
        else float(np.asarray(iou_threshold).reshape(-1)[0])
    thr = None if score_threshold is None or np.size(score_threshold) == 0 \
        else float(np.asarray(score_threshold).reshape(-1)[0])
    rows = []
    if max_out <= 0:
        return np.zeros((0, 3), np.int64)
    n_batch, n_class = scores.shape[:2]
    for b in range(n_batch):
        c = _corners(boxes[b], center_point_box)
        for k in range(n_class):
            s = scores[b, k]
            cand = np.flatnonzero(s > thr) if thr is not None else np.arange(s.shape[0])
            # descending score, ties by lower index: stable sort of -score
            order = cand[np.argsort(-s[cand].astype(np.float64), kind="stable")]
            kept = 0
            while order.size and kept < max_out:
                i, order = order[0], order[1:]
                rows.append((b, k, i))
                kept += 1
                if order.size:
                    order = order[~_suppressed(c, i, order, iou)]
    return np.array(rows, np.int64).reshape(-1, 3)


def _axis_samples(start, bin_size, pooled, grid, size):
    """Bilinear taps along one axis for ``pooled`` bins of ``grid`` samples each:
    ``(low[P, g], high[P, g], w_low[P, g], w_high[P, g])`` (weights 0 outside [-1, size])."""
    k = np.arange(pooled)[:, None]
    j = np.arange(grid)[None, :]
    pos = start + k * bin_size + (j + 0.5) * bin_size / grid           # [P, g]
    inside = (pos >= -1.0) & (pos <= size)
    pos = np.maximum(pos, 0.0)
    low = pos.astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    pos = np.where(at_end, low, pos)
    frac = pos - low
    return low, high, np.where(inside, 1.0 - frac, 0.0), np.where(inside, frac, 0.0)


def roi_align_reference(x, rois, batch_indices, mode="avg", output_height=1, output_width=1,
                        sampling_ratio=0, spatial_scale=1.0, half_pixel=True):
    """``Y [R, C, P_h, P_w]`` of RoiAlign (see the module docstring), in float64."""
    n_roi, channels, height, width = rois.shape[0], x.shape[1], x.shape[2], x.shape[3]
    ph, pw = output_height, output_width
    y = np.zeros((n_roi, channels, ph, pw))
    xd = x.astype(np.float64)
    offset = 0.5 if half_pixel else 0.0
    for r in range(n_roi):
        x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in rois[r])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not half_pixel:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph, roi_w / pw
        gh = int(sampling_ratio) if sampling_ratio > 0 else int(np.ceil(roi_h / ph))
        gw = int(sampling_ratio) if sampling_ratio > 0 else int(np.ceil(roi_w / pw))
        if gh <= 0 or gw <= 0:
            continue                                   # no samples: the bin stays 0
        ylo, yhi, wylo, wyhi = _axis_samples(y1, bin_h, ph, gh, height)
        xlo, xhi, wxlo, wxhi = _axis_samples(x1, bin_w, pw, gw, width)
        plane = xd[int(batch_indices[r])]                                # [C, H, W]
        if mode == "avg":
            ay = np.zeros((ph, height))
            ax = np.zeros((pw, width))
            rows = np.repeat(np.arange(ph), gh)
            cols = np.repeat(np.arange(pw), gw)
            np.add.at(ay, (rows, ylo.reshape(-1)), wylo.reshape(-1))
            np.add.at(ay, (rows, yhi.reshape(-1)), wyhi.reshape(-1))
            np.add.at(ax, (cols, xlo.reshape(-1)), wxlo.reshape(-1))
            np.add.at(ax, (cols, xhi.reshape(-1)), wxhi.reshape(-1))
            y[r] = ay @ plane @ ax.T / max(gh * gw, 1)
        else:
            # weighted corners [C, P_h, g_h, P_w, g_w], max over corners then samples
            def corner(yi, wy, xi, wx):
                v = plane[:, yi.reshape(-1)][:, :, xi.reshape(-1)]
                v = v.reshape(channels, ph, gh, pw, gw)
                return v * wy[None, :, :, None, None] * wx[None, None, None, :, :]
            best = np.maximum(np.maximum(corner(ylo, wylo, xlo, wxlo),
                                         corner(ylo, wylo, xhi, wxhi)),
                              np.maximum(corner(yhi, wyhi, xlo, wxlo),
                                         corner(yhi, wyhi, xhi, wxhi)))
            y[r] = best.max(axis=(2, 4))
    return y.astype(x.dtype)


# ------------------------------------------------------------------------------------------
# builders

@register("TopK", reference=topk_reference, min_opset=10)
def TopK(node, *, axis=-1, largest=1, sorted=1):  # noqa: A002 (ONNX name)
    if largest not in (0, 1) or sorted not in (0, 1):
        raise node.error(f"largest and sorted must be 0 or 1, got {largest}, {sorted}")
    axis = int(axis)
    n_out = node.num_outputs
    if node.opset < 11 and not largest:
        raise node.error("largest=0 exists from opset 11")

    def run(ctx, x, k):
        k_arr = np.asarray(k)
        if k_arr.size != 1 or k_arr.dtype.kind not in "iu":
            raise _run_error(node, f"K must be one integer, got {k_arr.dtype} {k_arr.shape}")
        kk = int(k_arr.reshape(-1)[0])
        if not -x.ndim <= axis < x.ndim:
            raise _run_error(node, f"axis {axis} is out of range for rank {x.ndim}")
        if not 0 <= kk <= x.shape[axis]:
            raise _run_error(node, f"K = {kk} is not in [0, {x.shape[axis]}] on axis {axis}")
        values, indices = topk_reference(x, kk, axis, largest, sorted)
        outs = (np.ascontiguousarray(values), np.ascontiguousarray(indices))
        return outs if n_out == 2 else outs[0]
    return run


@register("NonZero", reference=nonzero_reference, min_opset=9)
def NonZero(node):
    def run(ctx, x):
        return nonzero_reference(x)
    return run


@register("NonMaxSuppression", reference=nms_reference, min_opset=10)
def NonMaxSuppression(node, *, center_point_box=0):
    if center_point_box not in (0, 1):
        raise node.error(f"center_point_box must be 0 or 1, got {center_point_box}")
    if not 2 <= node.num_inputs <= 5:
        raise node.error(f"expects 2 to 5 inputs, got {node.num_inputs}")

    def run(ctx, boxes, scores, max_out=None, iou=None, score_thr=None):
        if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 \
                or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
            raise _run_error(node, f"boxes {boxes.shape} must be [B, N, 4] and scores "
                                   f"{scores.shape} [B, C, N]")
        return nms_reference(boxes, scores, max_out, iou, score_thr, center_point_box)
    return run


@register("RoiAlign", reference=roi_align_reference, min_opset=10)
def RoiAlign(node, *, mode="avg", output_height=1, output_width=1, sampling_ratio=0,
             spatial_scale=1.0, coordinate_transformation_mode=None):
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("avg", "max"):
        raise node.error(f"mode must be avg or max, got {mode!r}")
    # Opset 16 added the attribute (default half_pixel); opset 10 behaved as output_half_pixel.
    ctm = coordinate_transformation_mode
    if isinstance(ctm, bytes):
        ctm = ctm.decode()
    if ctm is None:
        ctm = "half_pixel" if node.opset >= 16 else "output_half_pixel"
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise node.error(f"coordinate_transformation_mode {ctm!r} is not half_pixel or "
                         f"output_half_pixel")
    for name, v in (("output_height", output_height), ("output_width", output_width)):
        if int(v) != v or v < 1:
            raise node.error(f"{name} must be a positive int, got {v!r}")
    if int(sampling_ratio) != sampling_ratio or sampling_ratio < 0:
        raise node.error(f"sampling_ratio must be an int >= 0, got {sampling_ratio!r}")
    attrs = dict(mode=mode, output_height=int(output_height), output_width=int(output_width),
                 sampling_ratio=int(sampling_ratio), spatial_scale=float(spatial_scale),
                 half_pixel=ctm == "half_pixel")

    def run(ctx, x, rois, batch_indices):
        if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4 \
                or batch_indices.shape != (rois.shape[0],):
            raise _run_error(node, f"X {x.shape} must be [N, C, H, W], rois {rois.shape} "
                                   f"[R, 4] and batch_indices {batch_indices.shape} [R]")
        if batch_indices.size and not (0 <= batch_indices.min() and
                                       batch_indices.max() < x.shape[0]):
            raise _run_error(node, f"batch_indices outside [0, {x.shape[0]})")
        return roi_align_reference(x, rois, batch_indices, **attrs)
    return run
