"""Reductions (cyconv/ops/reduce.py): hand-checked cases, ONNX Runtime parity, ONNX node tests.
"""

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError

from op_testing import check_vs_ort, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- ONNX node tests

REDUCE_OPS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin"}
REDUCE_NODE_CASES = [p for p in onnx_node_cases(r"test_(reduce_|argmax|argmin)")
                     if p.values[0].model.graph.node[0].op_type in REDUCE_OPS]


def test_node_cases_found():
    assert len(REDUCE_NODE_CASES) > 80


@pytest.mark.parametrize("case", REDUCE_NODE_CASES)
def test_onnx_node(case):
    run_node_case(case)


# ----------------------------------------------------------------------------- hand-checked

def _i64(*v):
    return np.array(v, dtype=np.int64)


def test_reduce_mean_versions():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = call_op("ReduceMean", [x], {"axes": [1, -1], "keepdims": 0}, opset=13)
    np.testing.assert_allclose(y, [5.5, 17.5])
    y = call_op("ReduceMean", [x, _i64(1, -1)], {}, opset=18)
    assert y.shape == (2, 1, 1)
    assert call_op("ReduceMean", [x], {"keepdims": 0}, opset=18).shape == ()
    # Empty axes input: everything, or nothing with noop_with_empty_axes.
    assert call_op("ReduceMean", [x, _i64()], {}, opset=18).shape == (1, 1, 1)
    np.testing.assert_array_equal(
        call_op("ReduceMean", [x, _i64()], {"noop_with_empty_axes": 1}, opset=18), x)
    with pytest.raises(ModelError, match="input from opset 18"):
        call_op("ReduceMean", [x], {"axes": [0]}, opset=18)
    with pytest.raises(ModelError):
        call_op("ReduceMean", [x], {"noop_with_empty_axes": 1}, opset=13)
    with pytest.raises(InputError):
        call_op("ReduceMean", [x, _i64(0, -3)], {}, opset=18)


def test_reduce_dtypes_and_empty_sets():
    i = np.array([[-7, 3], [5, 2]], np.int32)
    assert call_op("ReduceMean", [i, _i64(1)]).tolist() == [[-2], [3]]   # truncates toward 0
    assert call_op("ReduceSum", [i, _i64(0)], {"keepdims": 0}).dtype == np.int32
    h = np.full((1000,), 0.1, np.float16)
    np.testing.assert_allclose(call_op("ReduceSum", [h]), [100.0], rtol=1e-3)
    e = np.zeros((2, 0, 3), np.float32)
    assert (call_op("ReduceMax", [e, _i64(1)]) == -np.inf).all()
    assert (call_op("ReduceMin", [e, _i64(1)]) == np.inf).all()
    assert (call_op("ReduceProd", [e, _i64(1)]) == 1).all()
    assert (call_op("ReduceLogSumExp", [e, _i64(1)]) == -np.inf).all()
    assert call_op("ReduceMax", [np.zeros((0,), np.uint8), _i64(0)]).tolist() == [0]
    b = np.array([[True, False], [False, False]])
    assert call_op("ReduceMax", [b, _i64(1)], opset=20).tolist() == [[True], [False]]
    with pytest.raises(InputError, match="opset 20"):
        call_op("ReduceMax", [b, _i64(1)], opset=18)


def test_log_sum_exp_is_stable():
    x = np.array([1000.0, 1000.0], np.float32)
    np.testing.assert_allclose(call_op("ReduceLogSumExp", [x]), [1000 + np.log(2)], rtol=1e-6)
    y = np.array([-np.inf, -np.inf], np.float32)
    assert call_op("ReduceLogSumExp", [y]).tolist() == [-np.inf]


def test_argmax_ties_and_last_index():
    x = np.array([[1, 5, 5], [7, 7, 0]], np.float32)
    assert call_op("ArgMax", [x], {"axis": 1, "keepdims": 0}).tolist() == [1, 0]
    assert call_op("ArgMax", [x], {"axis": 1, "select_last_index": 1}).tolist() == [[2], [1]]
    assert call_op("ArgMin", [x], {"axis": -2}).tolist() == [[0, 0, 1]]
    with pytest.raises(ModelError):
        call_op("ArgMax", [x], {"select_last_index": 1}, opset=11)


# ----------------------------------------------------------------------------- ONNX Runtime parity

@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                                "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum",
                                "ReduceLogSumExp"])
@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("axes,keepdims", [(None, 1), ([1], 0), ([-1, 0], 1), ([0, 2, 3], 0),
                                           ([2, 3], 1), ([-1, -2], 0), ([1, 2, 3], 1),
                                           ([3], 0)])
def test_ort_reduce(rng, op, opset, axes, keepdims):
    # trailing axes ([2, 3], [-1, -2], ...) take the global-pool kernel for Mean
    x = rng.uniform(0.5, 1.5, (2, 3, 4, 5)).astype(np.float32)
    attrs = {"keepdims": keepdims}
    inputs = [x]
    if axes is not None:
        if opset >= (13 if op == "ReduceSum" else 18):
            inputs.append(np.array(axes, np.int64))
        else:
            attrs["axes"] = axes
    check_vs_ort(op, inputs, attrs, opset=opset)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"])
def test_ort_reduce_dtypes(rng, op, dtype):
    x = rng.integers(-9, 9, (3, 4, 5)).astype(dtype)
    check_vs_ort(op, [x, _i64(1)], {"keepdims": 0}, opset=18)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(0, 1, 0), (-1, 0, 1), (1, 1, 1)])
def test_ort_arg(rng, op, axis, keepdims, last):
    x = rng.integers(0, 3, (3, 4, 5)).astype(np.float32)   # many ties
    check_vs_ort(op, [x], {"axis": axis, "keepdims": keepdims, "select_last_index": last},
                 opset=13)


def test_reduce_over_trailing_axes_keeps_nan_and_inf():
    # ReduceMean's trailing-axes path (the global-pool kernel) keeps a NaN and an -inf, as
    # ONNX Runtime does; ReduceMax keeps the NaN as ONNX's reference does (ONNX Runtime's
    # skips it), which is why it stays off that kernel
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x[0, 1, 2], x[1, 2, 0] = np.nan, -np.inf
    check_vs_ort("ReduceMean", [x], {"axes": [2], "keepdims": 0}, opset=13)
    got = call_op("ReduceMax", [x], {"axes": [2], "keepdims": 0}, opset=13)
    np.testing.assert_array_equal(got, np.max(x, axis=2))
