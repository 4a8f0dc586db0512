"""Statistics normalisations (cyconv/ops/normalization.py): LayerNormalization,
InstanceNormalization, GroupNormalization and RMSNormalization vs the numpy references, vs ONNX
Runtime on one-node models, attribute errors at load, and ONNX's node tests.

The ONNX-runtime and node-test helpers are repeated in each tests/ops/test_<family>.py on
purpose: each family's tests stay runnable on their own, and the helpers are short.
"""

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops import normalization as nz

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- LayerNormalization

# (shape, axis, scale shape or None for d[axis:])
LN_CASES = [((2, 5, 8), -1, None), ((3, 4, 5, 6), 1, None), ((3, 4, 5, 6), -2, None),
            ((2, 197, 768), -1, None), ((2, 7, 7, 96), -1, None), ((4, 6), 0, None),
            ((2, 3, 4), 1, (1, 4)), ((2, 3, 4), -1, (1,))]


@pytest.mark.parametrize("shape,axis,pshape", LN_CASES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm_matches_reference(rng, shape, axis, pshape, with_bias):
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(np.float32)
    ps = pshape or shape[axis:]
    scale = rng.uniform(0.5, 1.5, ps).astype(np.float32)
    bias = rng.standard_normal(ps).astype(np.float32) if with_bias else None
    inputs = [x, scale] + ([bias] if with_bias else [])
    x0 = x.copy()
    want = nz.layer_norm_reference(x, scale, bias, axis, 1e-5)
    got = call_op("LayerNormalization", inputs, {"axis": axis}, opset=17, num_outputs=3)
    for g, w in zip(got, want):
        assert_same(g, w, rtol=1e-5, atol=2e-5)
    np.testing.assert_array_equal(x, x0)
    y = call_op("LayerNormalization", inputs, {"axis": axis}, opset=17)
    np.testing.assert_array_equal(y, got[0])


def test_layer_norm_by_hand():
    x = np.array([[1.0, 2.0, 3.0, 6.0]], np.float32)   # mean 3, var (4 + 1 + 0 + 9) / 4
    y = call_op("LayerNormalization", [x, np.ones(4, np.float32)], {"epsilon": 0.0}, opset=17)
    np.testing.assert_allclose(y, (x - 3) / np.sqrt(3.5), rtol=1e-6)


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm_matches_onnxruntime(rng, axis):
    x = rng.standard_normal((3, 16, 24)).astype(np.float32) * 4
    scale = rng.uniform(0.5, 1.5, x.shape[axis:]).astype(np.float32)
    bias = rng.standard_normal(x.shape[axis:]).astype(np.float32)
    attrs = {"axis": axis, "epsilon": 1e-6}
    want = ort_run("LayerNormalization", [x, scale, bias], attrs, 17, [np.float32] * 3)
    got = call_op("LayerNormalization", [x, scale, bias], attrs, opset=17, num_outputs=3)
    for g, w in zip(got, want):
        assert_same(g, w, rtol=1e-5, atol=1e-5)


def test_layer_norm_other_dtypes(rng):
    x = rng.standard_normal((2, 3, 4))
    y, mean, inv = call_op("LayerNormalization", [x, np.ones(4)], {}, opset=17, num_outputs=3)
    assert y.dtype == np.float64 and mean.dtype == np.float32 and mean.shape == (2, 3, 1)
    assert_same(y, nz.layer_norm_reference(x, np.ones(4))[0], rtol=1e-12)
    y16 = call_op("LayerNormalization", [x.astype(np.float16), np.ones(4, np.float16)], {},
                  opset=17)
    assert y16.dtype == np.float16
    assert_same(y16, y.astype(np.float16), rtol=1e-2, atol=1e-2)


def test_layer_norm_errors(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    s = np.ones(3, np.float32)
    with pytest.raises(ModelError, match="stash_type"):
        call_op("LayerNormalization", [x, s], {"stash_type": 7}, opset=17)
    with pytest.raises(ModelError, match="epsilon"):
        call_op("LayerNormalization", [x, s], {"epsilon": -1.0}, opset=17)
    with pytest.raises(ModelError, match="axis"):
        call_op("LayerNormalization", [x, s], {"axis": 0.5}, opset=17)
    with pytest.raises(ModelError, match="inputs"):
        call_op("LayerNormalization", [x], {}, opset=17)
    with pytest.raises(ModelError, match="unsupported attribute"):
        call_op("LayerNormalization", [x, s], {"momentum": 0.5}, opset=17)
    with pytest.raises(InputError, match="out of range"):
        call_op("LayerNormalization", [x, s], {"axis": 2}, opset=17)
    with pytest.raises(InputError, match="does not broadcast"):
        call_op("LayerNormalization", [x, np.ones(4, np.float32)], {}, opset=17)


# ----------------------------------------------------------------------------- RMSNormalization

@pytest.mark.parametrize("shape,axis", [((2, 5, 8), -1), ((3, 4, 5), 1)], ids=str)
def test_rms_norm_matches_reference(rng, shape, axis):
    x = rng.standard_normal(shape).astype(np.float32) * 2
    scale = rng.uniform(0.5, 1.5, shape[axis:]).astype(np.float32)
    got = call_op("RMSNormalization", [x, scale], {"axis": axis}, opset=23)
    assert_same(got, nz.rms_norm_reference(x, scale, axis), rtol=1e-5, atol=1e-6)
    ms = np.mean(x.astype(np.float64) ** 2, axis=tuple(range(axis % x.ndim, x.ndim)),
                 keepdims=True)
    assert_same(got, (x / np.sqrt(ms + 1e-5) * scale).astype(np.float32), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Instance/Group

@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 8, 17), (2, 4, 3, 3, 3)], ids=str)
def test_instance_norm_matches_reference_and_onnxruntime(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32) * 2 + 1
    c = shape[1]
    s = rng.uniform(0.5, 1.5, c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    got = call_op("InstanceNormalization", [x, s, b], {"epsilon": 1e-4}, opset=6)
    assert_same(got, nz.instance_norm_reference(x, s, b, 1e-4), rtol=1e-5, atol=1e-5)
    want = ort_run("InstanceNormalization", [x, s, b], {"epsilon": 1e-4}, 6, [np.float32])[0]
    assert_same(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_matches_reference(rng, opset, groups):
    x = rng.standard_normal((2, 8, 5, 3)).astype(np.float32)
    per = 8 if opset >= 21 else groups
    s = rng.uniform(0.5, 1.5, per).astype(np.float32)
    b = rng.standard_normal(per).astype(np.float32)
    got = call_op("GroupNormalization", [x, s, b], {"num_groups": groups}, opset=opset)
    want = nz.group_norm_reference(x, s, b, groups, 1e-5, per_channel=opset >= 21)
    assert_same(got, want, rtol=1e-5, atol=1e-5)
    if opset >= 21:
        want = ort_run("GroupNormalization", [x, s, b], {"num_groups": groups}, opset,
                       [np.float32])[0]
        assert_same(got, want, rtol=1e-5, atol=1e-5)


def test_group_norm_is_instance_norm_with_c_groups(rng):
    x = rng.standard_normal((2, 6, 4, 4)).astype(np.float32)
    s, b = np.full(6, 1.5, np.float32), np.full(6, 0.25, np.float32)
    assert_same(call_op("GroupNormalization", [x, s, b], {"num_groups": 6}, opset=21),
                call_op("InstanceNormalization", [x, s, b], {}, opset=6), rtol=1e-6, atol=1e-6)


def test_group_and_instance_errors(rng):
    x = rng.standard_normal((1, 6, 2, 2)).astype(np.float32)
    s = np.ones(6, np.float32)
    with pytest.raises(ModelError, match="num_groups is required"):
        call_op("GroupNormalization", [x, s, s], {}, opset=21)
    with pytest.raises(ModelError, match="num_groups"):
        call_op("GroupNormalization", [x, s, s], {"num_groups": 0}, opset=21)
    with pytest.raises(InputError, match="groups"):
        call_op("GroupNormalization", [x, s, s], {"num_groups": 4}, opset=21)
    with pytest.raises(InputError, match="scale has 6"):
        call_op("GroupNormalization", [x, s, s], {"num_groups": 3}, opset=18)
    with pytest.raises(InputError, match="B has 5"):
        call_op("InstanceNormalization", [x, s, s[:5]], {}, opset=6)
    with pytest.raises(ModelError, match="3 inputs"):
        call_op("InstanceNormalization", [x, s], {}, opset=6)


# ----------------------------------------------------------------------------- ONNX node tests

NORM_OPS = {"LayerNormalization", "InstanceNormalization", "GroupNormalization",
            "RMSNormalization"}
NODE_CASES = onnx_node_cases(r"test_(layer_normalization|instancenorm|group_normalization|"
                             r"rms_normalization)", NORM_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 30


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
