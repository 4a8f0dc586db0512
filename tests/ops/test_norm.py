"""Normalisation (cyconv/ops/norm.py): BatchNormalization (folded affine kernel, const and
run-time parameters, spatial=0, training mode) and LRN vs the numpy references, thread-count
independence, ONNX Runtime parity and ONNX's node tests.
"""

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops import norm

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- BatchNormalization

def _bn_params(rng, c):
    return (rng.uniform(0.5, 2.0, c).astype(np.float32), rng.standard_normal(c).astype(np.float32),
            rng.standard_normal(c).astype(np.float32), rng.uniform(0.1, 3.0, c).astype(np.float32))


@pytest.mark.parametrize("shape", [(2, 5), (1, 3, 7), (3, 4, 5, 6), (2, 3, 2, 3, 4),
                                   (2, 64, 40, 41), (64, 300)], ids=str)
@pytest.mark.parametrize("const", [True, False])
def test_batchnorm_kernel_matches_reference(rng, shape, const):
    x = rng.standard_normal(shape).astype(np.float32)
    params = _bn_params(rng, shape[1])
    x0 = x.copy()
    want = norm.batch_norm_reference(x, *params, epsilon=1e-3)
    outs = [call_op("BatchNormalization", [x, *params], {"epsilon": 1e-3}, opset=15,
                    n_threads=t, const_inputs=(1, 2, 3, 4) if const else ()) for t in (1, 2, 3)]
    # x * scale + shift in float32 vs (x - mean) * ... in float64: a few ulps of the terms
    assert_same(outs[0], want, rtol=1e-5, atol=1e-5)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    np.testing.assert_array_equal(x, x0)


def test_batchnorm_spatial0_and_old_opsets(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    params = [p.reshape(3, 4, 5) for p in _bn_params(rng, 60)]
    got = call_op("BatchNormalization", [x, *params], {"spatial": 0}, opset=7,
                  const_inputs=(1, 2, 3, 4))
    g, b, m, v = params
    assert_same(got, ((x - m) / np.sqrt(v + 1e-5) * g + b).astype(np.float32), rtol=1e-5,
                atol=1e-5)
    params = _bn_params(rng, 3)
    for opset, attrs in [(6, {"is_test": 1, "spatial": 1}), (1, {"consumed_inputs": [0, 0, 0, 1, 1]}),
                         (9, {"momentum": 0.5})]:
        assert_same(call_op("BatchNormalization", [x, *params], attrs, opset=opset),
                    norm.batch_norm_reference(x, *params), rtol=1e-5, atol=1e-5)


def test_batchnorm_dtypes(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float64)
    params = [p.astype(np.float64) for p in _bn_params(rng, 3)]
    y = call_op("BatchNormalization", [x, *params], opset=15)
    assert y.dtype == np.float64
    assert_same(y, norm.batch_norm_reference(x, *params), rtol=1e-12)


def test_batchnorm_training_mode(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    s, b, m, v = _bn_params(rng, 4)
    y, rm, rv = call_op("BatchNormalization", [x, s, b, m, v],
                        {"training_mode": 1, "momentum": 0.8}, opset=15, num_outputs=3)
    bm, bv = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    assert_same(y, norm.batch_norm_reference(x, s, b, bm, bv), rtol=1e-5, atol=1e-6)
    assert_same(rm, m * 0.8 + bm * 0.2, rtol=1e-6)
    assert_same(rv, v * 0.8 + bv * 0.2, rtol=1e-6)


def test_batchnorm_errors(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    params = _bn_params(rng, 3)
    with pytest.raises(ModelError, match="training"):
        call_op("BatchNormalization", [x, *params], opset=9, num_outputs=5)
    with pytest.raises(ModelError, match="training_mode"):
        call_op("BatchNormalization", [x, *params], {"training_mode": 2}, opset=15)
    with pytest.raises(ModelError, match="5 inputs"):
        call_op("BatchNormalization", [x, *params[:3]], opset=15)
    with pytest.raises(InputError, match="scale has 4"):
        call_op("BatchNormalization", [x, *_bn_params(rng, 4)], opset=15)


def test_batchnorm_matches_onnxruntime(rng):
    x = rng.standard_normal((2, 8, 9, 10)).astype(np.float32)
    params = list(_bn_params(rng, 8))
    want = ort_run("BatchNormalization", [x, *params], {"epsilon": 1e-4}, 15, [np.float32])[0]
    got = call_op("BatchNormalization", [x, *params], {"epsilon": 1e-4}, opset=15,
                  const_inputs=(1, 2, 3, 4))
    assert_same(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- LRN

@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (2, 7, 6, 6), (2, 16, 3), (1, 96, 27, 27)], ids=str)
def test_lrn_kernel_matches_reference(rng, size, shape):
    x = rng.standard_normal(shape).astype(np.float32) * 3
    attrs = {"size": size, "alpha": 0.01, "beta": 0.75, "bias": 2.0}
    want = norm.lrn_reference(x, **attrs)
    outs = [call_op("LRN", [x], attrs, opset=13, n_threads=t) for t in (1, 3)]
    assert_same(outs[0], want, rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_lrn_window_by_hand():
    # size 2: window of channel c is [c, c + 1]  (floor(1/2) = 0 before, ceil(1/2) = 1 after)
    x = np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3, 1, 1)
    y = call_op("LRN", [x], {"size": 2, "alpha": 2.0, "beta": 1.0, "bias": 1.0})
    sums = np.array([1 + 4, 4 + 9, 9], np.float64)
    np.testing.assert_allclose(y.ravel(), [1, 2, 3] / (1 + sums), rtol=1e-6)


def test_lrn_errors_and_dtypes(rng):
    x = rng.standard_normal((1, 4, 3, 3))
    with pytest.raises(ModelError, match="size is required"):
        call_op("LRN", [x.astype(np.float32)], {})
    with pytest.raises(ModelError, match="positive"):
        call_op("LRN", [x.astype(np.float32)], {"size": 0})
    y = call_op("LRN", [x], {"size": 3})
    assert y.dtype == np.float64
    assert_same(y, norm.lrn_reference(x, 3), rtol=1e-12)


@pytest.mark.parametrize("size", [3, 5, 7])   # ONNX Runtime accepts odd sizes only
def test_lrn_matches_onnxruntime(rng, size):
    x = rng.standard_normal((2, 10, 7, 8)).astype(np.float32)
    attrs = {"size": size, "alpha": 1e-3, "beta": 0.6, "bias": 1.5}
    want = ort_run("LRN", [x], attrs, 13, [np.float32])[0]
    assert_same(norm.lrn_reference(x, **attrs), want, rtol=1e-5, atol=1e-7)
    assert_same(call_op("LRN", [x], attrs, opset=13), want, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- ONNX node tests

NORM_OPS = {"BatchNormalization", "LRN"}
NODE_CASES = onnx_node_cases(r"test_(batchnorm|lrn)", NORM_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 6


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
