"""Index-driven gathers and scatters (cyconv/ops/indexing.py): GatherElements, GatherND,
ScatterElements and ScatterND vs explicit loops, vs ONNX Runtime on one-node models, errors,
and ONNX's node tests.

The ONNX-runtime and node-test helpers are repeated in each tests/ops/test_<family>.py on
purpose: each family's tests stay runnable on their own, and the helpers are short.
"""
import itertools

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError
from cyconv.ops import indexing as ix

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- loops (oracle)

def gather_elements_loop(data, indices, axis):
    out = np.empty(indices.shape, data.dtype)
    for i in itertools.product(*map(range, indices.shape)):
        j = list(i)
        j[axis] = indices[i] % data.shape[axis]
        out[i] = data[tuple(j)]
    return out


def scatter_nd_loop(data, indices, updates, op=None):
    out = data.copy()
    k = indices.shape[-1]
    for m in itertools.product(*map(range, indices.shape[:-1])):
        where = tuple(int(v) % s for v, s in zip(indices[m], data.shape[:k]))
        out[where] = updates[m] if op is None else op(out[where], updates[m])
    return out


# ----------------------------------------------------------------------------- gathers

@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements_matches_loop_and_onnxruntime(rng, axis):
    data = rng.standard_normal((4, 5, 3)).astype(np.float32)
    shape = list(data.shape)
    shape[axis] = 6
    indices = rng.integers(-data.shape[axis], data.shape[axis], shape).astype(np.int64)
    got = call_op("GatherElements", [data, indices], {"axis": axis}, opset=13)
    assert_same(got, gather_elements_loop(data, indices, axis % 3), rtol=0, atol=0)
    want = ort_run("GatherElements", [data, indices], {"axis": axis}, 13, [np.float32])[0]
    assert_same(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("batch_dims,ishape", [(0, (5, 2)), (0, (2, 3, 1)), (1, (4, 3, 2)),
                                               (0, (3,)), (2, (4, 6, 2, 1))], ids=str)
def test_gather_nd_matches_onnxruntime(rng, batch_dims, ishape):
    data = rng.standard_normal((4, 6, 5)).astype(np.float32)
    k = ishape[-1]
    hi = np.array(data.shape[batch_dims:batch_dims + k])
    indices = (rng.integers(0, 1 << 20, ishape) % hi - (rng.random(ishape) < 0.3) * hi)
    indices = indices.astype(np.int64)
    attrs = {"batch_dims": batch_dims}
    got = call_op("GatherND", [data, indices], attrs, opset=13)
    want = ort_run("GatherND", [data, indices], attrs, 13, [np.float32])[0]
    assert_same(got, want, rtol=0, atol=0)


# ----------------------------------------------------------------------------- scatters

@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_matches_loop_and_onnxruntime(rng, reduction):
    data = rng.standard_normal((5, 4, 3)).astype(np.float32)
    # duplicates only where the reduction makes them well defined
    n = 6 if reduction != "none" else 3
    rows = rng.choice(5, n, replace=reduction != "none")
    indices = np.stack([rows - 5 * (rng.random(n) < 0.5), rng.integers(0, 4, n)], -1)
    indices = indices.astype(np.int64)
    if reduction == "none":
        indices[:, 1] = np.arange(n) % 4
    updates = rng.standard_normal((n, 3)).astype(np.float32)
    ops = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
    attrs = {"reduction": reduction}
    got = call_op("ScatterND", [data, indices, updates], attrs, opset=18)
    assert_same(got, scatter_nd_loop(data, indices, updates, ops[reduction]), rtol=1e-6)
    want = ort_run("ScatterND", [data, indices, updates], attrs, 18, [np.float32])[0]
    assert_same(got, want, rtol=1e-6)


def test_scatter_nd_swin_mask_pattern():
    # What the exporters write for `mask[h0:h1, w0:w1] = k` on a zero [H, W] tensor.
    mask = np.zeros((4, 4), np.float32)
    hh, ww = np.meshgrid(np.arange(2, 4), np.arange(0, 2), indexing="ij")
    indices = np.stack([hh, ww], -1).astype(np.int64)          # [2, 2, 2]
    updates = np.full((2, 2), 3.0, np.float32)
    got = call_op("ScatterND", [mask, indices, updates], opset=16)
    want = mask.copy()
    want[2:4, 0:2] = 3.0
    assert_same(got, want, rtol=0, atol=0)
    assert mask.sum() == 0   # the input is not written


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("reduction", ["none", "add", "mul"])
def test_scatter_elements_matches_onnxruntime(rng, axis, reduction):
    data = rng.standard_normal((4, 5)).astype(np.float32)
    if reduction == "none":   # a permutation slice: no duplicate targets
        indices = np.argsort(rng.random((4, 5)), axis=axis)[:3] if axis == 0 else \
            np.argsort(rng.random((4, 5)), axis=axis)[:, :3]
    else:
        shape = (3, 5) if axis == 0 else (4, 3)
        indices = rng.integers(-data.shape[axis], data.shape[axis], shape)
    indices = indices.astype(np.int64)
    updates = rng.standard_normal(indices.shape).astype(np.float32)
    attrs = {"axis": axis, "reduction": reduction}
    got = call_op("ScatterElements", [data, indices, updates], attrs, opset=18)
    want = ort_run("ScatterElements", [data, indices, updates], attrs, 18, [np.float32])[0]
    assert_same(got, want, rtol=1e-6)


def test_indexing_errors():
    data = np.zeros((3, 4), np.float32)
    with pytest.raises(InputError, match="out of range"):
        call_op("ScatterND", [data, np.array([[3]]), np.zeros((1, 4), np.float32)], opset=16)
    with pytest.raises(InputError, match="updates shape"):
        call_op("ScatterND", [data, np.array([[1]]), np.zeros((1, 3), np.float32)], opset=16)
    with pytest.raises(InputError, match="out of range"):
        call_op("GatherElements", [data, np.full((3, 4), -5)], {"axis": 1}, opset=13)
    with pytest.raises(InputError, match="int32 or int64"):
        call_op("GatherND", [data, np.zeros((1, 1), np.float32)], opset=13)
    with pytest.raises(ModelError, match="reduction"):
        call_op("ScatterND", [data, np.array([[1]]), np.zeros((1, 4), np.float32)],
                {"reduction": "max"}, opset=16)
    with pytest.raises(ModelError, match="batch_dims"):
        call_op("GatherND", [data, np.array([[1]])], {"batch_dims": -1}, opset=13)


def test_references_do_not_write_inputs(rng):
    data = rng.standard_normal((3, 3)).astype(np.float32)
    d0 = data.copy()
    ix.scatter_nd_reference(data, np.array([[0]]), np.ones((1, 3), np.float32), "add")
    ix.scatter_elements_reference(data, np.zeros((1, 3), np.int64), np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(data, d0)


# ----------------------------------------------------------------------------- ONNX node tests

INDEX_OPS = {"GatherElements", "GatherND", "ScatterElements", "ScatterND"}
NODE_CASES = onnx_node_cases(r"test_(gather_elements|gathernd|scatter_elements|scatternd)",
                             INDEX_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 20


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
