"""InferenceSession behaviour: API shape, feeds, errors, threads, memory release."""
import gc
import threading
import weakref

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import cyconv
from cyconv.engine.session import InferenceSession


def small_model(opset=17):
    """x[N,3] -> Relu -> + c -> Mul x -> z; a second output y (the Relu)."""
    nodes = [helper.make_node("Relu", ["x"], ["y"]),
             helper.make_node("Add", ["y", "c"], ["a"]),
             helper.make_node("Mul", ["a", "x"], ["z"])]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor("c", TensorProto.FLOAT, [3], [1, 2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def expected(x):
    y = np.maximum(x, 0)
    return [(y + np.array([1, 2, 3], np.float32)) * x, y]


@pytest.mark.parametrize("kind", ["proto", "bytes", "path"])
def test_model_forms(kind, tmp_path):
    model = small_model()
    if kind == "bytes":
        model = model.SerializeToString()
    elif kind == "path":
        path = tmp_path / "m.onnx"
        onnx.save(model, path)
        model = str(path)
    sess = cyconv.InferenceSession(model)
    x = np.array([[-1, 0, 2], [3, -4, 5]], np.float32)
    for got, want in zip(sess.run(None, {"x": x}), expected(x)):
        np.testing.assert_array_equal(got, want)


def test_inputs_outputs_metadata():
    sess = InferenceSession(small_model())
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.shape, inp.type) == ("x", ["N", 3], "tensor(float)")
    assert [o.name for o in sess.get_outputs()] == ["z", "y"]


def test_output_selection_and_order():
    sess = InferenceSession(small_model())
    x = np.ones((1, 3), np.float32)
    y, z = sess.run(["y", "z"], {"x": x})
    np.testing.assert_array_equal(y, expected(x)[1])
    np.testing.assert_array_equal(z, expected(x)[0])
    with pytest.raises(cyconv.InputError, match="unknown output name 'nope'"):
        sess.run(["nope"], {"x": x})


@pytest.mark.parametrize("feed, message", [
    ({}, "missing input 'x'"),
    ({"x": np.ones((1, 3), np.float32), "w": np.ones(1)}, "unknown input name"),
    ({"x": np.ones((1, 3), np.float64)}, r"expected tensor\(float\)"),
    ({"x": np.ones((1, 4), np.float32)}, "dimension 1 must be 3"),
    ({"x": np.ones((3,), np.float32)}, "expected rank 2"),
    ({"x": "text"}, "expected a numpy array"),
])
def test_bad_feed_raises_input_error(feed, message):
    sess = InferenceSession(small_model())
    with pytest.raises(cyconv.InputError, match=message):
        sess.run(None, feed)


def test_input_error_is_value_error():
    assert issubclass(cyconv.InputError, ValueError)
    assert issubclass(cyconv.ModelError, ValueError)
    assert issubclass(cyconv.UnsupportedOpError, cyconv.ModelError)


def test_non_contiguous_feed_and_outputs_are_fresh():
    sess = InferenceSession(small_model())
    x = np.arange(12, dtype=np.float32).reshape(2, 6)[:, ::2]
    got = sess.run(None, {"x": x})
    for g, w in zip(got, expected(np.ascontiguousarray(x))):
        np.testing.assert_array_equal(g, w)


def test_identity_output_is_a_copy_not_the_feed_or_a_constant():
    nodes = [helper.make_node("Identity", ["x"], ["y"]),
             helper.make_node("Identity", ["c"], ["k"])]
    graph = helper.make_graph(
        nodes, "id", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [2])],
        [helper.make_tensor("c", TensorProto.FLOAT, [2], [5, 6])])
    sess = InferenceSession(helper.make_model(graph))
    x = np.array([1, 2], np.float32)
    y, k = sess.run(None, {"x": x})
    y[0] = 100
    k[0] = 100
    assert x[0] == 1
    np.testing.assert_array_equal(sess.run(None, {"x": x})[1], [5, 6])


def test_unsupported_ops_are_all_named_at_load():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("FooOp", ["a"], ["b"]),
             helper.make_node("BarOp", ["b"], ["c"], domain="com.example")]
    graph = helper.make_graph(
        nodes, "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    with pytest.raises(cyconv.UnsupportedOpError) as info:
        InferenceSession(model)
    assert "FooOp (opset 17)" in str(info.value) and "com.example.BarOp" in str(info.value)


def test_bad_attribute_is_model_error():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], bogus=3)], "a",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(cyconv.ModelError, match="bogus"):
        InferenceSession(helper.make_model(graph))


def test_constant_subgraph_is_folded_at_load():
    # Shape of a constant -> Reshape target: computed once, at load.
    nodes = [helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Reshape", ["x", "s"], ["y"])]
    graph = helper.make_graph(
        nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("c", TensorProto.FLOAT, [2, 3], [0] * 6)])
    sess = InferenceSession(helper.make_model(graph))
    assert [s.op_type for s in sess._steps] == ["Reshape"]
    x = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x.reshape(2, 3))


def test_intermediates_are_released_after_last_use(monkeypatch):
    """A value dies right after its last consumer: only outputs survive a run of the Python
    loop (a native plan holds its values in its arena)."""
    monkeypatch.setenv("CYCONV_NATIVE", "0")
    survivors = []

    class Spy:  # wraps each step to record weak references to what it produced
        def __init__(self, run):
            self.inner = run

        def __call__(self, ctx, *args):
            out = self.inner(ctx, *args)
            survivors.append(weakref.ref(out))
            return out

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"])]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1000])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1000])])
    sess = InferenceSession(helper.make_model(graph))
    for step in sess._steps:
        step.run = Spy(step.run)
    (c,) = sess.run(None, {"x": np.ones(1000, np.float32)})
    gc.collect()
    alive = [r() is not None for r in survivors]
    assert alive == [False, False, True]


def test_threads_argument_and_results_do_not_depend_on_it(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert InferenceSession(small_model()).threads == 3
    assert InferenceSession(small_model(), threads=1).threads == 1
    with pytest.raises(ValueError):
        InferenceSession(small_model(), threads=0)
    x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    outs = [InferenceSession(small_model(), threads=t).run(None, {"x": x}) for t in (1, 2, 4)]
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


def test_run_is_thread_safe():
    sess = InferenceSession(small_model())
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((50, 3)).astype(np.float32) for _ in range(8)]
    results = [None] * len(inputs)

    def work(k):
        for _ in range(20):
            results[k] = sess.run(None, {"x": inputs[k]})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, got in zip(inputs, results):
        for g, w in zip(got, expected(x)):
            np.testing.assert_array_equal(g, w)


def test_runtime_shape_conflict_is_input_error():
    nodes = [helper.make_node("Add", ["x", "y"], ["z"])]
    graph = helper.make_graph(
        nodes, "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["A"]),
                     helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B"])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    sess = InferenceSession(helper.make_model(graph))
    with pytest.raises(cyconv.InputError, match="Add node"):
        sess.run(None, {"x": np.ones(3, np.float32), "y": np.ones(4, np.float32)})


def test_untyped_outputs_get_inferred_shapes():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_empty_tensor_value_info("y")])
    (out,) = InferenceSession(helper.make_model(graph)).get_outputs()
    assert (out.shape, out.type) == (["N", 3], "tensor(float)")


def test_dynamic_flatten_chain_keeps_scalars_scalar():
    """Shape -> Gather(scalar index) -> Unsqueeze -> Concat -> Reshape, as PyTorch exports
    ``x.view(x.size(0), -1)`` (MTCNN RNet/ONet): the gathered dim must stay a 0-d tensor."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    graph = helper.make_graph(
        nodes, "flatten", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor("zero", TensorProto.INT64, [], [0]),
         helper.make_tensor("axes", TensorProto.INT64, [1], [0]),
         helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1])])
    sess = InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x.reshape(4, 6))


def test_scalar_feed_stays_scalar():
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("s", TensorProto.INT64, [0])])
    sess = InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for x in (np.float32(2.0), np.array(2.0, np.float32), np.array(2.0, np.float32)[()]):
        assert sess.run(None, {"x": x})[0].tolist() == []
