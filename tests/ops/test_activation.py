"""Activations (cyconv/ops/activation.py): float32 kernels vs the numpy references, thread-count
independence, dtype fallbacks, attribute rules, ONNX Runtime parity and ONNX's node tests.
"""
import warnings

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops import activation as act

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- kernel vs reference

UNARY = [
    ("Relu", {}, act.relu_reference, {}),
    ("LeakyRelu", {"alpha": 0.1}, act.leaky_relu_reference, {"alpha": 0.1}),
    ("LeakyRelu", {}, act.leaky_relu_reference, {"alpha": 0.01}),
    ("Sigmoid", {}, act.sigmoid_reference, {}),
    ("Tanh", {}, act.tanh_reference, {}),
    ("Elu", {"alpha": 0.7}, act.elu_reference, {"alpha": 0.7}),
    ("Selu", {}, act.selu_reference, {}),
    ("Selu", {"alpha": 2.0, "gamma": 3.0}, act.selu_reference, {"alpha": 2.0, "gamma": 3.0}),
    ("Softplus", {}, act.softplus_reference, {}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, act.hard_sigmoid_reference,
     {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", {}, act.hard_swish_reference, {}),
]
SHAPES = [(1,), (7,), (2, 3, 5, 7), (1, 3, 17, 31), (3, 16, 64, 65)]


def _data(rng, shape, scale=4.0):
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    x.flat[::11] = 0.0
    return x


@pytest.mark.parametrize("op,attrs,ref,ref_kwargs", UNARY, ids=[f"{u[0]}{u[1]}" for u in UNARY])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unary_kernel_matches_reference(rng, op, attrs, ref, ref_kwargs, shape):
    x = _data(rng, shape)
    x_before = x.copy()
    want = ref(x, **ref_kwargs)
    outs = [call_op(op, [x], attrs, opset=17, n_threads=t) for t in (1, 2, 3)]
    # Hard* ops compute a*x+b in float32 (with FMA): near the kink the cancellation costs a few
    # ulps of the operands, so their absolute tolerance is looser than the relative one.
    atol = 1e-6 if op.startswith("Hard") else 1e-7
    assert_same(outs[0], want, rtol=1e-6, atol=atol)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])   # thread count never changes a bit
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "Softplus", "Elu", "Selu"])
def test_extreme_inputs_do_not_overflow(op):
    x = np.array([-1e4, -100.0, -88.8, -20.0, 0.0, 20.0, 88.8, 100.0, 1e4, np.inf, -np.inf],
                 np.float32)
    ref = dict((u[0], u[2]) for u in UNARY)[op]
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # no overflow warning escapes
        y = call_op(op, [x], {}, opset=17)
    assert_same(y, ref(x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "HardSwish", "Clip"])
def test_zero_d_input_stays_zero_d(op):
    x = np.array(-0.5, np.float32)
    y = call_op(op, [x], opset=17)
    assert y.shape == () and y.dtype == np.float32


def test_non_contiguous_input(rng):
    x = _data(rng, (4, 5, 6)).transpose(2, 0, 1)
    assert_same(call_op("Sigmoid", [x]), act.sigmoid_reference(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
@pytest.mark.parametrize("op,attrs,ref,ref_kwargs", UNARY[:6], ids=[u[0] for u in UNARY[:6]])
def test_other_float_dtypes_use_reference(rng, op, attrs, ref, ref_kwargs, dtype):
    x = _data(rng, (2, 3, 4)).astype(dtype)
    y = call_op(op, [x], attrs, opset=17)
    assert y.dtype == dtype
    assert_same(y, ref(x, **ref_kwargs), rtol=1e-3 if dtype == np.float16 else 1e-12)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_relu_integers(dtype):
    x = np.array([-128, -1, 0, 1, 127], dtype)
    assert_same(call_op("Relu", [x], opset=14), np.array([0, 0, 0, 1, 127], dtype))


def test_selu_defaults_depend_on_opset():
    x = np.array([-1.0, 2.0], np.float32)
    y1 = call_op("Selu", [x], opset=1)
    y6 = call_op("Selu", [x], opset=6)
    assert_same(y1, act.selu_reference(x, 1.673200011253357, 1.0506999492645264), rtol=1e-6)
    assert_same(y6, act.selu_reference(x), rtol=1e-6)
    assert not np.array_equal(y1, y6)


def test_attribute_errors():
    x = np.zeros(3, np.float32)
    with pytest.raises(ModelError, match="alpha"):
        call_op("LeakyRelu", [x], {"alpha": "big"})
    with pytest.raises(ModelError, match="unsupported attribute"):
        call_op("Relu", [x], {"beta": 1.0})


# ----------------------------------------------------------------------------- PRelu

PRELU_SLOPES = [
    ((2, 3, 4, 5), (3, 1, 1)),
    ((2, 3, 4, 5), (1, 3, 1, 1)),
    ((2, 3, 4, 5), (5,)),
    ((2, 3, 4, 5), (1,)),
    ((2, 3, 4, 5), ()),
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((2, 3, 4, 5), (4, 5)),
    ((3, 40), (40,)),
    ((2, 64, 40, 41), (64, 1, 1)),
]


@pytest.mark.parametrize("x_shape,slope_shape", PRELU_SLOPES, ids=str)
@pytest.mark.parametrize("const", [False, True])
def test_prelu_broadcasts(rng, x_shape, slope_shape, const):
    x = _data(rng, x_shape)
    slope = rng.uniform(0.05, 0.5, slope_shape).astype(np.float32)
    want = act.prelu_reference(x, slope)
    outs = [call_op("PRelu", [x, slope], opset=16, n_threads=t,
                    const_inputs=(1,) if const else ()) for t in (1, 3)]
    assert_same(outs[0], want, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_prelu_opset6_slope_is_per_channel(rng):
    x = _data(rng, (2, 3, 4, 5))
    slope = np.array([0.1, 0.2, 0.3], np.float32)
    y = call_op("PRelu", [x, slope], opset=6)
    assert_same(y, act.prelu_reference(x, slope.reshape(3, 1, 1)), rtol=1e-6)


def test_prelu_bad_slope():
    with pytest.raises(InputError, match="slope"):
        call_op("PRelu", [np.zeros((2, 3), np.float32), np.zeros((2, 3, 4), np.float32)])


# ----------------------------------------------------------------------------- Clip

def test_clip_versions(rng):
    x = _data(rng, (3, 4, 5))
    lo, hi = np.float32(-1.5), np.float32(2.0)
    want = np.clip(x, lo, hi)
    assert_same(call_op("Clip", [x], {"min": -1.5, "max": 2.0}, opset=6), want, rtol=0)
    assert_same(call_op("Clip", [x], {"min": -1.5}, opset=6), np.maximum(x, lo), rtol=0)
    assert_same(call_op("Clip", [x], {}, opset=1), x, rtol=0)
    for const in ((), (1, 2)):
        assert_same(call_op("Clip", [x, lo, hi], opset=13, const_inputs=const), want, rtol=0)
    assert_same(call_op("Clip", [x, None, hi], opset=13), np.minimum(x, hi), rtol=0)
    assert_same(call_op("Clip", [x, lo], opset=11), np.maximum(x, lo), rtol=0)
    assert_same(call_op("Clip", [x], opset=13), x, rtol=0)
    # min > max: every value becomes max
    assert_same(call_op("Clip", [x, hi, lo], opset=13), np.full_like(x, lo), rtol=0)


def test_clip_keeps_nan_and_int_types():
    x = np.array([np.nan, -5.0, 5.0], np.float32)
    y = call_op("Clip", [x, np.float32(-1), np.float32(1)], opset=13)
    assert np.isnan(y[0]) and list(y[1:]) == [-1.0, 1.0]
    xi = np.array([-100, 0, 100], np.int8)
    assert_same(call_op("Clip", [xi, np.int8(-10), np.int8(10)], opset=13),
                np.array([-10, 0, 10], np.int8))


def test_clip_errors():
    x = np.zeros(3, np.float32)
    with pytest.raises(ModelError, match="inputs, not attributes"):
        call_op("Clip", [x], {"min": 0.0}, opset=11)
    with pytest.raises(InputError, match="scalar"):
        call_op("Clip", [x, np.zeros(2, np.float32)], opset=13)


# ----------------------------------------------------------------------------- ONNX Runtime

ORT_CASES = [
    ("Relu", {}, 14), ("LeakyRelu", {"alpha": 0.2}, 16), ("Sigmoid", {}, 13), ("Tanh", {}, 13),
    ("Elu", {"alpha": 0.5}, 6), ("Selu", {}, 6), ("Softplus", {}, 1),
    ("HardSigmoid", {"alpha": 0.25, "beta": 0.6}, 6), ("HardSwish", {}, 14),
    ("Clip", {"min": -1.0, "max": 1.5}, 6),
]


@pytest.mark.parametrize("op,attrs,opset", ORT_CASES, ids=[c[0] for c in ORT_CASES])
def test_matches_onnxruntime(rng, op, attrs, opset):
    x = _data(rng, (2, 8, 9, 11))
    got = call_op(op, [x], attrs, opset=opset, n_threads=2)
    want = ort_run(op, [x], attrs, opset, [np.float32])[0]
    assert_same(got, want, rtol=1e-5, atol=1e-6)


def test_prelu_and_clip_inputs_match_onnxruntime(rng):
    x = _data(rng, (2, 8, 9, 11))
    slope = rng.uniform(0, 1, (8, 1, 1)).astype(np.float32)
    assert_same(call_op("PRelu", [x, slope], opset=16),
                ort_run("PRelu", [x, slope], {}, 16, [np.float32])[0], rtol=1e-6)
    bounds = [x, np.array(-0.5, np.float32), np.array(0.5, np.float32)]
    assert_same(call_op("Clip", bounds, opset=13),
                ort_run("Clip", bounds, {}, 13, [np.float32])[0], rtol=0)


# ----------------------------------------------------------------------------- ONNX node tests

ACTIVATION_OPS = {"Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus",
                  "HardSigmoid", "HardSwish", "Clip"}
NODE_CASES = onnx_node_cases(
    r"test_(relu|leakyrelu|prelu|sigmoid|tanh|elu|selu|softplus|hardsigmoid|hardswish|clip)",
    ACTIVATION_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 34


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
