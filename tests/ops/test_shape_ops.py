"""Data-movement ops (cyconv/ops/shape.py): hand-checked cases, ONNX Runtime parity, ONNX node tests.
"""
import re

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError

from op_testing import check_vs_ort, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- ONNX node tests

SHAPE_NODE_PATTERN = (r"test_(flatten|reshape|transpose|concat|split|slice|squeeze|unsqueeze|"
                      r"identity|dropout|constant|constantofshape|shape|size|gather_|cast_|"
                      r"castlike_|range|expand|tile|where|equal|less|greater|not|neg|abs|exp|log|"
                      r"floor|ceil|min|max|mean|and|or)")
SHAPE_OPS = {"Flatten", "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze",
             "Identity", "Dropout", "Constant", "ConstantOfShape", "Shape", "Size", "Gather",
             "Cast", "CastLike", "Range", "Expand", "Tile",
             "Where", "Equal", "Less", "Greater", "Not", "Neg", "Abs", "Exp", "Log", "Floor",
             "Ceil", "Min", "Max", "Mean", "LessOrEqual", "GreaterOrEqual", "And", "Or"}
SHAPE_NODE_EXCLUDED = {
    # Random masks: ONNX itself excludes them from conformance.
    "test_training_dropout", "test_training_dropout_default", "test_training_dropout_mask",
    "test_training_dropout_default_mask",
}
# Element types with no numpy dtype are out of scope for this runtime (Cast rejects them at load):
# bfloat16, float8 (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ, E8M0), float4 E2M1, int4/uint4, int2/uint2.
_OUT_OF_SCOPE_TYPES = re.compile(r"BFLOAT16|FLOAT8|FLOAT4|INT4|INT2|e8m0|bfloat16")
SHAPE_NODE_CASES = [p for p in onnx_node_cases(SHAPE_NODE_PATTERN, exclude=SHAPE_NODE_EXCLUDED)
                    if not _OUT_OF_SCOPE_TYPES.search(p.id)
                    and p.values[0].model.graph.node[0].op_type in SHAPE_OPS]


def test_node_cases_found():
    assert len(SHAPE_NODE_CASES) > 100


@pytest.mark.parametrize("case", SHAPE_NODE_CASES)
def test_onnx_node(case):
    run_node_case(case)


@pytest.mark.parametrize("name", ["test_cast_FLOAT_to_BFLOAT16", "test_cast_FLOAT_to_FLOAT8E4M3FN"])
def test_cast_out_of_scope_types_rejected_at_load(name):
    with pytest.raises(ModelError, match="not supported"):
        call_op("Cast", [np.zeros(1, np.float32)],
                {"to": getattr(TensorProto, name.rsplit("_", 1)[1])})


# ----------------------------------------------------------------------------- hand-checked

def test_flatten_axes():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert call_op("Flatten", [x], {"axis": 0}).shape == (1, 24)
    assert call_op("Flatten", [x], {}).shape == (2, 12)
    assert call_op("Flatten", [x], {"axis": 3}).shape == (24, 1)
    assert call_op("Flatten", [x], {"axis": -1}).shape == (6, 4)
    assert call_op("Flatten", [np.zeros((0, 3), np.int8)], {"axis": 1}).shape == (0, 3)
    with pytest.raises(ModelError, match="opset 11"):
        call_op("Flatten", [x], {"axis": -1}, opset=9)
    with pytest.raises(InputError):
        call_op("Flatten", [x], {"axis": 4})


def test_reshape_zero_and_minus_one():
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    s = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    assert call_op("Reshape", [x, s(0, -1)]).shape == (2, 12)
    assert call_op("Reshape", [x, s(-1, 0, 2)]).shape == (4, 3, 2)
    np.testing.assert_array_equal(call_op("Reshape", [x, s(4, 6)]), x.reshape(4, 6))
    # allowzero: 0 is a real zero dim, so the input must be empty.
    e = np.zeros((0, 3), np.float32)
    assert call_op("Reshape", [e, s(3, 0)], {"allowzero": 1}).shape == (3, 0)
    with pytest.raises(InputError):
        call_op("Reshape", [x, s(0, 0, -1)], {"allowzero": 1})
    with pytest.raises(InputError):
        call_op("Reshape", [x, s(5, -1)])
    with pytest.raises(InputError):
        call_op("Reshape", [x, s(-1, -1)])
    # Reshape-1: shape attribute.
    assert call_op("Reshape", [x], {"shape": [6, 4]}, opset=1).shape == (6, 4)


def test_transpose_default_reverses():
    x = np.arange(6, dtype=np.float64).reshape(1, 2, 3)
    y = call_op("Transpose", [x])
    assert y.shape == (3, 2, 1) and y.flags.c_contiguous
    np.testing.assert_array_equal(y[:, :, 0], x[0].T)
    with pytest.raises(ModelError, match="permutation"):
        call_op("Transpose", [x], {"perm": [0, 0, 1]})


def test_concat_mixed_sizes_and_errors():
    a, b = np.ones((2, 1), np.uint8), np.zeros((2, 3), np.uint8)
    y = call_op("Concat", [a, b], {"axis": -1})
    np.testing.assert_array_equal(y, [[1, 0, 0, 0]] * 2)
    with pytest.raises(ModelError, match="required"):
        call_op("Concat", [a, b], {})
    with pytest.raises(InputError):
        call_op("Concat", [a, b], {"axis": 0})


def test_split_versions():
    x = np.arange(7, dtype=np.float32)
    # opset 18 num_outputs: ceil(7/3) = 3 per chunk, last chunk smaller.
    parts = call_op("Split", [x], {"num_outputs": 3}, opset=18, num_outputs=3)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]
    parts = call_op("Split", [x, np.array([2, 5], np.int64)], {}, opset=13, num_outputs=2)
    assert [len(p) for p in parts] == [2, 5]
    parts = call_op("Split", [x], {"split": [4, 3]}, opset=11, num_outputs=2)
    assert [len(p) for p in parts] == [4, 3]
    with pytest.raises(InputError, match="evenly"):
        call_op("Split", [x], {}, opset=13, num_outputs=2)
    with pytest.raises(ModelError):
        call_op("Split", [x], {}, opset=18, num_outputs=2)
    with pytest.raises(ModelError):
        call_op("Split", [x], {"split": [4, 3]}, opset=13, num_outputs=2)


def test_slice_clamping_and_negative_steps():
    x = np.arange(10, dtype=np.int64)
    i = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    big = np.iinfo(np.int64).max
    assert call_op("Slice", [x, i(2), i(big)]).tolist() == list(range(2, 10))
    assert call_op("Slice", [x, i(-1), i(-big), i(0), i(-1)]).tolist() == list(range(9, -1, -1))
    assert call_op("Slice", [x, i(20), i(-20), i(0), i(-3)]).tolist() == [9, 6, 3, 0]
    assert call_op("Slice", [x, i(-100), i(3)]).tolist() == [0, 1, 2]
    assert call_op("Slice", [x, i(5), i(2)]).tolist() == []
    # Slice-1: attributes.
    assert call_op("Slice", [x], {"starts": [1], "ends": [3]}, opset=9).tolist() == [1, 2]
    with pytest.raises(InputError, match="0"):
        call_op("Slice", [x, i(0), i(3), i(0), i(0)])


def test_squeeze_unsqueeze():
    x = np.zeros((1, 3, 1, 2), np.bool_)
    assert call_op("Squeeze", [x]).shape == (3, 2)
    assert call_op("Squeeze", [x, np.array([-2], np.int64)]).shape == (1, 3, 2)
    assert call_op("Squeeze", [x], {"axes": [0]}, opset=11).shape == (3, 1, 2)
    with pytest.raises(InputError):
        call_op("Squeeze", [x, np.array([1], np.int64)])
    y = np.zeros((3, 4), np.float32)
    assert call_op("Unsqueeze", [y, np.array([0, -1], np.int64)]).shape == (1, 3, 4, 1)
    assert call_op("Unsqueeze", [y], {"axes": [1]}, opset=11).shape == (3, 1, 4)
    with pytest.raises(InputError):
        call_op("Unsqueeze", [y, np.array([0, 0], np.int64)])
    with pytest.raises(ModelError):
        call_op("Unsqueeze", [y], {}, opset=11)


def test_dropout_inference_and_training():
    x = np.arange(1, 1001, dtype=np.float32)
    y, mask = call_op("Dropout", [x], {}, opset=13, num_outputs=2)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()
    # opset 7: mask has the data's type
    _, mask7 = call_op("Dropout", [x], {"ratio": 0.3}, opset=7, num_outputs=2)
    assert mask7.dtype == np.float32
    y, mask = call_op("Dropout", [x, np.array(0.25, np.float32), np.array(True)], {"seed": 3},
                      opset=13, num_outputs=2)
    np.testing.assert_allclose(y[mask], x[mask] / 0.75, rtol=1e-6)
    assert (y[~mask] == 0).all() and 0.15 < 1 - mask.mean() < 0.35


def test_constants():
    assert call_op("Constant", [], {"value_floats": [1.0, 2.5]}).dtype == np.float32
    assert call_op("Constant", [], {"value_int": 7}).tolist() == 7
    assert call_op("Constant", [], {"value_strings": [b"a", b"b"]}).tolist() == ["a", "b"]
    t = numpy_helper.from_array(np.array([[1, 2]], np.int8))
    np.testing.assert_array_equal(call_op("Constant", [], {"value": t}), [[1, 2]])
    with pytest.raises(ModelError, match="exactly one"):
        call_op("Constant", [], {"value_int": 1, "value_float": 1.0})
    v = numpy_helper.from_array(np.array([3], np.int32))
    y = call_op("ConstantOfShape", [np.array([2, 3], np.int64)], {"value": v})
    assert y.dtype == np.int32 and y.shape == (2, 3) and (y == 3).all()
    assert call_op("ConstantOfShape", [np.array([], np.int64)]).shape == ()


def test_shape_size_gather():
    x = np.zeros((2, 3, 4, 5), np.float16)
    assert call_op("Shape", [x], {"start": 1, "end": -1}).tolist() == [3, 4]
    assert call_op("Shape", [x], {"start": -10}).tolist() == [2, 3, 4, 5]
    assert call_op("Size", [x]).tolist() == 120
    d = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(call_op("Gather", [d, np.array([[-1, 0]])], {"axis": 1}),
                                  d[:, [[3, 0]]])
    with pytest.raises(InputError, match="out of range"):
        call_op("Gather", [d, np.array([3])])


def test_cast_special_values():
    s = np.array(["1.5", "-INF", "NaN", "1e-3"], dtype=object)
    y = call_op("Cast", [s], {"to": TensorProto.FLOAT})
    assert y.dtype == np.float32 and np.isnan(y[2]) and y[1] == -np.inf
    b = call_op("Cast", [np.array([0.0, -0.5, 2.0], np.float32)], {"to": TensorProto.BOOL})
    assert b.tolist() == [False, True, True]
    i = call_op("Cast", [np.array([-1.7, 2.9], np.float64)], {"to": TensorProto.INT32})
    assert i.tolist() == [-1, 2]
    assert call_op("Cast", [np.array([1.0], np.float32)],
                   {"to": TensorProto.FLOAT16, "saturate": 0}, opset=19).dtype == np.float16


def test_range_expand_tile():
    r = call_op("Range", [np.array(10, np.int32), np.array(1, np.int32), np.array(-3, np.int32)])
    assert r.tolist() == [10, 7, 4] and r.dtype == np.int32
    assert call_op("Range", [np.array(1.0), np.array(1.0), np.array(0.5)]).shape == (0,)
    e = call_op("Expand", [np.array([[1], [2]], np.int8), np.array([2, 1, 3], np.int64)])
    assert e.shape == (2, 2, 3) and e.flags.writeable
    with pytest.raises(InputError):
        call_op("Expand", [np.zeros((2, 3)), np.array([4, 3], np.int64)])
    t = call_op("Tile", [np.array([[1, 2]]), np.array([2, 2], np.int64)])
    assert t.tolist() == [[1, 2, 1, 2], [1, 2, 1, 2]]


# ----------------------------------------------------------------------------- ONNX Runtime parity

ALL_DTYPES = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_]


def _data(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    return (rng.standard_normal(shape) * 20).astype(dtype)


def _i64(*v):
    return np.array(v, dtype=np.int64)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_ort_movement_ops_all_dtypes(rng, dtype):
    x = _data(rng, (2, 3, 4, 5), dtype)
    check_vs_ort("Flatten", [x], {"axis": -2})
    check_vs_ort("Reshape", [x, _i64(0, -1, 5)])
    check_vs_ort("Transpose", [x], {"perm": [2, 0, 3, 1]})
    check_vs_ort("Concat", [x, x[:, :1]], {"axis": 1})
    check_vs_ort("Split", [x, _i64(1, 4)], {"axis": -1}, num_outputs=2)
    check_vs_ort("Slice", [x, _i64(-1, 1), _i64(-100, 5), _i64(2, 3), _i64(-2, 2)])
    check_vs_ort("Unsqueeze", [x, _i64(-1, 1)])
    check_vs_ort("Squeeze", [x[:1], _i64(0)])
    check_vs_ort("Identity", [x])
    check_vs_ort("Gather", [x, _i64(-1, 0, 2)], {"axis": 2})
    check_vs_ort("Expand", [x[:, :1], _i64(3, 1, 1, 1, 1)])
    check_vs_ort("Tile", [x, _i64(1, 2, 1, 3)])
    check_vs_ort("Shape", [x], {"start": 1}, opset=15)
    check_vs_ort("Size", [x])


@pytest.mark.parametrize("opset", [7, 10, 11, 13, 18])
def test_ort_opset_variants(rng, opset):
    x = rng.standard_normal((4, 6, 2)).astype(np.float32)
    if opset >= 13:
        check_vs_ort("Squeeze", [x[:, :1], _i64(1)], opset=opset)
        check_vs_ort("Unsqueeze", [x, _i64(0, 3)], opset=opset)
    else:
        check_vs_ort("Squeeze", [x[:, :1]], {"axes": [1]}, opset=opset)
        check_vs_ort("Unsqueeze", [x], {"axes": [0, 3]}, opset=opset)
    if opset >= 18:
        check_vs_ort("Split", [x], {"axis": 1, "num_outputs": 4}, opset=opset, num_outputs=4)
    elif opset >= 13:
        check_vs_ort("Split", [x, _i64(2, 4)], {"axis": 1}, opset=opset, num_outputs=2)
    else:
        check_vs_ort("Split", [x], {"axis": 1, "split": [1, 5]}, opset=opset, num_outputs=2)
    if opset >= 10:
        check_vs_ort("Slice", [x, _i64(5), _i64(0), _i64(1), _i64(-2)], opset=opset)
    else:
        check_vs_ort("Slice", [x], {"starts": [1, -3], "ends": [100, -1], "axes": [0, 1]},
                     opset=opset)
    if opset >= 12:
        check_vs_ort("Dropout", [x, np.array(0.3, np.float32)], opset=opset, num_outputs=2)
    else:
        # Output only: ONNX Runtime returns an all-False mask from Dropout-10/11 at inference,
        # against the spec and ONNX's reference (every element is kept, so all True).
        check_vs_ort("Dropout", [x], {"ratio": 0.3}, opset=opset)


@pytest.mark.parametrize("to", [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16,
                                TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32,
                                TensorProto.INT64, TensorProto.BOOL])
@pytest.mark.parametrize("src", [np.float32, np.int64, np.uint8, np.bool_])
def test_ort_cast(rng, src, to):
    x = _data(rng, (3, 7), src)
    if src == np.float32 and to in (TensorProto.INT8, TensorProto.UINT8):
        x = np.clip(x, 0, 100)  # out-of-range float -> int is undefined behaviour in C
    check_vs_ort("Cast", [x], {"to": to}, opset=13)


@pytest.mark.parametrize("args", [(0, 10, 3), (5, -4, -2), (1.5, 4.0, 0.25), (2.0, 1.0, 1.0)])
def test_ort_range(args):
    dtype = np.float32 if isinstance(args[0], float) else np.int64
    check_vs_ort("Range", [np.array(a, dtype) for a in args], opset=11)


# ----------------------------------------------------------------------------- cheap elementwise

def test_elementwise_by_hand():
    a = np.array([[1, -2, 3]], np.int32)
    b = np.array([[1], [3]], np.int32)
    assert call_op("Equal", [a, b]).tolist() == [[True, False, False], [False, False, True]]
    assert call_op("Where", [a > 0, a, np.array(0, np.int32)]).tolist() == [[1, 0, 3]]
    assert call_op("Max", [a, b, np.array(2, np.int32)]).tolist() == [[2, 2, 3], [3, 3, 3]]
    assert call_op("Mean", [np.array([1.0, 2.0]), np.array([3.0, 5.0])]).tolist() == [2.0, 3.5]
    assert call_op("Neg", [np.array([-128], np.int8)]).tolist() == [-128]     # wraps as C
    assert call_op("Log", [np.array([0.0], np.float32)]).tolist() == [-np.inf]
    with pytest.raises(InputError):
        call_op("Less", [a, a.astype(np.int64)])
    with pytest.raises(InputError):
        call_op("Floor", [a])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8])
def test_ort_elementwise(rng, dtype):
    a = _data(rng, (2, 3, 4), dtype)
    b = _data(rng, (3, 1), dtype)
    for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Min", "Max"):
        check_vs_ort(op, [a, b], opset=13)
    check_vs_ort("Where", [a > 0, a, b], opset=16)
    check_vs_ort("Abs", [a], opset=13)
    if dtype in (np.float32, np.float64):
        for op in ("Neg", "Exp", "Floor", "Ceil"):
            check_vs_ort(op, [a], opset=13)
        check_vs_ort("Log", [np.abs(a) + 0.1], opset=13)
    if dtype == np.float32:     # ORT's Mean is float32-only
        check_vs_ort("Mean", [a, b, a[:1]], opset=13)
    check_vs_ort("Not", [a > 0], opset=1)
    check_vs_ort("And", [a > 0, b < 0], opset=7)
    check_vs_ort("Or", [a > 0, b < 0], opset=7)


@pytest.mark.parametrize("target", ["float8_e5m2", "float8_e4m3fn", "bfloat16", "int4"])
def test_castlike_rejects_unsupported_target(target):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(InputError, match="not supported"):
        call_op("CastLike", [np.zeros(2, np.float32), np.zeros(2, getattr(ml_dtypes, target))],
                opset=19)
