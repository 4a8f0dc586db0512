"""Helpers shared by the operator tests (tests/ops/test_<family>.py).

* :func:`check_vs_ort` / :func:`ort_run`: one-node models through ONNX Runtime, the peer.
* :func:`onnx_node_cases` / :func:`run_node_case`: ONNX's own node tests
  (``collect_testcases()``, generated in memory), run op by op through ``call_op``.
* :func:`assert_same`: same dtype and shape; exact for non-floats, rtol/atol for floats.
"""
import re
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op


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


def check_vs_ort(op_type, inputs, attrs=None, opset=17, num_outputs=1, atol=1e-7):
    """cyconv's op (``call_op``) and ONNX Runtime's agree; returns cyconv's outputs."""
    attrs = attrs or {}
    got = as_tuple(call_op(op_type, inputs, attrs, opset=opset, num_outputs=num_outputs))
    want = ort_run(op_type, inputs, attrs, opset, [g.dtype for g in got])
    for g, w in zip(got, want):
        assert_same(g, w, atol=atol)
    return got


def onnx_node_cases(pattern, ops=None, exclude=()):
    """ONNX's one-node test cases named like ``pattern`` (whose node is one of ``ops``)."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [pytest.param(c, id=c.name) for c in cases
            if re.match(pattern, c.name) and c.name not in exclude
            and len(c.model.graph.node) == 1
            and (ops is None or c.model.graph.node[0].op_type in ops)]


def run_node_case(case, n_threads=1):
    """Run one ONNX node test case through ``call_op`` and compare as ONNX's runner does."""
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
        out = as_tuple(call_op(node.op_type, args, attrs, opset=opset, n_threads=n_threads,
                               num_outputs=len(node.output)))
        out = [o for o, name in zip(out, node.output) if name]   # "" = output not wanted
        assert len(out) == len(expected)
        for got, want in zip(out, expected):
            assert_same(got, array(want), case.rtol, case.atol)
