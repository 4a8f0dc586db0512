"""Weights exist once at run time: constants a builder captured (registry ``consumes``) leave
the session, unless another node or a graph output still reads them; results stay ORT's."""
import gc
import os
import subprocess
import sys
import weakref

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv
from cyconv.engine import session as session_module
from cyconv.engine.registry import NodeContext, call_op, consumed_inputs, consumes
from cyconv.engine.session import InferenceSession
from cyconv.errors import CyconvError, InputError

F = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "m", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def ort_outputs(model, feed):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def assert_matches_ort(sess, model, feed, rtol=1e-5, atol=1e-5):
    got = sess.run(None, feed)
    want = ort_outputs(model, feed)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def session_with_weakrefs(monkeypatch, model, optimize):
    """The session, and name -> weak reference to each constant array the import made."""
    refs = {}
    original = session_module.import_model

    def recording_import(m):
        graph = original(m)
        refs.update({name: weakref.ref(v) for name, v in graph.constants.items()})
        return graph

    monkeypatch.setattr(session_module, "import_model", recording_import)
    sess = InferenceSession(model, threads=2, optimize=optimize)
    gc.collect()
    return sess, refs


def consumed_of(sess):
    return {step.op_type: getattr(step.run, "consumed_inputs", ()) for step in sess._steps}


def conv_gemm_matmul_model(rng, batch=2):
    """x -> Conv(W, B) -> Relu -> Flatten -> Gemm(G, C, transB) -> MatMul(M) -> y; and
    x -> ConvTranspose(T) -> t."""
    inits = {"W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "B": rng.standard_normal(4).astype(np.float32),
             "G": rng.standard_normal((5, 4 * 4 * 4)).astype(np.float32),
             "C": rng.standard_normal(5).astype(np.float32),
             "M": rng.standard_normal((5, 6)).astype(np.float32),
             "T": rng.standard_normal((3, 2, 2, 2)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "C"], ["g"], transB=1),
             helper.make_node("MatMul", ["g", "M"], ["y"]),
             helper.make_node("ConvTranspose", ["x", "T"], ["t"], strides=[2, 2])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, 8, 8])],
                       [helper.make_tensor_value_info("y", F, None),
                        helper.make_tensor_value_info("t", F, None)], inits)
    feed = {"x": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)}
    return model, feed


@pytest.mark.parametrize("optimize", [False, True])
def test_prepared_weights_leave_the_session(rng, monkeypatch, optimize):
    model, feed = conv_gemm_matmul_model(rng)
    sess, refs = session_with_weakrefs(monkeypatch, model, optimize)
    for name in ("W", "G", "M", "T"):   # packed copies replace them: the originals are freed
        assert name not in sess._slot_of
        assert refs[name]() is None, f"{name} is still alive"
    assert all(v is None for v in sess._initial_slots)
    assert sess._graph.constants == {}
    assert_matches_ort(sess, model, feed)


def test_consumed_inputs_are_declared_only_where_a_plan_was_made(rng):
    model, _ = conv_gemm_matmul_model(rng)
    declared = consumed_of(InferenceSession(model, optimize=False))
    assert declared == {"Conv": (1, 2), "Relu": (), "Flatten": (), "Gemm": (1, 2),
                        "MatMul": (1,), "ConvTranspose": (1,)}


def test_weight_shared_by_two_convs_is_released(rng, monkeypatch):
    w = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "W"], ["y"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 6, 6])],
                       [helper.make_tensor_value_info("y", F, None)], {"W": w})
    sess, refs = session_with_weakrefs(monkeypatch, model, optimize=True)
    assert refs["W"]() is None
    assert_matches_ort(sess, model, {"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)})


def test_weight_another_node_reads_is_kept(rng, monkeypatch):
    # MatMul packs M, but Add still reads it at run time
    m = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "M"], ["y"]),
             helper.make_node("Add", ["x", "M"], ["z"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, [4, 4])],
                       [helper.make_tensor_value_info("y", F, None),
                        helper.make_tensor_value_info("z", F, None)], {"M": m})
    sess, refs = session_with_weakrefs(monkeypatch, model, optimize=True)
    assert consumed_of(sess)["MatMul"] == (1,)
    assert refs["M"]() is not None and "M" in sess._slot_of
    feed = {"x": rng.standard_normal((4, 4)).astype(np.float32)}
    assert_matches_ort(sess, model, feed)
    assert_matches_ort(sess, model, feed)   # the kept constant was not written into


def test_weight_that_is_a_graph_output_is_kept(rng, monkeypatch):
    w = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 4, 4])],
                       [helper.make_tensor_value_info("y", F, None),
                        helper.make_tensor_value_info("W", F, [2, 3, 1, 1])], {"W": w})
    sess, refs = session_with_weakrefs(monkeypatch, model, optimize=True)
    assert refs["W"]() is not None
    feed = {"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}
    assert_matches_ort(sess, model, feed)
    y, w_out = sess.run(None, feed)
    w_out[...] = 0                          # a copy: the session's constant is untouched
    np.testing.assert_array_equal(sess.run(None, feed)[1], w)


def test_float64_weights_are_not_consumed(rng):
    # no float64 kernel: the builders run the numpy reference on the weights at run time
    d = TensorProto.DOUBLE
    inits = {"G": rng.standard_normal((3, 4)), "C": rng.standard_normal(4),
             "M": rng.standard_normal((4, 2))}
    nodes = [helper.make_node("Gemm", ["x", "G", "C"], ["g"]),
             helper.make_node("MatMul", ["g", "M"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", d, [2, 3])],
                       [helper.make_tensor_value_info("y", d, None)], inits)
    sess = InferenceSession(model)
    assert consumed_of(sess) == {"Gemm": (), "MatMul": ()}
    assert {"G", "C", "M"} <= set(sess._slot_of)
    assert_matches_ort(sess, model, {"x": rng.standard_normal((2, 3))}, rtol=1e-12)


def test_weights_computed_at_run_time_are_not_consumed(rng):
    # Conv's W = W0 * s with s fed: no plan at load; ConvTranspose with a run-time bias
    inits = {"W0": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "T": rng.standard_normal((3, 2, 2, 2)).astype(np.float32)}
    nodes = [helper.make_node("Mul", ["W0", "s"], ["W"]),
             helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["x", "T", "tb"], ["t"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 5, 5]),
                               helper.make_tensor_value_info("s", F, [1]),
                               helper.make_tensor_value_info("tb", F, [2])],
                       [helper.make_tensor_value_info("y", F, None),
                        helper.make_tensor_value_info("t", F, None)], inits)
    sess = InferenceSession(model)
    assert consumed_of(sess) == {"Mul": (), "Conv": (), "ConvTranspose": ()}
    feed = {"x": rng.standard_normal((1, 3, 5, 5)).astype(np.float32),
            "s": np.array([0.5], np.float32), "tb": np.array([1, -1], np.float32)}
    assert_matches_ort(sess, model, feed)


def test_profile_still_shows_the_shapes_of_consumed_weights(rng):
    from cyconv.engine.profiler import profile
    model, feed = conv_gemm_matmul_model(rng)
    prof = profile(InferenceSession(model, optimize=False), feed, repeats=1)
    shapes = {t.op_type: t.input_shapes for t in prof.nodes}
    assert shapes["Conv"] == [[2, 3, 8, 8], [4, 3, 3, 3], [4]]
    assert shapes["Gemm"] == [[2, 64], [5, 64], [5]]
    assert shapes["MatMul"] == [[2, 5], [5, 6]]


# ----------------------------------------------------------------------------- shape caches

def test_each_batch_size_gets_its_own_geometry(rng):
    model, _ = conv_gemm_matmul_model(rng)
    sess = InferenceSession(model, threads=2)
    for batch in (1, 3, 1, 3):
        assert_matches_ort(sess, model,
                           {"x": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)})


def test_new_spatial_shapes_are_checked_and_bad_ones_not_remembered(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], strides=[2, 1])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, "H", "W"])],
                       [helper.make_tensor_value_info("y", F, None)], {"W": w})
    sess = InferenceSession(model)
    for shape in ((1, 3, 5, 7), (2, 3, 9, 4), (1, 3, 5, 7)):
        assert_matches_ort(sess, model, {"x": rng.standard_normal(shape).astype(np.float32)})
    for _ in range(2):
        with pytest.raises(InputError, match="smaller than the dilated kernel"):
            sess.run(None, {"x": np.zeros((1, 3, 1, 1), np.float32)})


@pytest.mark.parametrize("op,inputs,attrs,match", [
    ("Conv", [(1, 3, 5, 5), (4, 2, 3, 3)], {"group": 2}, "4 channels"),
    ("Conv", [(1, 2, 5), (4, 2, 3, 3)], {}, "rank 4"),
    ("ConvTranspose", [(1, 3, 5, 5), (4, 2, 3, 3)], {}, "4 channels"),
    ("Gemm", [(3, 5), (4, 6)], {}, "must have 5 rows"),
    ("Gemm", [(3,), (3, 6)], {}, "2-D"),
    ("MatMul", [(3, 5), (4, 6)], {}, "must have 5 rows"),
])
def test_prepared_ops_raise_input_errors_for_bad_shapes(rng, op, inputs, attrs, match):
    args = [rng.standard_normal(s).astype(np.float32) for s in inputs]
    for _ in range(2):   # the second call must not find a remembered answer
        with pytest.raises(InputError, match=match):
            call_op(op, args, attrs, const_inputs=(1,))


@pytest.mark.parametrize("op,shapes", [("Conv", [(1, 2, 5, 5), (4, 2, 3, 3)]),
                                       ("ConvTranspose", [(1, 4, 5, 5), (4, 2, 3, 3)]),
                                       ("Gemm", [(3, 4), (4, 5)]),
                                       ("MatMul", [(3, 4), (4, 5)])])
def test_prepared_ops_reject_other_dtypes_than_their_weights(rng, op, shapes):
    x = rng.standard_normal(shapes[0])                     # float64
    w = rng.standard_normal(shapes[1]).astype(np.float32)
    with pytest.raises(InputError, match="float32"):
        call_op(op, [x, w], {}, const_inputs=(1,))


# ----------------------------------------------------------------------------- import peak

IMPORT_PEAK = r"""
import sys
from cyconv.converters.onnx_import import import_model
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")      # restart the high-water mark here
before = status("VmRSS:")
graph = import_model(sys.argv[1])
print((status("VmHWM:") - before) * 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
def test_import_peak_is_file_plus_proto_not_more(rng, tmp_path):
    # The file's bytes and the parsed proto coexist for a moment (2x the weights); sizing the
    # model with ByteSize() serialized it once more (3x).
    w = rng.standard_normal((1024, 8192)).astype(np.float32)            # 32 MiB
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"])],
                       [helper.make_tensor_value_info("x", F, [1, 1024])],
                       [helper.make_tensor_value_info("y", F, None)], {"W": w})
    path = tmp_path / "big.onnx"
    path.write_bytes(model.SerializeToString())
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cyconv.__file__)))
    out = subprocess.run([sys.executable, "-c", IMPORT_PEAK, str(path)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) < 2.5 * w.nbytes


# ----------------------------------------------------------------------------- the contract

def test_consumes_declares_sorted_unique_indices():
    def run(ctx, x, w=None):
        return x
    assert consumes(run, 2, 1, 2) is run
    assert run.consumed_inputs == (1, 2)


def test_declaring_a_run_time_input_consumed_is_a_load_error():
    def run(ctx, x, w=None):
        return x
    w = np.ones(3, np.float32)
    node = NodeContext("Op", "n", 17, (None, w), 2)
    assert consumed_inputs(consumes(run, 1), node) == {1}
    with pytest.raises(CyconvError, match="not constants at load"):
        consumed_inputs(consumes(run, 0), node)
    with pytest.raises(CyconvError, match="not constants at load"):
        consumed_inputs(consumes(run, 2), node)
