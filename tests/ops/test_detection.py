"""Detection post-processing (cyconv/ops/detection.py): TopK, NonZero, NonMaxSuppression and
RoiAlign vs ONNX Runtime on one-node models (ties, both box formats, thresholds, ROIs partly
outside the map, both pooling modes), errors, and ONNX's node tests.

The ONNX-runtime and node-test helpers are repeated in each tests/ops/test_<family>.py on
purpose: each family's tests stay runnable on their own, and the helpers are short.
"""

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- TopK / NonZero

@pytest.mark.parametrize("axis,largest", [(-1, 1), (0, 1), (1, 0), (-1, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_topk_matches_onnxruntime(rng, axis, largest, dtype):
    x = rng.integers(-5, 5, (4, 9, 6)).astype(dtype)   # many ties: index order matters
    k = np.array([3], np.int64)
    attrs = {"axis": axis, "largest": largest}
    got = call_op("TopK", [x, k], attrs, opset=11, num_outputs=2)
    want = ort_run("TopK", [x, k], attrs, 11, [dtype, np.int64])
    for g, w in zip(got, want):
        assert_same(g, w, rtol=0, atol=0)


def test_topk_extremes_and_errors():
    x = np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max], np.int64)
    values, _ = call_op("TopK", [x, np.array([3])], {}, opset=11, num_outputs=2)
    assert values.tolist() == [x[2], 0, x[0]]
    with pytest.raises(InputError, match="K = 4"):
        call_op("TopK", [x, np.array([4])], {}, opset=11, num_outputs=2)
    with pytest.raises(ModelError, match="largest"):
        call_op("TopK", [x, np.array([1])], {"largest": 2}, opset=11, num_outputs=2)


def test_nonzero_matches_onnxruntime(rng):
    x = (rng.random((3, 4, 5)) < 0.3).astype(np.float32)
    got = call_op("NonZero", [x], opset=13)
    assert_same(got, ort_run("NonZero", [x], {}, 13, [np.int64])[0], rtol=0, atol=0)
    assert call_op("NonZero", [np.zeros((2, 2), np.int32)], opset=13).shape == (2, 0)


# ----------------------------------------------------------------------------- NMS

def random_boxes(rng, b, n, center):
    xy = rng.uniform(0, 10, (b, n, 2))
    wh = rng.uniform(0.5, 4, (b, n, 2))
    if center:
        return np.concatenate([xy, wh], -1).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], -1)
    flip = rng.random((b, n)) < 0.3        # either corner may come first
    boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    return boxes.astype(np.float32)


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("max_out,iou,thr", [(5, 0.5, 0.3), (100, 0.3, None), (2, 0.0, 0.0),
                                             (0, 0.5, None)])
def test_nms_matches_onnxruntime(rng, center, max_out, iou, thr):
    boxes = random_boxes(rng, 2, 40, center)
    scores = rng.random((2, 3, 40)).astype(np.float32)
    scores[0, 0, :5] = 0.75                   # ties: lower index first
    ins = [boxes, scores, np.array([max_out], np.int64), np.array([iou], np.float32)]
    if thr is not None:
        ins.append(np.array([thr], np.float32))
    attrs = {"center_point_box": center}
    got = call_op("NonMaxSuppression", ins, attrs, opset=11)
    want = ort_run("NonMaxSuppression", ins, attrs, 11, [np.int64])[0]
    assert_same(got, want, rtol=0, atol=0)


def test_nms_by_hand():
    # Box 1 overlaps box 0 with IoU 0.6 (suppressed at 0.5); box 2 is apart.
    boxes = np.array([[[0, 0, 1, 1], [0, 0.25, 1, 1.25], [0, 5, 1, 6]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.7]]], np.float32)
    got = call_op("NonMaxSuppression", [boxes, scores, np.array([3]), np.array([0.5])],
                  opset=11)
    assert got.tolist() == [[0, 0, 0], [0, 0, 2]]
    with pytest.raises(ModelError, match="center_point_box"):
        call_op("NonMaxSuppression", [boxes, scores], {"center_point_box": 2}, opset=11)
    with pytest.raises(InputError, match="must be"):
        call_op("NonMaxSuppression", [boxes, scores[:, :, :2]], opset=11)


# ----------------------------------------------------------------------------- RoiAlign

@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("ratio", [0, 2])
def test_roi_align_matches_onnxruntime(rng, mode, ctm, ratio):
    x = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)
    xy = rng.uniform(-4, 20, (6, 2))
    rois = np.concatenate([xy, xy + rng.uniform(0.5, 12, (6, 2))], 1).astype(np.float32)
    rois[0] = [3, 3, 3, 3]                       # empty ROI
    batch = rng.integers(0, 2, 6).astype(np.int64)
    attrs = {"mode": mode, "output_height": 3, "output_width": 4, "sampling_ratio": ratio,
             "spatial_scale": 0.5, "coordinate_transformation_mode": ctm}
    got = call_op("RoiAlign", [x, rois, batch], attrs, opset=16)
    want = ort_run("RoiAlign", [x, rois, batch], attrs, 16, [np.float32])[0]
    assert_same(got, want, rtol=1e-5, atol=1e-6)


def test_roi_align_avg_is_mean_of_bilinear_samples():
    # One bin of a ramp X[h, w] = w: bilinear samples are exact, so the bin's mean is the
    # mean sample position (half_pixel: roi x in [0.5, 4.5] -> [0, 4], centres 1 and 3).
    x = np.tile(np.arange(8, dtype=np.float32), (1, 1, 8, 1))
    rois = np.array([[0.5, 0.5, 4.5, 4.5]], np.float32)
    y = call_op("RoiAlign", [x, rois, np.zeros(1, np.int64)],
                {"sampling_ratio": 2}, opset=16)
    np.testing.assert_allclose(y.reshape(-1), [2.0], rtol=1e-6)
    with pytest.raises(ModelError, match="mode"):
        call_op("RoiAlign", [x, rois, np.zeros(1, np.int64)], {"mode": "sum"}, opset=16)
    with pytest.raises(InputError, match="batch_indices"):
        call_op("RoiAlign", [x, rois, np.ones(1, np.int64)], {}, opset=16)


# ----------------------------------------------------------------------------- ONNX node tests

DET_OPS = {"TopK", "NonZero", "NonMaxSuppression", "RoiAlign"}
NODE_CASES = onnx_node_cases(r"test_(top_k|nonzero|nonmaxsuppression|roialign)", DET_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 10


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
