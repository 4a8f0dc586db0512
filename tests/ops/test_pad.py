"""Pad (cyconv/ops/pad.py): hand-checked cases, ONNX Runtime parity, ONNX node tests.

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
