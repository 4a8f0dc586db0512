"""Reductions (cyconv/ops/reduce.py): hand-checked cases, ONNX Runtime parity, ONNX node tests.

The ONNX-runtime and node-test helpers are repeated in each tests/ops/test_<family>.py on
purpose: each family's tests stay runnable on their own, and the helpers are short.
"""
import re
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError

ort = pytest.importorskip("onnxruntime")


# ----------------------------------------------------------------------------- helpers

def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def assert_same(got, want, rtol=1e-3, atol=1e-7):
    """Same dtype and shape; exact for ints/bools/strings, rtol/atol for floats."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w, rtol, atol)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(got, want)


def ort_run(op_type, inputs, attrs, opset, out_dtypes):
    """Run a one-node model in ONNX Runtime; ``None`` inputs are omitted optional inputs."""
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(len(out_dtypes))]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
         for n, x in zip(names, inputs) if x is not None],
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(d)), None)
         for n, d in zip(outs, out_dtypes)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: x for n, x in zip(names, inputs) if x is not None})


def check_vs_ort(op_type, inputs, attrs=None, opset=17, num_outputs=1):
    attrs = attrs or {}
    got = as_tuple(call_op(op_type, inputs, attrs, opset=opset, num_outputs=num_outputs))
    want = ort_run(op_type, inputs, attrs, opset, [g.dtype for g in got])
    for g, w in zip(got, want):
        assert_same(g, w)
    return got


def onnx_node_cases(pattern, exclude=()):
    """ONNX's one-node test cases whose name matches ``pattern`` (generated, no download)."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [pytest.param(c, id=c.name) for c in cases
            if re.match(pattern, c.name) and c.name not in exclude
            and len(c.model.graph.node) == 1]


def run_node_case(case):
    graph = case.model.graph
    node = graph.node[0]
    opset = next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def array(v):
        return numpy_helper.to_array(v) if isinstance(v, TensorProto) else v

    for inputs, expected in case.data_sets:
        feeds = {i.name: array(v) for i, v in zip(graph.input, inputs)}
        args = [feeds[n] if n else None for n in node.input]
        while args and args[-1] is None:
            args.pop()
        out = as_tuple(call_op(node.op_type, args, attrs, opset=opset,
                               num_outputs=len(node.output)))
        assert len(out) == len(expected)
        for got, want in zip(out, expected):
            assert_same(got, array(want), case.rtol, case.atol)


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
@pytest.mark.parametrize("axes,keepdims", [(None, 1), ([1], 0), ([-1, 0], 1), ([0, 2, 3], 0)])
def test_ort_reduce(rng, op, opset, axes, keepdims):
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
