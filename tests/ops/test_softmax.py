"""Softmax / LogSoftmax (cyconv/ops/softmax.py): kernels vs the numpy references over axes,
opset < 13 flattening vs opset >= 13 single-axis semantics, numerical stability, thread-count
independence, ONNX Runtime parity and ONNX's node tests.
"""
import warnings

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops import softmax as sm

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- kernel vs reference

CASES = [
    ((7,), -1), ((3, 1000), -1), ((3, 1000), 0), ((2, 3, 4), 1), ((2, 3, 4), 0),
    ((2, 5, 70), 1), ((2, 5, 130), -2), ((4, 3, 5, 6), 1), ((1, 1), 0), ((6, 1), 1),
    ((64, 1000), 1), ((2, 21, 64, 64), 1),
    # row lengths around the kernel's blocks (16- and 32-float lanes, 256-element float sums)
    ((5, 15), -1), ((5, 17), -1), ((3, 31), -1), ((3, 255), -1), ((3, 256), -1),
    ((3, 257), -1), ((2, 1031), -1), ((2, 5000), -1),
]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("shape,axis", CASES, ids=str)
def test_kernel_matches_reference(rng, op, opset, shape, axis):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    x0 = x.copy()
    ref = sm.softmax_reference if op == "Softmax" else sm.log_softmax_reference
    want = ref(x, axis, legacy=opset < 13)
    outs = [call_op(op, [x], {"axis": axis}, opset=opset, n_threads=t) for t in (1, 2, 3)]
    assert_same(outs[0], want, rtol=2e-6, atol=1e-7 if op == "Softmax" else 2e-6)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    np.testing.assert_array_equal(x, x0)


def test_default_axis_depends_on_opset(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    y11 = call_op("Softmax", [x], opset=11)
    y13 = call_op("Softmax", [x], opset=13)
    np.testing.assert_allclose(y11.reshape(2, 12).sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(y13.sum(axis=-1), 1, rtol=1e-6)
    assert_same(y11, sm.softmax_reference(x, 1, legacy=True), rtol=2e-6)


def test_large_and_infinite_inputs():
    x = np.array([[1000.0, 1001.0, 1002.0], [-1e30, 0.0, 1e30], [-np.inf, 0.0, 1.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = call_op("Softmax", [x])
        ly = call_op("LogSoftmax", [x])
    assert np.isfinite(y).all()
    assert_same(y, sm.softmax_reference(x), rtol=1e-6)
    assert ly[2, 0] == -np.inf
    assert_same(ly[:, 1:], sm.log_softmax_reference(x)[:, 1:], rtol=1e-6)


def test_dtypes_and_errors(rng):
    x = rng.standard_normal((3, 4))
    y = call_op("LogSoftmax", [x], {"axis": 0})
    assert y.dtype == np.float64
    assert_same(y, sm.log_softmax_reference(x, 0), rtol=1e-12)
    with pytest.raises(InputError, match="axis 2"):
        call_op("Softmax", [x.astype(np.float32)], {"axis": 2})
    with pytest.raises(ModelError, match="axis"):
        call_op("Softmax", [x.astype(np.float32)], {"axis": 1.5})


# ----------------------------------------------------------------------------- ONNX Runtime

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (13, 1), (13, -1), (11, 0), (13, 0)])
def test_matches_onnxruntime(rng, op, opset, axis):
    x = (rng.standard_normal((2, 3, 4, 5)) * 3).astype(np.float32)
    want = ort_run(op, [x], {"axis": axis}, opset, [np.float32])[0]
    assert_same(call_op(op, [x], {"axis": axis}, opset=opset), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- ONNX node tests

NODE_CASES = onnx_node_cases(r"test_(softmax|logsoftmax)", {"Softmax", "LogSoftmax"})


def test_node_cases_found():
    assert len(NODE_CASES) >= 14


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
