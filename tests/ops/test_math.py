"""Elementwise math and Einsum (cyconv/ops/math.py): Erf and Gelu accuracy over the float32
range, the unary functions, Mod, IsNaN/IsInf and Einsum vs the numpy references, vs ONNX Runtime
on one-node models, attribute errors at load, and ONNX's node tests.

The ONNX-runtime and node-test helpers are repeated in each tests/ops/test_<family>.py on
purpose: each family's tests stay runnable on their own, and the helpers are short.
"""
import math

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops import math as m

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- Erf / Gelu

def test_erf_fast_accuracy_over_the_range():
    # Dense float32 grid, the clamp at +-4, tiny values, and more than one 32K block.
    x = np.concatenate([np.linspace(-6, 6, 200_001), [0.0, -0.0, 1e-30, -1e-20, 3.9999, 4.0,
                                                      4.0001, 30.0, -30.0]]).astype(np.float32)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    got = m.erf_fast(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    # relative to |erf|: accurate for small arguments too, not only absolutely
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    assert rel.max() < 5e-7
    assert np.isnan(m.erf_fast(np.array([np.nan, 1.0])))[0]
    np.testing.assert_allclose(m.erf_fast(np.array([np.inf, -np.inf])), [1.0, -1.0], rtol=1e-7)


def test_gelu_fused_blocks_match_reference(rng):
    x = (rng.standard_normal(70_001) * 4).astype(np.float32)     # 3 blocks, the last partial
    got = m.erf_fast(x, gelu=True)
    # For x << 0, 1 + erf(x / sqrt 2) cancels: erf's few-ulp error becomes an absolute error
    # of ~|x| * 1e-7 (as in ONNX Runtime's float erf), tiny next to the outputs' scale.
    atol = 1.5e-7 * np.abs(x).max()
    assert_same(got, m.gelu_reference(x), rtol=2e-6, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_erf_matches_reference(rng, dtype):
    x = (rng.standard_normal((3, 1000)) * 2).astype(dtype)
    got = call_op("Erf", [x], opset=13, n_threads=2)
    tol = {np.float16: 1e-3, np.float32: 1e-6, np.float64: 1e-15}[dtype]
    assert_same(got, m.erf_reference(x), rtol=tol, atol=tol)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_reference_and_onnxruntime(rng, approximate):
    x = (rng.standard_normal((4, 50, 96)) * 3).astype(np.float32)
    attrs = {"approximate": approximate}
    got = call_op("Gelu", [x], attrs, opset=20)
    # atol: the cancellation of 1 + erf for x << 0 (see test_gelu_fused_blocks_match_reference)
    assert_same(got, m.gelu_reference(x, approximate), rtol=2e-6, atol=1.5e-7 * 12)
    want = ort_run("Gelu", [x], attrs, 20, [np.float32])[0]
    assert_same(got, want, rtol=1e-5, atol=1e-6)


def test_erf_gelu_decomposition_matches_onnxruntime(rng):
    # The TorchScript exporter's exact GELU: x * 0.5 * (1 + Erf(x / sqrt 2))
    x = (rng.standard_normal((2, 3000)) * 4).astype(np.float32)
    want = ort_run("Erf", [x], {}, 13, [np.float32])[0]
    assert_same(call_op("Erf", [x], opset=13), want, rtol=1e-6, atol=1e-7)


def test_gelu_errors():
    with pytest.raises(ModelError, match="approximate"):
        call_op("Gelu", [np.zeros(3, np.float32)], {"approximate": "fast"}, opset=20)
    with pytest.raises(InputError, match="int32"):
        call_op("Gelu", [np.zeros(3, np.int32)], opset=20)


# ----------------------------------------------------------------------------- unary functions

UNARY = {"Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Atan": np.arctan, "Sinh": np.sinh,
         "Cosh": np.cosh, "Asinh": np.arcsinh, "Reciprocal": lambda v: 1 / v,
         "Sign": np.sign, "Round": np.round}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_matches_numpy_and_onnxruntime(rng, op):
    x = (rng.standard_normal((3, 7, 5)) * 2).astype(np.float32)
    x[0, 0, :4] = [0.5, 1.5, -2.5, 0.0]   # Round: halves go to even
    got = call_op(op, [x], opset=13)
    with np.errstate(divide="ignore"):   # Reciprocal(0) = inf
        want = UNARY[op](x.astype(np.float64)).astype(np.float32)
    assert_same(got, want, rtol=1e-6, atol=1e-7)
    want = ort_run(op, [x], {}, 13, [np.float32])[0]
    assert_same(got, want, rtol=1e-5, atol=1e-6)


def test_unary_dtypes_and_errors():
    assert call_op("Sign", [np.array([-3, 0, 4], np.int64)], opset=13).tolist() == [-1, 0, 1]
    assert call_op("Acos", [np.array([2.0], np.float32)], opset=13).dtype == np.float32
    with pytest.raises(InputError, match="int64"):
        call_op("Sin", [np.array([1], np.int64)], opset=13)
    x = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    assert call_op("IsNaN", [x], opset=13).tolist() == [True, False, False, False]
    assert call_op("IsInf", [x], {"detect_positive": 0}, opset=13).tolist() == \
        [False, False, True, False]


# ----------------------------------------------------------------------------- Mod

@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32])
def test_mod_matches_onnxruntime(rng, fmod, dtype):
    a = (rng.standard_normal((4, 6)) * 20).astype(dtype)
    b = (rng.integers(1, 7, (6,)) * rng.choice([-1, 1], 6)).astype(dtype)
    if dtype == np.float32 and not fmod:
        return   # ORT rejects float inputs with fmod=0; covered by ONNX's node tests
    got = call_op("Mod", [a, b], {"fmod": fmod}, opset=13)
    assert_same(got, m.mod_reference(a, b, fmod), rtol=0, atol=0)
    want = ort_run("Mod", [a, b], {"fmod": fmod}, 13, [dtype])[0]
    assert_same(got, want, rtol=1e-6, atol=1e-6)


def test_mod_errors():
    with pytest.raises(ModelError, match="fmod"):
        call_op("Mod", [np.ones(2, np.int32)] * 2, {"fmod": 2}, opset=13)
    with pytest.raises(InputError, match="dtypes"):
        call_op("Mod", [np.ones(2, np.int32), np.ones(2, np.int64)], opset=13)


# ----------------------------------------------------------------------------- Einsum

EINSUM = [("bhid,bhjd->bhij", [(2, 3, 5, 8), (2, 3, 6, 8)]),
          ("BGHID,BGHJD->BGHIJ", [(2, 4, 2, 7, 8), (2, 4, 2, 7, 8)]),
          ("ij,jk", [(3, 4), (4, 5)]), ("...ii->...i", [(2, 3, 3)]), ("i,i", [(7,), (7,)]),
          ("ij->ji", [(3, 4)]), ("bij, bjk -> bik", [(2, 3, 4), (2, 4, 5)])]


@pytest.mark.parametrize("equation,shapes", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum_matches_reference_and_onnxruntime(rng, equation, shapes):
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    got = call_op("Einsum", xs, {"equation": equation}, opset=12)
    assert_same(got, m.einsum_reference(equation, *xs), rtol=1e-5, atol=1e-5)
    want = ort_run("Einsum", xs, {"equation": equation}, 12, [np.float32])[0]
    assert_same(got, want, rtol=1e-5, atol=1e-5)


def test_einsum_errors():
    x = np.ones((2, 2), np.float32)
    with pytest.raises(ModelError, match="equation is required"):
        call_op("Einsum", [x], {}, opset=12)
    with pytest.raises(ModelError, match="does not fit"):
        call_op("Einsum", [x], {"equation": "ij,jk->ik"}, opset=12)
    with pytest.raises(ModelError, match="characters"):
        call_op("Einsum", [x], {"equation": "i1->i"}, opset=12)
    with pytest.raises(InputError):
        call_op("Einsum", [x, np.ones((3, 2), np.float32)], {"equation": "ij,jk->ik"}, opset=12)


# ----------------------------------------------------------------------------- ONNX node tests

MATH_OPS = {"Erf", "Gelu", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh",
            "Acosh", "Atanh", "Reciprocal", "Sign", "Round", "Mod", "IsNaN", "IsInf", "Einsum"}
NODE_CASES = onnx_node_cases(r"test_(erf|gelu|a?sinh?|a?cosh?|a?tan(?!h)|atanh|reciprocal|"
                             r"sign|round|mod_|isnan|isinf|einsum)", MATH_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 60


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
