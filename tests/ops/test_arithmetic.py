"""Arithmetic (cyconv/ops/arithmetic.py): broadcast plans, float32 kernels vs the numpy
references over the CNN broadcast patterns, thread-count independence, integer/mixed dtypes,
opset < 7 broadcast attributes, ONNX Runtime parity and ONNX's node tests.
"""

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops import arithmetic as ar
from cyconv.ops.arithmetic import broadcast_plan

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- broadcast plans

@pytest.mark.parametrize("out,small,plan", [
    ((2, 3, 4, 5), (), (1, 1, 120)),
    ((2, 3, 4, 5), (1,), (1, 1, 120)),
    ((2, 3, 4, 5), (3, 1, 1), (2, 3, 20)),
    ((2, 3, 4, 5), (1, 3, 1, 1), (2, 3, 20)),
    ((2, 3, 4, 5), (2, 3, 1, 1), (1, 6, 20)),
    ((2, 3, 4, 5), (5,), (24, 5, 1)),
    ((2, 3, 4, 5), (4, 5), (6, 20, 1)),
    ((2, 3, 4, 5), (3, 1, 5), None),
    ((2, 3, 4, 5), (1, 2, 3, 4, 5), None),
    ((2, 1, 4), (1, 1, 4), (2, 4, 1)),
])
def test_broadcast_plan(out, small, plan):
    assert broadcast_plan(out, small) == plan


def test_broadcast_plan_agrees_with_numpy(rng):
    out = (2, 3, 4, 5)
    for small in [(3, 1, 1), (2, 3, 1, 1), (4, 5), (1, 3, 4, 1)]:
        P, M, Q = broadcast_plan(out, small)
        s = rng.standard_normal(small)
        want = np.broadcast_to(s, out).reshape(P, M, Q)
        got = np.broadcast_to(s.reshape(1, M, 1), (P, M, Q))
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- kernels vs reference

BINARY = [("Add", ar.add_reference), ("Sub", ar.sub_reference), ("Mul", ar.mul_reference),
          ("Div", ar.div_reference), ("Pow", ar.pow_reference)]
PAIRS = [
    ((7,), (7,)),                      # same shape
    ((2, 3, 5, 7), (2, 3, 5, 7)),
    ((2, 3, 5, 7), ()),                # scalar
    ((), (2, 3, 5, 7)),                # scalar first
    ((2, 3, 5, 7), (1,)),
    ((2, 3, 5, 7), (3, 1, 1)),         # per channel
    ((1, 3, 5, 7), (1, 3, 1, 1)),
    ((3, 1, 1), (2, 3, 5, 7)),         # per channel, small first
    ((2, 3, 5, 7), (2, 3, 1, 1)),      # [N, C, 1, 1] gate
    ((4, 40), (40,)),                  # row bias
    ((40,), (4, 40)),
    ((4, 6), (6,)),                    # short rows: numpy path
    ((3, 1, 5), (1, 4, 1)),            # two-way broadcast: numpy path
    ((2, 3, 5, 7), (3, 1, 7)),         # non-contiguous span: numpy path
    ((3, 64, 33, 33), (64, 1, 1)),     # large enough for several threads
    ((3, 64, 33, 33), ()),
    ((3, 64, 33, 33), (3, 64, 33, 33)),
    ((1, 70000), (70000,)),
]


def _operands(rng, op, a_shape, b_shape):
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    if op == "Pow":      # real results: positive base, modest exponent
        a = np.abs(a) + np.float32(0.1)
    if op == "Div":
        b = np.where(np.abs(b) < 0.1, np.float32(0.5), b).astype(np.float32)
    return np.asarray(a), np.asarray(b)


@pytest.mark.parametrize("op,ref", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("a_shape,b_shape", PAIRS, ids=str)
def test_binary_kernel_matches_reference(rng, op, ref, a_shape, b_shape):
    a, b = _operands(rng, op, a_shape, b_shape)
    a0, b0 = a.copy(), b.copy()
    want = ref(a, b)
    outs = [call_op(op, [a, b], opset=14, n_threads=t) for t in (1, 2, 3)]
    # Add/Sub/Mul/Div are correctly rounded in float32 like numpy: bit-exact. Pow: powf.
    assert_same(outs[0], want, rtol=1e-6 if op == "Pow" else 0, atol=0)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("const", [(0,), (1,), (0, 1)])
def test_constant_operands(rng, const):
    a, b = _operands(rng, "Sub", (2, 8, 5, 5), (8, 1, 1))
    got = call_op("Sub", [a, b], opset=14, const_inputs=const)
    assert_same(got, a - b, rtol=0, atol=0)
    got = call_op("Sub", [b, a], opset=14, const_inputs=const)
    assert_same(got, b - a, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["Add", "Div", "Pow"])
def test_zero_d_operands_stay_zero_d(op):
    a, b = np.array(2.0, np.float32), np.array(3.0, np.float32)
    assert call_op(op, [a, b]).shape == ()
    assert call_op(op, [a, np.ones((2, 1), np.float32)]).shape == (2, 1)
    assert call_op("Sqrt", [a]).shape == ()
    assert call_op("Sum", [a, b, a]).shape == ()


def test_non_contiguous_operands(rng):
    a = rng.standard_normal((5, 6, 7)).astype(np.float32).transpose(2, 0, 1)
    b = rng.standard_normal((7, 5, 6)).astype(np.float32)[:, :, ::-1]
    assert_same(call_op("Mul", [a, b]), a * b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64,
                                   np.float64, np.float16])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
def test_other_dtypes_keep_dtype(dtype, op):
    a = np.array([[1, 2, 100], [7, 0, 3]], dtype)
    b = np.array([3, 2, 200], dtype) if dtype != np.int8 else np.array([3, 2, 100], dtype)
    want = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](a, b)
    assert_same(call_op(op, [a, b], opset=14), want, rtol=0)


def test_integer_division_truncates_toward_zero():
    a = np.array([-7, 7, -7, 7, 6, -6, 0], np.int32)
    b = np.array([2, 2, -2, -2, 3, 3, 5], np.int32)
    assert_same(call_op("Div", [a, b], opset=14), np.array([-3, 3, 3, -3, 2, -2, 0], np.int32))
    u = np.array([7, 250], np.uint8)
    assert_same(call_op("Div", [u, np.uint8(2)], opset=14), np.array([3, 125], np.uint8))


@pytest.mark.parametrize("x_dtype,y_dtype", [(np.float32, np.int64), (np.int64, np.float32),
                                             (np.int32, np.int32), (np.float32, np.float64)])
def test_pow_keeps_base_type(x_dtype, y_dtype):
    x = np.array([1, 2, 3], x_dtype)
    y = np.array([2, 3, 1], y_dtype)
    assert_same(call_op("Pow", [x, y], opset=15), np.array([1, 8, 3], x_dtype), rtol=1e-7)


# ----------------------------------------------------------------------------- legacy attributes

def test_opset6_broadcast_axis(rng):
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((3,)).astype(np.float32)
    got = call_op("Add", [a, b], {"broadcast": 1, "axis": 1}, opset=6)
    assert_same(got, a + b.reshape(3, 1, 1), rtol=0, atol=0)
    c = rng.standard_normal((4, 5)).astype(np.float32)
    assert_same(call_op("Mul", [a, c], {"broadcast": 1}, opset=6), a * c, rtol=0, atol=0)
    with pytest.raises(InputError, match="broadcast=0"):
        call_op("Add", [a, c], opset=6)
    with pytest.raises(ModelError, match="broadcast"):
        call_op("Add", [a, c], {"broadcast": 2}, opset=6)


# ----------------------------------------------------------------------------- Sqrt, Sum

@pytest.mark.parametrize("shape", [(5,), (2, 3, 17, 19), (3, 64, 40, 40)], ids=str)
def test_sqrt(rng, shape):
    x = np.abs(rng.standard_normal(shape)).astype(np.float32)
    x.flat[0] = 0.0
    outs = [call_op("Sqrt", [x], n_threads=t) for t in (1, 3)]
    assert_same(outs[0], np.sqrt(x), rtol=0, atol=0)
    np.testing.assert_array_equal(outs[0], outs[1])
    with np.errstate(invalid="ignore"):
        assert np.isnan(call_op("Sqrt", [np.array([-1.0], np.float32)])[0])
    assert_same(call_op("Sqrt", [x.astype(np.float64)]), np.sqrt(x.astype(np.float64)))


@pytest.mark.parametrize("n_inputs", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(7,), (3, 64, 33, 33)], ids=str)
def test_sum_same_shapes(rng, n_inputs, shape):
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(n_inputs)]
    before = [x.copy() for x in xs]
    want = xs[0].copy()
    for x in xs[1:]:
        want = want + x                 # left to right, as the kernel
    outs = [call_op("Sum", xs, opset=13, n_threads=t) for t in (1, 3)]
    assert_same(outs[0], want, rtol=0, atol=0)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0] is not xs[0]
    for x, x0 in zip(xs, before):
        np.testing.assert_array_equal(x, x0)


def test_sum_broadcast_and_versions(rng):
    xs = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3, 4), (3, 1), (4,)]]
    assert_same(call_op("Sum", xs, opset=8), xs[0] + xs[1] + xs[2], rtol=1e-6)
    with pytest.raises(InputError, match="differ"):
        call_op("Sum", xs, opset=6)
    ints = [np.array([1, 2], np.int32), np.array([3, 4], np.int32)]
    assert_same(call_op("Sum", ints, opset=13), np.array([4, 6], np.int32))


# ----------------------------------------------------------------------------- ONNX Runtime

@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow"])
@pytest.mark.parametrize("a_shape,b_shape", [((2, 8, 9, 11), (8, 1, 1)), ((1, 5), (3, 1)),
                                             ((2, 8, 9, 11), ())], ids=str)
def test_matches_onnxruntime(rng, op, a_shape, b_shape):
    a, b = _operands(rng, op, a_shape, b_shape)
    got = call_op(op, [a, b], opset=14, n_threads=2)
    want = ort_run(op, [a, b], {}, 14, [np.float32])[0]
    assert_same(got, want, rtol=1e-6, atol=0)


def test_sum_sqrt_match_onnxruntime(rng):
    xs = [rng.standard_normal((2, 8, 9, 11)).astype(np.float32) for _ in range(3)]
    assert_same(call_op("Sum", xs, opset=13), ort_run("Sum", xs, {}, 13, [np.float32])[0],
                rtol=1e-6)
    x = np.abs(xs[0])
    assert_same(call_op("Sqrt", [x], opset=13), ort_run("Sqrt", [x], {}, 13, [np.float32])[0],
                rtol=1e-7)


# ----------------------------------------------------------------------------- ONNX node tests

ARITH_OPS = {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Sum"}
NODE_CASES = onnx_node_cases(r"test_(add|sub|mul|div|pow|sqrt|sum)", ARITH_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 53


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
