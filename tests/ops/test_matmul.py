"""Gemm and MatMul: kernel vs numpy references (transposes, alpha/beta, every C broadcast,
batched / broadcast / 1-D MatMul), thread invariance, errors, ONNX node tests."""
import re
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv.ops  # noqa: F401
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops.matmul import fused_gemm_reference, gemm_reference, matmul_reference


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def f64(*xs):
    return [None if x is None else np.asarray(x, np.float64) for x in xs]


def all_ways(op, inputs, attrs, consts, domain=""):
    outs = [call_op(op, inputs, attrs, n_threads=t, const_inputs=ci, domain=domain)
            for ci in (consts, ()) for t in (1, 2, 3)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    return outs[0]


C_SHAPES = [None, (), (1,), (1, 1), (23,), (1, 23), (17, 1), (17, 23)]


@pytest.mark.parametrize("c_shape", C_SHAPES, ids=str)
@pytest.mark.parametrize("transA,transB", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm(rng, transA, transB, c_shape):
    M, K, N = 17, 300, 23
    a = rand(rng, K, M) if transA else rand(rng, M, K)
    b = rand(rng, N, K) if transB else rand(rng, K, N)
    inputs = [a, b] + ([] if c_shape is None else [rand(rng, *c_shape)])
    attrs = {"alpha": 0.75, "beta": -1.5, "transA": transA, "transB": transB}
    y = all_ways("Gemm", inputs, attrs, (1, 2))
    want = gemm_reference(*f64(*inputs), **attrs)
    assert y.shape == (M, N) and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 512, 1000), (64, 1, 7), (100, 2000, 3)])
def test_gemm_fc_shapes(rng, M, K, N):
    # the fully connected layer: X (M, K) @ W.T + bias, W constant (packed once)
    x, w, c = rand(rng, M, K), rand(rng, N, K), rand(rng, N)
    y = all_ways("Gemm", [x, w, c], {"transB": 1}, (1, 2))
    np.testing.assert_allclose(y, gemm_reference(*f64(x, w, c), transB=1), rtol=1e-4,
                               atol=1e-5 * K ** 0.5)


def test_gemm_other_dtypes(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    y = call_op("Gemm", [a, b, np.ones(5)], {"alpha": 2.0})
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, 2 * a @ b + 1)


def test_gemm_errors(rng):
    with pytest.raises(InputError, match="must have 4 rows"):
        call_op("Gemm", [rand(rng, 3, 4), rand(rng, 5, 6)], {})
    with pytest.raises(InputError, match="does not broadcast"):
        call_op("Gemm", [rand(rng, 3, 4), rand(rng, 4, 5), rand(rng, 3)], {})
    with pytest.raises(InputError, match="2-D"):
        call_op("Gemm", [rand(rng, 3), rand(rng, 3, 5)], {})
    with pytest.raises(ModelError, match="transA"):
        call_op("Gemm", [rand(rng, 3, 4), rand(rng, 4, 5)], {"transA": 2})
    with pytest.raises(ModelError, match="B must be 2-D"):
        call_op("Gemm", [rand(rng, 3, 4), rand(rng, 4, 5, 1)], {}, const_inputs=(1,))


MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((7,), (7, 3)),
    ((6, 7), (7,)),
    ((9,), (9,)),
    ((2, 3, 5, 8), (8, 6)),              # batch folded into M
    ((2, 1, 5, 8), (3, 8, 6)),           # broadcast batch
    ((4, 8), (2, 3, 8, 5)),
    ((8,), (2, 8, 3)),
    ((2, 3, 8), (8,)),
    ((1, 33, 70), (70, 130)),
    ((2, 0, 4), (4, 3)),
    ((3, 0), (0, 2)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=str)
def test_matmul(rng, sa, sb):
    a, b = rand(rng, *sa), rand(rng, *sb)
    y = all_ways("MatMul", [a, b], {}, (1,))
    want = matmul_reference(*f64(a, b))
    assert y.shape == want.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def test_matmul_strided_inputs(rng):
    a, b = rand(rng, 16, 20)[::2, ::2], rand(rng, 9, 30).T[::3]
    y = call_op("MatMul", [a, b], {}, n_threads=2)
    np.testing.assert_allclose(y, matmul_reference(*f64(a, b)), rtol=1e-4, atol=1e-5)


def test_matmul_integers_and_float64(rng):
    a, b = rng.integers(-5, 5, (2, 3, 4)), rng.integers(-5, 5, (4, 2))
    y = call_op("MatMul", [a.astype(np.int32), b.astype(np.int32)], {})
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, a @ b)
    a64 = rng.standard_normal((3, 4))
    np.testing.assert_allclose(call_op("MatMul", [a64, a64.T], {}), a64 @ a64.T)


def test_matmul_errors(rng):
    with pytest.raises(InputError, match="must have 4 rows"):
        call_op("MatMul", [rand(rng, 3, 4), rand(rng, 5, 6)], {})
    with pytest.raises(InputError, match="do not broadcast"):
        call_op("MatMul", [rand(rng, 2, 3, 4), rand(rng, 3, 4, 5)], {})


# ----------------------------------------------------------------------------- FusedGemm

MS = "com.microsoft"
FUSED = [("Identity", None, None), ("Relu", None, None), ("LeakyRelu", 0.2, None),
         ("Clip", -0.5, 0.7), ("Sigmoid", None, None), ("Tanh", None, None),
         ("HardSigmoid", 0.3, 0.4), ("HardSwish", None, None), ("Swish", None, None),
         ("PRelu", 0.1, None)]


def fused_attrs(act, al, be, **extra):
    attrs = dict(extra, activation=act)
    if al is not None:
        attrs["activation_alpha"] = al
    if be is not None:
        attrs["activation_beta"] = be
    return attrs


@pytest.mark.parametrize("c_shape", [None, (23,), (17, 1), (17, 23)], ids=str)
@pytest.mark.parametrize("act,al,be", FUSED, ids=[f[0] for f in FUSED])
def test_fused_gemm(rng, act, al, be, c_shape):
    M, K, N = 17, 300, 23
    a, b = rand(rng, M, K), rand(rng, N, K) * 0.3
    inputs = [a, b] + ([] if c_shape is None else [rand(rng, *c_shape)])
    attrs = fused_attrs(act, al, be, alpha=0.75, beta=-1.5, transB=1)
    y = all_ways("FusedGemm", inputs, attrs, (1, 2), domain=MS)
    want = fused_gemm_reference(*f64(*inputs), **attrs)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_fused_gemm_float64_and_errors(rng):
    a, b, c = rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    attrs = fused_attrs("LeakyRelu", 0.3, None)
    y = call_op("FusedGemm", [a, b, c], attrs, domain=MS)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, fused_gemm_reference(a, b, c, **attrs))
    with pytest.raises(ModelError, match="activation"):
        call_op("FusedGemm", [a, b], {"activation": "Elu"}, domain=MS)


@pytest.mark.parametrize("act,al,be", [f for f in FUSED if f[0] in (
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid")], ids=str)
def test_fused_gemm_matches_onnxruntime(rng, act, al, be):
    import onnxruntime as ort
    a, b, c = rand(rng, 9, 40), rand(rng, 40, 13) * 0.3, rand(rng, 13)
    attrs = fused_attrs(act, al, be, alpha=0.5, beta=2.0)
    names = ["a", "b", "c"]
    node = helper.make_node("FusedGemm", names, ["y"], domain=MS, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape)
                      for n, v in zip(names, (a, b, c))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"a": a, "b": b, "c": c})[0]
    y = call_op("FusedGemm", [a, b, c], attrs, domain=MS, n_threads=2, const_inputs=(1, 2))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- ONNX node tests

def onnx_node_cases(pattern, ops):
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [pytest.param(c, id=c.name) for c in cases
            if re.match(pattern, c.name) and len(c.model.graph.node) == 1
            and c.model.graph.node[0].op_type in ops]


@pytest.mark.parametrize("case", onnx_node_cases(r"test_(gemm|matmul)", {"Gemm", "MatMul"}))
def test_onnx_node(case):
    graph, node = case.model.graph, case.model.graph.node[0]
    opset = next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for inputs, expected in case.data_sets:
        arrays = [numpy_helper.to_array(v) if isinstance(v, TensorProto) else v for v in inputs]
        feeds = dict(zip([i.name for i in graph.input], arrays))
        args = [feeds[n] for n in node.input if n]
        want = expected[0]
        want = numpy_helper.to_array(want) if isinstance(want, TensorProto) else want
        for consts in ((), tuple(range(1, len(args)))):
            y = call_op(node.op_type, args, attrs, opset=opset, n_threads=2,
                        const_inputs=consts)
            assert y.dtype == want.dtype and y.shape == want.shape
            np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-7)
