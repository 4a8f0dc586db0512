"""Detection post-processing: TopK, NonZero, NonMaxSuppression.

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
