"""ConvTranspose: kernel vs the numpy reference over geometry, groups, output_padding,
output_shape and auto_pad; thread invariance; errors; ONNX Runtime; ONNX node tests."""
import re
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv.ops  # noqa: F401
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops.conv import conv_reference, conv_transpose_reference


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def ort_run(op, inputs, attrs, out_rank):
    import onnxruntime as ort
    names = ["x", "w", "b"][:len(inputs)]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape)
                      for n, v in zip(names, inputs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * out_rank)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs)))[0]


def onnx_node_cases(pattern, ops):
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [pytest.param(c, id=c.name) for c in cases
            if re.match(pattern, c.name) and len(c.model.graph.node) == 1
            and c.model.graph.node[0].op_type in ops]


def run_node_case(case, n_threads=2):
    graph, node = case.model.graph, case.model.graph.node[0]
    opset = next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for inputs, expected in case.data_sets:
        arrays = [numpy_helper.to_array(v) if isinstance(v, TensorProto) else v for v in inputs]
        feeds = dict(zip([i.name for i in graph.input], arrays))
        args = [feeds[n] for n in node.input if n]
        for consts in ((), tuple(range(1, len(args)))):
            y = call_op(node.op_type, args, attrs, opset=opset, n_threads=n_threads,
                        const_inputs=consts)
            want = numpy_helper.to_array(expected[0]) if isinstance(
                expected[0], TensorProto) else expected[0]
            assert y.dtype == want.dtype and y.shape == want.shape
            np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-7)


def ref64(x, w, b=None, **attrs):
    return conv_transpose_reference(x.astype(np.float64), w.astype(np.float64),
                                    None if b is None else b.astype(np.float64), **attrs)


def run_all_ways(x, w, b, attrs):
    inputs = [x, w] + ([b] if b is not None else [])
    outs = [call_op("ConvTranspose", inputs, attrs, n_threads=t, const_inputs=ci)
            for ci in ((1, 2), ()) for t in (1, 2, 3)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    return outs[0]


def check(y, want, K):
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5 * max(K, 1) ** 0.5)


# (N, C, spatial), (M/group, k), attrs
CASES = [
    ((1, 3, 5, 5), (2, (3, 3)), {}),
    ((2, 4, 4, 6), (3, (3, 3)), {"strides": [2, 2]}),
    ((1, 2, 5, 4), (3, (3, 2)), {"strides": [3, 2], "pads": [1, 0, 2, 1]}),
    ((1, 3, 4, 4), (2, (3, 3)), {"strides": [2, 2], "output_padding": [1, 1]}),
    ((1, 2, 6, 5), (2, (2, 3)), {"dilations": [2, 3], "pads": [1, 1, 0, 2]}),
    ((2, 6, 5, 5), (2, (3, 3)), {"group": 3, "strides": [2, 1], "pads": [1, 1, 1, 1]}),
    ((1, 4, 6, 6), (1, (4, 4)), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 3, 5, 5), (2, (3, 3)), {"strides": [2, 2], "output_shape": [12, 10]}),
    ((1, 3, 5, 5), (2, (3, 3)), {"strides": [2, 2], "output_shape": [9, 10]}),
    ((1, 3, 4, 5), (2, (3, 3)), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 4, 5), (2, (3, 3)), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 4, 5), (2, (3, 3)), {"strides": [2, 3], "auto_pad": "VALID"}),
    ((1, 8, 1, 1), (4, (4, 4)), {}),
    # 1-D
    ((2, 3, 7), (4, (3,)), {"strides": [2], "pads": [1, 0]}),
    ((1, 4, 9), (2, (5,)), {"group": 2, "dilations": [2], "output_padding": [1],
                             "strides": [2]}),
    # big enough for several GEMM/col2im chunks
    ((1, 64, 40, 40), (8, (3, 3)), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("xs,wk,attrs", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_matches_reference(rng, xs, wk, attrs, bias):
    (Mg, k), group = wk, attrs.get("group", 1)
    x, w = rand(rng, *xs), rand(rng, xs[1], Mg, *k)
    b = rand(rng, Mg * group) if bias else None
    x_before = x.copy()
    y = run_all_ways(x, w, b, attrs)
    want = ref64(x, w, b, **attrs)
    assert y.shape == want.shape
    if "output_shape" in attrs:
        assert y.shape[2:] == tuple(attrs["output_shape"])
    check(y, want, xs[1] // group)
    np.testing.assert_array_equal(x, x_before)


def test_reference_is_adjoint_of_conv(rng):
    # <conv_transpose(x), z> == <x, conv(z)> with the same weights: the defining identity
    x, z = rng.standard_normal((1, 4, 5, 6)), rng.standard_normal((1, 3, 11, 15))
    w = rng.standard_normal((4, 3, 3, 3))
    attrs = {"strides": [2, 2], "pads": [1, 0, 0, 1], "dilations": [1, 2]}
    y = conv_transpose_reference(x, w, output_padding=[1, 1], **attrs)
    assert y.shape == z.shape
    np.testing.assert_allclose(np.vdot(y, z), np.vdot(x, conv_reference(z, w, **attrs)))


def test_other_dtypes_use_reference(rng):
    x, w = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 3, 2, 2))
    y = call_op("ConvTranspose", [x, w], {"strides": [2, 2]})
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, conv_transpose_reference(x, w, strides=[2, 2]))


@pytest.mark.parametrize("attrs,match", [
    ({"group": 3}, "group"),
    ({"kernel_shape": [2, 2]}, "kernel_shape"),
    ({"output_padding": [2, 0], "strides": [2, 2]}, "output_padding"),
    ({"output_shape": [5]}, "output_shape"),
    ({"auto_pad": "FOO"}, "auto_pad"),
])
def test_bad_attributes(rng, attrs, match):
    with pytest.raises(ModelError, match=match):
        call_op("ConvTranspose", [rand(rng, 1, 4, 3, 3), rand(rng, 4, 2, 3, 3)], attrs,
                const_inputs=(1,))


def test_bad_inputs(rng):
    w = rand(rng, 4, 2, 3, 3)
    with pytest.raises(InputError, match="4 channels"):
        call_op("ConvTranspose", [rand(rng, 1, 3, 5, 5), w], {}, const_inputs=(1,))
    with pytest.raises(InputError, match="B must have shape"):
        call_op("ConvTranspose", [rand(rng, 1, 4, 5, 5), w, rand(rng, 4)], {})


@pytest.mark.parametrize("xs,wk,attrs", [
    ((1, 8, 7, 7), (4, (4, 4)), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 6, 5, 6), (2, (3, 3)), {"group": 3, "strides": [2, 2], "output_padding": [1, 0]}),
    ((1, 3, 5, 5), (2, (3, 3)), {"strides": [2, 2], "output_shape": [10, 11]}),
    ((1, 3, 4, 5), (2, (3, 3)), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
])
def test_matches_onnxruntime(rng, xs, wk, attrs):
    (Mg, k), group = wk, attrs.get("group", 1)
    x, w, b = rand(rng, *xs), rand(rng, xs[1], Mg, *k), rand(rng, Mg * group)
    y = call_op("ConvTranspose", [x, w, b], attrs, n_threads=2, const_inputs=(1, 2))
    want = ort_run("ConvTranspose", [x, w, b], attrs, x.ndim)
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", onnx_node_cases(r"test_convtranspose", {"ConvTranspose"}))
def test_onnx_node(case):
    run_node_case(case)
