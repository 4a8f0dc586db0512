"""Conv (and FusedConv): kernel vs the numpy reference over geometry, groups and threads;
attribute errors; a few cases against ONNX Runtime; ONNX's own node tests."""
import re
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv.ops  # noqa: F401  (registers the ops)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops.conv import conv_reference, fused_conv_reference


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def ref64(x, w, b=None, **attrs):
    """The reference in float64, so the kernel's float32 error is what the test measures."""
    return conv_reference(x.astype(np.float64), w.astype(np.float64),
                          None if b is None else b.astype(np.float64), **attrs)


def check(y, want, K):
    # float32 sums of K products of N(0,1) values: error grows like sqrt(K) ulps of the sum
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5 * max(K, 1) ** 0.5)


def run_all_ways(rng, x, w, b, attrs, op="Conv", z=None):
    """Run with constant and run-time weights and 1/2/3 threads; equal across thread counts
    (bitwise) and close across the two (constant 3x3 weights may take the Winograd path,
    chosen per input size: kernels/test_winograd.py); return the run-time weights' result."""
    inputs = [x, w] + ([b] if b is not None or z is not None else []) + (
        [z] if z is not None else [])
    by_weights = []
    for ci in ((1, 2), ()):
        outs = [call_op(op, inputs, attrs, n_threads=t, const_inputs=ci, domain=(
                    "com.microsoft" if op == "FusedConv" else "")) for t in (1, 2, 3)]
        for y in outs[1:]:
            np.testing.assert_array_equal(y, outs[0])
        by_weights.append(outs[0])
    const, runtime = by_weights
    np.testing.assert_allclose(const, runtime, rtol=0,
                               atol=1e-5 * max(1.0, float(np.abs(runtime).max())))
    return runtime


# (N, C, spatial), (M, k), attrs: strides / pads / dilations / group
CASES = [
    # 2-D, plain
    ((1, 3, 8, 8), (4, (3, 3)), {}),
    ((2, 3, 9, 7), (5, (3, 3)), {"pads": [1, 1, 1, 1]}),
    ((1, 4, 10, 11), (6, (3, 2)), {"strides": [2, 3], "pads": [1, 0, 2, 1]}),
    ((1, 2, 12, 12), (3, (3, 3)), {"dilations": [2, 3], "pads": [2, 2, 0, 1]}),
    ((3, 5, 7, 9), (7, (5, 5)), {"strides": [2, 2], "pads": [2, 2, 2, 2], "dilations": [1, 2]}),
    ((1, 1, 5, 5), (1, (1, 1)), {}),
    ((1, 3, 6, 6), (13, (6, 6)), {}),                      # output 1x1
    # 1x1: direct GEMM, and with stride / pads (im2col)
    ((2, 16, 7, 9), (24, (1, 1)), {}),
    ((1, 16, 7, 9), (8, (1, 1)), {"strides": [2, 2]}),
    ((1, 8, 5, 5), (8, (1, 1)), {"pads": [1, 0, 0, 1]}),
    # groups
    ((2, 6, 9, 8), (4, (3, 3)), {"group": 2, "pads": [1, 1, 1, 1]}),
    ((1, 12, 8, 8), (6, (3, 1)), {"group": 3, "strides": [1, 2]}),
    ((1, 8, 5, 5), (8, (1, 1)), {"group": 4}),
    # depthwise and channel multiplier
    ((2, 8, 11, 13), (8, (3, 3)), {"group": 8, "pads": [1, 1, 1, 1]}),
    ((1, 6, 12, 10), (12, (3, 3)), {"group": 6, "strides": [2, 2], "pads": [1, 0, 1, 1]}),
    ((1, 4, 15, 15), (12, (5, 5)), {"group": 4, "dilations": [2, 2], "pads": [4, 4, 4, 4]}),
    ((1, 3, 9, 9), (3, (3, 3)), {"group": 3, "strides": [3, 2]}),
    ((1, 5, 4, 4), (5, (5, 5)), {"group": 5, "pads": [3, 3, 3, 3]}),   # taps past both edges
    ((1, 4, 3, 3), (4, (3, 3)), {"group": 4, "pads": [2, 2, 2, 2]}),   # interior 1 column
    ((1, 4, 2, 2), (4, (3, 3)), {"group": 4, "pads": [1, 1, 1, 1]}),   # no interior
    ((2, 4, 9, 10), (8, (3, 3)), {"group": 4, "dilations": [2, 2], "pads": [2, 1, 2, 1]}),
    ((1, 4, 11, 12), (4, (3, 3)), {"group": 4, "strides": [2, 3], "pads": [0, 1, 1, 0]}),
    # 1-D
    ((2, 3, 17), (5, (3,)), {}),
    ((1, 4, 20), (6, (5,)), {"strides": [3], "pads": [2, 1], "dilations": [2]}),
    ((1, 6, 16), (6, (3,)), {"group": 6, "pads": [1, 1]}),
    ((1, 4, 16), (8, (1,)), {}),
    # large K and enough pixels for several im2col chunks
    ((1, 64, 30, 30), (20, (3, 3)), {"pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("xs,wk,attrs", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_conv_matches_reference(rng, xs, wk, attrs, bias):
    (M, k), group = wk, attrs.get("group", 1)
    x = rand(rng, *xs)
    w = rand(rng, M, xs[1] // group, *k)
    b = rand(rng, M) if bias else None
    x_before = x.copy()
    y = run_all_ways(rng, x, w, b, attrs)
    check(y, ref64(x, w, b, **attrs), w[0].size)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"])
@pytest.mark.parametrize("spatial,k,s", [((7, 8), (3, 3), (2, 2)), ((6, 9), (4, 2), (1, 3)),
                                         ((10,), (4,), (3,))])
def test_auto_pad(rng, auto_pad, spatial, k, s):
    x, w, b = rand(rng, 2, 3, *spatial), rand(rng, 4, 3, *k), rand(rng, 4)
    attrs = {"auto_pad": auto_pad, "strides": list(s)}
    y = run_all_ways(rng, x, w, b, attrs)
    want = ref64(x, w, b, **attrs)
    assert y.shape == want.shape
    if auto_pad.startswith("SAME"):
        assert y.shape[2:] == tuple(-(-n // st) for n, st in zip(spatial, s))
    check(y, want, w[0].size)


def test_fused_relu(rng):
    x, w, b = rand(rng, 2, 4, 9, 9), rand(rng, 6, 2, 3, 3), rand(rng, 6)
    attrs = {"group": 2, "pads": [1, 1, 1, 1], "activation": "Relu"}
    y = run_all_ways(rng, x, w, b, attrs, op="FusedConv")
    check(y, np.maximum(ref64(x, w, b, group=2, pads=[1, 1, 1, 1]), 0), 18)
    xd, wd = rand(rng, 1, 4, 7, 7), rand(rng, 4, 1, 3, 3)
    yd = run_all_ways(rng, xd, wd, None, {"group": 4, "activation": "Relu"}, op="FusedConv")
    check(yd, np.maximum(ref64(xd, wd, group=4), 0), 9)


# FusedConv = act(Conv(X, W, B) + Z): every activation, with and without Z, on each kernel
# path (im2col GEMM, 1x1 direct GEMM, grouped, depthwise, 1-D)
FUSED_ACTS = [("Identity", None), ("Relu", None), ("LeakyRelu", [0.15]), ("Clip", [-0.4, 0.9]),
              ("Sigmoid", None), ("Tanh", None), ("HardSigmoid", [0.25, 0.4]),
              ("HardSwish", None), ("Swish", None), ("PRelu", [0.3]), ("PRelu", "per-channel")]
FUSED_SHAPES = [
    ((2, 6, 9, 8), (8, (3, 3)), {"pads": [1, 1, 1, 1]}),
    ((2, 16, 5, 7), (12, (1, 1)), {}),
    ((1, 6, 9, 9), (4, (3, 3)), {"group": 2, "strides": [2, 2]}),
    ((2, 8, 11, 10), (16, (3, 3)), {"group": 8, "pads": [1, 1, 1, 1]}),
    ((2, 4, 17), (6, (3,)), {"pads": [1, 1]}),
]


@pytest.mark.parametrize("residual", [False, True], ids=["noZ", "Z"])
@pytest.mark.parametrize("act,params", FUSED_ACTS, ids=[
    a + ("-ch" if p == "per-channel" else "") for a, p in FUSED_ACTS])
@pytest.mark.parametrize("xs,wk,attrs", FUSED_SHAPES,
                         ids=[str(i) for i in range(len(FUSED_SHAPES))])
def test_fused_conv(rng, xs, wk, attrs, act, params, residual):
    (M, k), group = wk, attrs.get("group", 1)
    x, w, b = rand(rng, *xs), rand(rng, M, xs[1] // group, *k), rand(rng, M)
    y0 = ref64(x, w, b, **attrs)
    z = rand(rng, *y0.shape) if residual else None
    if params == "per-channel":
        params = list(rng.uniform(-0.5, 0.5, M))
    fattrs = dict(attrs, activation=act)
    if params:
        fattrs["activation_params"] = params
    y = run_all_ways(rng, x, w, b, fattrs, op="FusedConv", z=z)
    want = fused_conv_reference(x.astype(np.float64), w.astype(np.float64),
                                b.astype(np.float64), None if z is None else z.astype(np.float64),
                                **fattrs)
    check(y, want, w[0].size)


def test_fused_conv_without_bias_and_float64(rng):
    x, w, z = rand(rng, 1, 3, 6, 6), rand(rng, 4, 3, 3, 3), rand(rng, 1, 4, 4, 4)
    attrs = {"activation": "LeakyRelu", "activation_params": [0.2]}
    y = call_op("FusedConv", [x, w, None, z], attrs, domain="com.microsoft")
    check(y, fused_conv_reference(x, w, None, z, **attrs), 27)
    x64, w64, z64 = (v.astype(np.float64) for v in (x, w, z))
    y64 = call_op("FusedConv", [x64, w64, None, z64], attrs, domain="com.microsoft")
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, fused_conv_reference(x64, w64, None, z64, **attrs))


def test_fused_conv_errors(rng):
    x, w = rand(rng, 1, 3, 6, 6), rand(rng, 4, 3, 3, 3)
    with pytest.raises(ModelError, match="activation"):
        call_op("FusedConv", [x, w], {"activation": "Elu"}, domain="com.microsoft")
    with pytest.raises(ModelError, match="PRelu"):
        call_op("FusedConv", [x, w], {"activation": "PRelu", "activation_params": [1, 2]},
                domain="com.microsoft", const_inputs=(1,))
    with pytest.raises(InputError, match="Z must have"):
        call_op("FusedConv", [x, w, None, rand(rng, 1, 4, 3, 3)], {"activation": "Relu"},
                domain="com.microsoft")


@pytest.mark.parametrize("act,params", [("Relu", None), ("LeakyRelu", [0.2]),
                                        ("Clip", [-1.0, 2.0]), ("Sigmoid", None),
                                        ("Tanh", None), ("HardSigmoid", [0.3, 0.4])])
@pytest.mark.parametrize("residual", [False, True], ids=["noZ", "Z"])
def test_fused_conv_matches_onnxruntime(rng, act, params, residual):
    x, w, b = rand(rng, 2, 8, 9, 9), rand(rng, 6, 8, 3, 3), rand(rng, 6)
    inputs = [x, w, b] + ([rand(rng, 2, 6, 9, 9)] if residual else [])
    attrs = {"activation": act, "pads": [1, 1, 1, 1]}
    if params:
        attrs["activation_params"] = params
    y = call_op("FusedConv", inputs, attrs, n_threads=2, const_inputs=(1, 2),
                domain="com.microsoft")
    np.testing.assert_allclose(y, ort_run("FusedConv", inputs, attrs, 4), rtol=1e-4, atol=1e-4)


def test_other_dtypes_use_reference(rng):
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    y = call_op("Conv", [x, w], {"pads": [1, 1, 1, 1]})
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, conv_reference(x, w, pads=[1, 1, 1, 1]))
    x3, w3 = rand(rng, 1, 2, 4, 5, 6), rand(rng, 3, 2, 2, 2, 3)     # 3-D conv: reference path
    np.testing.assert_allclose(call_op("Conv", [x3, w3], {}), ref64(x3, w3), rtol=1e-5,
                               atol=1e-5)


def test_reference_is_a_plain_loop(rng):
    # the oracle itself, against the definition written out element by element
    x, w, b = rand(rng, 1, 4, 6, 5), rand(rng, 4, 2, 3, 2), rand(rng, 4)
    s, p, d = (2, 1), (1, 0, 1, 1), (1, 2)
    y = ref64(x, w, b, group=2, strides=s, pads=p, dilations=d)
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (1, 1), (0, 1)])
    want = np.zeros_like(y)
    for m in range(4):
        g = m // 2
        for oh in range(y.shape[2]):
            for ow in range(y.shape[3]):
                acc = b[m]
                for c in range(2):
                    for i in range(3):
                        for j in range(2):
                            acc += w[m, c, i, j] * xp[0, 2 * g + c, oh * s[0] + i * d[0],
                                                       ow * s[1] + j * d[1]]
                want[0, m, oh, ow] = acc
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("attrs,match", [
    ({"group": 3}, "group"),
    ({"group": 0}, "group"),
    ({"kernel_shape": [3, 2]}, "kernel_shape"),
    ({"kernel_shape": [3]}, "kernel_shape"),
    ({"strides": [1]}, "strides"),
    ({"strides": [0, 1]}, "strides"),
    ({"pads": [1, 1]}, "pads"),
    ({"pads": [-1, 0, 0, 0]}, "pads"),
    ({"auto_pad": "SAME"}, "auto_pad"),
    ({"foo": 1}, "foo"),
])
def test_bad_attributes_raise_model_error(rng, attrs, match):
    x, w = rand(rng, 1, 4, 5, 5), rand(rng, 4, 4, 3, 3)
    with pytest.raises(ModelError, match=match):
        call_op("Conv", [x, w], attrs, const_inputs=(1,))


def test_bad_inputs_raise_input_error(rng):
    w = rand(rng, 4, 2, 3, 3)
    with pytest.raises(InputError, match="4 channels"):
        call_op("Conv", [rand(rng, 1, 3, 5, 5), w], {"group": 2}, const_inputs=(1,))
    with pytest.raises(InputError, match="rank 4"):
        call_op("Conv", [rand(rng, 1, 2, 5), w], {}, const_inputs=(1,))
    with pytest.raises(InputError, match="smaller than the dilated kernel"):
        call_op("Conv", [rand(rng, 1, 2, 2, 5), w], {}, const_inputs=(1,))
    with pytest.raises(InputError, match="B must have shape"):
        call_op("Conv", [rand(rng, 1, 2, 5, 5), w, rand(rng, 3)], {})


# ----------------------------------------------------------------------------- ONNX Runtime

def ort_run(op, inputs, attrs, out_rank):
    import onnxruntime as ort
    names = ["x", "w", "b", "z"][:len(inputs)]
    ms = op.startswith("Fused")
    node = helper.make_node(op, names, ["y"], domain="com.microsoft" if ms else "", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape)
                      for n, v in zip(names, inputs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * out_rank)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)] + (
        [helper.make_opsetid("com.microsoft", 1)] if ms else []))
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs)))[0]


@pytest.mark.parametrize("xs,wk,attrs", [
    ((1, 3, 32, 32), (16, (3, 3)), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 16, 14, 14), (16, (3, 3)), {"group": 16, "auto_pad": "SAME_UPPER"}),
    ((1, 8, 9, 10), (12, (2, 3)), {"group": 2, "auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 32, 7, 7), (64, (1, 1)), {}),
    ((1, 4, 50), (8, (7,)), {"dilations": [3], "pads": [3, 3]}),
])
def test_matches_onnxruntime(rng, xs, wk, attrs):
    (M, k), group = wk, attrs.get("group", 1)
    x, w, b = rand(rng, *xs), rand(rng, M, xs[1] // group, *k), rand(rng, M)
    y = call_op("Conv", [x, w, b], attrs, n_threads=2, const_inputs=(1, 2))
    np.testing.assert_allclose(y, ort_run("Conv", [x, w, b], attrs, x.ndim), rtol=1e-4,
                               atol=1e-4)


# ----------------------------------------------------------------------------- ONNX node tests

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


@pytest.mark.parametrize("case", onnx_node_cases(r"test_(basic_)?conv(_|$)", {"Conv"}))
def test_onnx_node(case):
    run_node_case(case)
