"""Pad (cyconv/ops/pad.py): hand-checked cases, ONNX Runtime parity, ONNX node tests.
"""

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError

from op_testing import check_vs_ort, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- ONNX node tests

PAD_NODE_CASES = [p for p in onnx_node_cases(r"test_(constant_pad|reflect_pad|edge_pad|wrap_pad|pad)")
                  if p.values[0].model.graph.node[0].op_type == "Pad"]


def test_node_cases_found():
    assert len(PAD_NODE_CASES) >= 6


@pytest.mark.parametrize("case", PAD_NODE_CASES)
def test_onnx_node(case):
    run_node_case(case)


# ----------------------------------------------------------------------------- hand-checked

def _i64(*v):
    return np.array(v, dtype=np.int64)


def test_pad_modes_1d():
    x = np.array([1, 2, 3, 4], np.float32)
    pad = lambda mode, *p: call_op("Pad", [x, _i64(*p)], {"mode": mode}).tolist()  # noqa: E731
    assert pad("constant", 2, 1) == [0, 0, 1, 2, 3, 4, 0]
    assert pad("reflect", 2, 1) == [3, 2, 1, 2, 3, 4, 3]
    assert pad("edge", 2, 1) == [1, 1, 1, 2, 3, 4, 4]
    assert pad("wrap", 2, 1) == [3, 4, 1, 2, 3, 4, 1]
    # Negative pads crop first, then pad: wrap sees the cropped torus.
    assert pad("wrap", -1, 2) == [2, 3, 4, 2, 3]
    assert pad("constant", -1, -2) == [2]
    y = call_op("Pad", [x, _i64(1, 1), np.array(9, np.float32)]).tolist()
    assert y == [9, 1, 2, 3, 4, 9]
    with pytest.raises(InputError, match="crop"):
        call_op("Pad", [x, _i64(-3, -2)])


def test_pad_versions_and_axes():
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    y2 = call_op("Pad", [x], {"pads": [0, 1, 0, 0], "value": 7.0}, opset=2)
    assert y2.tolist() == [[7, 0, 1, 2], [7, 3, 4, 5]] and y2.dtype == np.int32
    assert call_op("Pad", [x], {"paddings": [1, 0, 0, 0]}, opset=1).shape == (3, 3)
    y18 = call_op("Pad", [x, _i64(1, 2), None, _i64(-1)], {"mode": "edge"}, opset=18)
    assert y18.tolist() == [[0, 0, 1, 2, 2, 2], [3, 3, 4, 5, 5, 5]]
    with pytest.raises(ModelError, match="wrap"):
        call_op("Pad", [x, _i64(0, 0, 0, 0)], {"mode": "wrap"}, opset=18)
    with pytest.raises(ModelError, match="mode"):
        call_op("Pad", [x, _i64(0, 0, 0, 0)], {"mode": "mirror"})
    with pytest.raises(ModelError):
        call_op("Pad", [x], {"pads": [0, 0, 0, 0]}, opset=11)
    with pytest.raises(InputError):
        call_op("Pad", [x, _i64(1, 1)])
    with pytest.raises(InputError):
        call_op("Pad", [np.zeros((0, 2), np.float32), _i64(1, 0, 0, 0)], {"mode": "edge"})


def test_pad_reflect_wider_than_axis_follows_numpy():
    # The spec's example 2: two reflected columns onto a two-column tensor.
    x = np.array([[1.0, 1.2], [2.3, 3.4], [4.5, 5.7]], np.float32)
    y = call_op("Pad", [x, _i64(0, 2, 0, 0)], {"mode": "reflect"})
    np.testing.assert_array_equal(y, x[:, [0, 1, 0, 1]])


# ----------------------------------------------------------------------------- ONNX Runtime parity

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8,
                                   np.bool_])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [(0, 0, 1, 2, 0, 0, 2, 1), (1, 0, -1, 2, 0, 1, 1, -2),
                                  (0, 0, 0, 0, 0, 0, 0, 0)])
def test_ort_pad(rng, dtype, mode, pads):
    x = (rng.standard_normal((2, 3, 4, 5)) * 9).astype(dtype)
    inputs = [x, np.array(pads, np.int64)]
    if mode == "constant" and dtype != np.bool_:
        inputs.append(np.array(3, dtype))
    check_vs_ort("Pad", inputs, {"mode": mode}, opset=19)


@pytest.mark.parametrize("axes", [[1], [-1, 0], [3, 2]])
@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_ort_pad_axes(rng, axes, mode):
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    pads = np.array([1, 2][:len(axes)] + [2, 0][:len(axes)], np.int64)
    check_vs_ort("Pad", [x, pads, None, np.array(axes, np.int64)], {"mode": mode}, opset=18)


@pytest.mark.parametrize("opset", [2, 11])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_ort_pad_old_opsets(rng, opset, mode):
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    pads = [0, 0, 1, 2, 0, 0, 3, -1]
    if opset < 11:
        check_vs_ort("Pad", [x], {"mode": mode, "pads": pads, "value": 1.5}, opset=opset)
    else:
        check_vs_ort("Pad", [x, np.array(pads, np.int64), np.array(1.5, np.float32)],
                     {"mode": mode}, opset=opset)
