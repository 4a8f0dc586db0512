"""Pooling (cyconv/ops/pool.py): output geometry, the 1-D/2-D float32 kernels vs the numpy
references over kernels, strides, dilations, pads, ceil_mode and count_include_pad, thread-count
independence, global pools, attribute rules, ONNX Runtime parity (which also checks the
references) and ONNX's node tests.
"""
import itertools

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops import pool
from cyconv.kernels import pool as _kp
from cyconv.ops.pool import pool_geometry, window_counts

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- geometry

@pytest.mark.parametrize("n,k,s,d,pads,auto_pad,ceil,want", [
    (7, 3, 2, 1, (0, 0), "NOTSET", False, (3, 0, 0)),
    (7, 3, 2, 1, (1, 1), "NOTSET", False, (4, 1, 1)),
    (6, 3, 2, 1, (0, 0), "NOTSET", True, (3, 0, 0)),      # ceil adds a partial window
    (5, 2, 2, 1, (1, 0), "NOTSET", True, (3, 1, 0)),
    (4, 2, 2, 1, (1, 1), "NOTSET", True, (3, 1, 1)),      # the 4th window would start on pad
    (7, 3, 1, 2, (0, 0), "NOTSET", False, (3, 0, 0)),     # dilated window spans 5
    (7, 3, 2, 1, (0, 0), "SAME_UPPER", False, (4, 1, 1)),
    (8, 3, 2, 1, (0, 0), "SAME_UPPER", False, (4, 0, 1)),
    (8, 3, 2, 1, (0, 0), "SAME_LOWER", False, (4, 1, 0)),
    (5, 1, 3, 1, (0, 0), "SAME_UPPER", False, (2, 0, 0)),  # negative total clamps to 0
    (7, 3, 2, 1, (0, 0), "VALID", False, (3, 0, 0)),
])
def test_pool_geometry(n, k, s, d, pads, auto_pad, ceil, want):
    out, pb, pe = pool_geometry((n,), (k,), (s,), (d,), pads, auto_pad, ceil)
    assert (out[0], pb[0], pe[0]) == want


def test_window_counts():
    # n=5, k=3, s=2, pads 1/1: windows start at -1, 1, 3 -> taps [-1,0,1], [1,2,3], [3,4,5]
    np.testing.assert_array_equal(window_counts(3, 5, 3, 2, 1, 1, 1, False), [2, 3, 2])
    np.testing.assert_array_equal(window_counts(3, 5, 3, 2, 1, 1, 1, True), [3, 3, 3])
    # ceil-mode window past the end padding: position 5 is beyond in + pe = 5 and never counts
    np.testing.assert_array_equal(window_counts(3, 5, 3, 2, 1, 1, 0, True), [3, 3, 2])


# ----------------------------------------------------------------------------- kernel vs reference

def _grid(seed=0, count=160):
    """A fixed sample of the (kernel, stride, dilation, pads, ceil, count_include_pad) grid."""
    full = list(itertools.product(
        [(1, 1), (2, 2), (3, 3), (2, 3), (5, 1)],
        [(1, 1), (2, 2), (1, 2), (3, 2)],
        [(1, 1), (2, 2), (1, 3)],
        [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0), (2, 2, 2, 2)],
        [0, 1], [0, 1]))
    picks = np.random.default_rng(seed).choice(len(full), count, replace=False)
    return [full[i] for i in sorted(picks)]


GRID = _grid()
INPUTS_2D = [(1, 1, 7, 9), (3, 2, 8, 8), (2, 3, 5, 6)]


@pytest.mark.parametrize("kernel,strides,dilations,pads,ceil,cip", GRID, ids=str)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool2d_kernel_matches_reference(rng, op, kernel, strides, dilations, pads, ceil, cip):
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "pads": pads,
             "ceil_mode": ceil}
    if op == "AveragePool":
        attrs["count_include_pad"] = cip
    ref_attrs = dict(attrs)
    ref = pool.max_pool_reference if op == "MaxPool" else pool.average_pool_reference
    for shape in INPUTS_2D:
        x = rng.standard_normal(shape).astype(np.float32)
        out, _, _ = pool_geometry(shape[2:], kernel, strides, dilations, pads, "NOTSET", ceil)
        if min(out) < 1:
            continue
        x0 = x.copy()
        got = call_op(op, [x], attrs, opset=19, n_threads=2)
        assert_same(got, ref(x, **ref_attrs), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("k,s,d,pads,ceil,cip", [
    (3, 1, 1, (1, 1), 0, 0), (2, 2, 1, (0, 0), 1, 0), (3, 2, 2, (2, 1), 1, 1),
    (4, 3, 1, (1, 2), 0, 1), (1, 1, 1, (0, 0), 0, 0), (5, 1, 1, (0, 0), 0, 0),
])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("shape", [(1, 1, 11), (3, 4, 20)], ids=str)
def test_pool1d_kernel_matches_reference(rng, op, shape, k, s, d, pads, ceil, cip):
    attrs = {"kernel_shape": [k], "strides": [s], "dilations": [d], "pads": list(pads),
             "ceil_mode": ceil}
    if op == "AveragePool":
        attrs["count_include_pad"] = cip
    ref = pool.max_pool_reference if op == "MaxPool" else pool.average_pool_reference
    x = rng.standard_normal(shape).astype(np.float32)
    assert_same(call_op(op, [x], attrs, opset=19), ref(x, **attrs), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_auto_pad_matches_reference(rng, op, auto_pad):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    attrs = {"kernel_shape": [3, 2], "strides": [2, 3], "auto_pad": auto_pad}
    ref = pool.max_pool_reference if op == "MaxPool" else pool.average_pool_reference
    assert_same(call_op(op, [x], attrs, opset=19), ref(x, **attrs), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [7, 7]}),
])
# (1, 64, 13, 13): the CIFAR CNN's second pool, split from WINDOW_GRAIN on (kernels/pool.pyx)
@pytest.mark.parametrize("shape", [(2, 32, 56, 57), (1, 64, 13, 13)])
def test_threads_do_not_change_results(rng, op, attrs, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    outs = [call_op(op, [x], attrs, opset=19, n_threads=t) for t in (1, 2, 3)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    ref = pool.max_pool_reference if op == "MaxPool" else pool.average_pool_reference
    assert_same(outs[0], ref(x, **attrs), rtol=1e-6, atol=1e-7)


def test_non_contiguous_and_3d_and_dtypes(rng):
    x = rng.standard_normal((4, 5, 2, 3)).astype(np.float32).transpose(2, 3, 0, 1)
    attrs = {"kernel_shape": [2, 2]}
    assert_same(call_op("MaxPool", [x], attrs), pool.max_pool_reference(x, **attrs), rtol=0)
    x3 = rng.standard_normal((1, 2, 5, 6, 7)).astype(np.float32)
    attrs3 = {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]}
    assert_same(call_op("AveragePool", [x3], attrs3),
                pool.average_pool_reference(x3, **attrs3), rtol=1e-6)
    for dtype in (np.float64, np.float16):
        y = call_op("AveragePool", [x.astype(dtype)], attrs)
        assert y.dtype == dtype
    u = rng.integers(0, 255, (1, 2, 6, 6)).astype(np.uint8)
    assert_same(call_op("MaxPool", [u], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, opset=12),
                pool.max_pool_reference(u, [3, 3], pads=[1, 1, 1, 1]))


# ----------------------------------------------------------------------------- every ISA table

ISAS = _kp.available_isas()


@pytest.fixture(params=ISAS)
def pool_isa(request):
    """Run the test with each row-operation table this CPU supports, then restore the default."""
    before = _kp.isa()
    _kp.set_isa(request.param)
    yield request.param
    _kp.set_isa(before)


def test_isa_choice():
    assert _kp.isa() == ISAS[0]          # the widest the CPU runs is the default
    assert "generic" in ISAS
    with pytest.raises(ValueError, match="not supported"):
        _kp.set_isa("sse9")


# Widths straddling the vector lengths (8, 16, and the 32-float loads of stride 2) so bodies,
# masked / scalar tails and the row buffer's slack are all exercised.
WIDE_CASES = [
    # kernel, strides, dilations, pads, ceil, count_include_pad
    ((3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 0, 0),   # ResNet stem
    ((3, 3), (2, 2), (1, 1), (0, 0, 0, 0), 1, 0),   # GoogLeNet / SqueezeNet (ceil_mode)
    ((2, 2), (2, 2), (1, 1), (0, 0, 0, 0), 0, 0),   # VGG
    ((2, 2), (2, 2), (1, 1), (0, 0, 0, 0), 1, 1),
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 0, 1),   # Inception branch pool
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 0, 0),
    ((5, 4), (1, 2), (2, 3), (3, 2, 1, 4), 1, 1),   # dilated, odd pads, both vector strides
    ((3, 3), (3, 3), (1, 1), (1, 1, 1, 1), 1, 0),   # stride 3: scalar horizontal pass
    ((7, 7), (1, 1), (1, 1), (0, 0, 0, 0), 0, 0),
    ((1, 3), (2, 1), (1, 2), (0, 2, 0, 2), 0, 1),
]
WIDE_SHAPES = [(1, 3, 9, 67), (2, 2, 20, 33), (1, 2, 6, 112), (1, 1, 5, 15)]


@pytest.mark.parametrize("kernel,strides,dilations,pads,ceil,cip", WIDE_CASES, ids=str)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool2d_every_isa_matches_reference(rng, pool_isa, op, kernel, strides, dilations, pads,
                                            ceil, cip):
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "pads": pads,
             "ceil_mode": ceil}
    if op == "AveragePool":
        attrs["count_include_pad"] = cip
    ref = pool.max_pool_reference if op == "MaxPool" else pool.average_pool_reference
    for shape in WIDE_SHAPES:
        out, _, _ = pool_geometry(shape[2:], kernel, strides, dilations, pads, "NOTSET", ceil)
        if min(out) < 1:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        outs = [call_op(op, [x], attrs, opset=19, n_threads=t) for t in (1, 2, 3)]
        assert_same(outs[0], ref(x, **attrs), rtol=1e-6, atol=1e-7)
        for y in outs[1:]:
            np.testing.assert_array_equal(y, outs[0])


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools_every_isa(rng, pool_isa, op):
    ref = (pool.global_average_pool_reference if op == "GlobalAveragePool"
           else pool.global_max_pool_reference)
    for shape in [(2, 3, 7, 7), (1, 4, 1, 31), (1, 2, 1, 33), (1, 3, 1, 1), (3, 5, 1, 64)]:
        x = rng.uniform(-3.0, 1.0, shape).astype(np.float32)
        outs = [call_op(op, [x], n_threads=t) for t in (1, 2, 3)]
        assert_same(outs[0], ref(x), rtol=1e-6, atol=1e-7)
        for y in outs[1:]:
            np.testing.assert_array_equal(y, outs[0])


def test_single_plane_split_into_row_bands(rng, pool_isa):
    # One plane and 3 threads: the work is cut into bands of output rows, same result.
    x = rng.standard_normal((1, 1, 300, 301)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    outs = [call_op("MaxPool", [x], attrs, opset=19, n_threads=t) for t in (1, 2, 3)]
    assert_same(outs[0], pool.max_pool_reference(x, **attrs), rtol=0)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


# Tables with a register plane path (pool_avx512.h: 16 lanes, taps over <= 16 columns;
# pool_avx2.h: 8 lanes, <= 8 columns), stride 1 or 2; other pools fall back to the row path.
PLANE_ISAS = [n for n in ("avx512f", "avx2") if n in ISAS]
PLANE_POOLS = [
    # kernel, strides, dilations, pads, ceil
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 0),    # inception branch pool
    ((3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 0),    # ResNet stem
    ((3, 3), (2, 2), (1, 1), (0, 0, 0, 0), 1),    # GoogLeNet / SqueezeNet
    ((2, 2), (2, 2), (1, 1), (0, 0, 0, 0), 0),    # VGG, LeNet
    ((2, 2), (2, 2), (1, 1), (0, 1, 0, 1), 1),
    ((3, 5), (2, 1), (2, 4), (2, 1, 2, 3), 1),    # taps over 16 columns: AVX2 takes the row path
    ((2, 3), (1, 2), (1, 4), (1, 0, 0, 2), 0),    # dilated stride 2, taps over 8 columns
    ((3, 3), (1, 2), (1, 3), (0, 2, 1, 1), 1),    # stride 2 with taps 3 columns apart
    ((5, 5), (1, 1), (1, 1), (2, 2, 2, 2), 0),
    ((1, 1), (1, 2), (1, 1), (0, 0, 0, 0), 0),
]


@pytest.mark.skipif(not PLANE_ISAS, reason="needs AVX2 or AVX-512")
@pytest.mark.parametrize("plane_isa", PLANE_ISAS)
@pytest.mark.parametrize("op,cip", [("MaxPool", 0), ("AveragePool", 0), ("AveragePool", 1)])
@pytest.mark.parametrize("width", [7, 8, 9, 14, 15, 16, 17, 28, 30, 56, 112])
def test_register_plane_path_is_bitwise_the_row_path(rng, plane_isa, op, cip, width):
    # The plane path pools whole output rows in registers; the generic table runs the
    # row-buffer path with the same operations in the same order, so the two agree exactly
    # (NaN and -0.0 included), padding, ceil_mode, dilation and thread count included.
    before = _kp.isa()
    x = rng.standard_normal((2, 3, min(width, 11), width)).astype(np.float32)
    x[x > 2.2] = np.nan
    x[np.abs(x) < 0.03] = -0.0
    try:
        for i, (kernel, strides, dil, pads, ceil) in enumerate(PLANE_POOLS):
            attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dil,
                     "pads": pads, "ceil_mode": ceil}
            if op == "AveragePool":
                attrs["count_include_pad"] = cip
            got = {}
            for name in (plane_isa, "generic"):
                _kp.set_isa(name)
                got[name] = call_op(op, [x], attrs, opset=19, n_threads=1 + i % 2)
            np.testing.assert_array_equal(got[plane_isa].view(np.int32),
                                          got["generic"].view(np.int32))
    finally:
        _kp.set_isa(before)


def test_all_padding_rows_and_columns(pool_isa):
    # Pads as large as the kernel allows: windows whose taps are all padding in one direction
    # give the identity there (max: -inf, average with count_include_pad: 0).
    x = np.arange(1 * 1 * 2 * 3, dtype=np.float32).reshape(1, 1, 2, 3) + 1.0
    attrs = {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2]}
    for op, ref, extra in [("MaxPool", pool.max_pool_reference, {}),
                           ("AveragePool", pool.average_pool_reference,
                            {"count_include_pad": 1})]:
        got = call_op(op, [x], {**attrs, **extra}, opset=19)
        assert_same(got, ref(x, **attrs, **extra), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- global pools

@pytest.mark.parametrize("shape", [(1, 3, 7, 7), (2, 5, 1, 1), (2, 3, 10), (1, 2, 3, 4, 5),
                                   (2, 8, 224, 224), (1, 1, 17, 1)], ids=str)
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(rng, op, shape):
    x = rng.uniform(-1.0, 3.0, shape).astype(np.float32)
    ref = (pool.global_average_pool_reference if op == "GlobalAveragePool"
           else pool.global_max_pool_reference)
    outs = [call_op(op, [x], n_threads=t) for t in (1, 3)]
    assert_same(outs[0], ref(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(outs[0], outs[1])


# ----------------------------------------------------------------------------- attribute rules

@pytest.mark.parametrize("attrs,match", [
    ({}, "kernel_shape is required"),
    ({"kernel_shape": [3, 3], "strides": [1]}, "strides needs 2"),
    ({"kernel_shape": [3, 3], "strides": [0, 1]}, "strides values must be >= 1"),
    ({"kernel_shape": [3, 3], "pads": [1, 1]}, "pads needs 4"),
    ({"kernel_shape": [3, 3], "pads": [-1, 0, 0, 0]}, "pads values must be >= 0"),
    ({"kernel_shape": [3, 3], "auto_pad": "SAME"}, "auto_pad"),
    ({"kernel_shape": [3, 3], "auto_pad": "VALID", "pads": [1, 1, 1, 1]}, "together"),
    ({"kernel_shape": [3, 3], "ceil_mode": 2}, "ceil_mode"),
    ({"kernel_shape": [3, 3], "storage_order": 3}, "storage_order"),
    ({"kernel_shape": [3, 3], "count_include_pad": 1}, "unsupported attribute"),
])
def test_maxpool_attribute_errors(attrs, match):
    with pytest.raises(ModelError, match=match):
        call_op("MaxPool", [np.zeros((1, 1, 4, 4), np.float32)], attrs, opset=12)


def test_rank_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="rank"):
        call_op("AveragePool", [np.zeros((1, 4, 4), np.float32)], {"kernel_shape": [2, 2]})


# ----------------------------------------------------------------------------- ONNX Runtime

ORT_POOLS = [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [2, 1, 0, 1], "dilations": [2, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [3, 3], "auto_pad": "VALID", "strides": [2, 1]},
]


@pytest.mark.parametrize("attrs", ORT_POOLS, ids=str)
@pytest.mark.parametrize("op,extra", [("MaxPool", {}), ("AveragePool", {"count_include_pad": 0}),
                                      ("AveragePool", {"count_include_pad": 1})])
def test_2d_matches_onnxruntime(rng, op, extra, attrs):
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    attrs = {**attrs, **extra}
    want = ort_run(op, [x], attrs, 19, [np.float32])[0]
    ref = pool.max_pool_reference if op == "MaxPool" else pool.average_pool_reference
    assert_same(ref(x, **attrs), want, rtol=1e-6, atol=1e-7)     # the oracle is right
    assert_same(call_op(op, [x], attrs, opset=19, n_threads=2), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_1d_and_3d_match_onnxruntime(rng, op):
    for shape, attrs in [((2, 3, 15), {"kernel_shape": [3], "strides": [2], "pads": [1, 1],
                                       "ceil_mode": 1}),
                         ((1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "pads": [1, 0, 1, 0, 1, 1],
                                            "strides": [1, 2, 2]})]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = ort_run(op, [x], attrs, 19, [np.float32])[0]
        assert_same(call_op(op, [x], attrs, opset=19), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_indices_match_onnxruntime(rng, storage_order):
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    attrs = {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1],
             "storage_order": storage_order}
    y, idx = call_op("MaxPool", [x], attrs, opset=12, num_outputs=2)
    want_y, want_idx = ort_run("MaxPool", [x], attrs, 12, [np.float32, np.int64])
    assert_same(y, want_y, rtol=0)
    assert_same(idx, want_idx)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_match_onnxruntime(rng, op):
    x = rng.standard_normal((2, 16, 13, 14)).astype(np.float32)
    assert_same(call_op(op, [x]), ort_run(op, [x], {}, 1, [np.float32])[0], rtol=1e-5,
                atol=1e-7)


# ----------------------------------------------------------------------------- ONNX node tests

POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
NODE_CASES = onnx_node_cases(r"test_(maxpool|averagepool|globalaveragepool|globalmaxpool)",
                             POOL_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 43


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
