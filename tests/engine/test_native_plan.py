"""Native plans (kernels/native.pyx, engine/plan.py): a graph whose every step has a native
form runs as one C loop over prepared ops with a memory-planned arena. It must give exactly
what the Python loop gives (same kernels, same partitions: bitwise), per input shape, per
thread count, from several Python threads at once, and fall back to the Python loop (and its
errors) whenever a step or a feed is not native."""
from __future__ import annotations

import threading
from importlib import resources

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import cyconv
from cyconv import zoo
from cyconv.errors import CyconvError
from cyconv.engine.plan import (ALIGN_FLOATS, assign_offsets, assign_offsets_by_plane,
                                 concats_in_place)
from cyconv.engine.profiler import profile

# zoo models whose optimised graph is all native ops, at small input sides
NATIVE_ZOO = {"lenet5": 32, "cifar_cnn": 32, "cifar_bn": 32, "squeezenet1_1": 67, "resnet18": 64,
              "resnet50": 32, "mobilenet_v2": 64, "googlenet": 67, "densenet121": 32}


def _both(model, monkeypatch, threads):
    native = cyconv.InferenceSession(model, threads=threads)
    monkeypatch.setenv("CYCONV_NATIVE", "0")
    python = cyconv.InferenceSession(model, threads=threads)
    monkeypatch.delenv("CYCONV_NATIVE")
    return native, python


def _plans(sess):
    return {k: v for k, v in sess._native_plans.items()}


def _python_steps(plan):
    """The notes of a plan's steps that run in Python (ops without a native form)."""
    return [note for note in plan.notes if "runs in Python" in note]


@pytest.mark.parametrize("threads", (1, 2))
@pytest.mark.parametrize("name", sorted(NATIVE_ZOO))
def test_zoo_native_equals_python_loop(name, threads, monkeypatch):
    side = NATIVE_ZOO[name]
    model = zoo.ZOO[name](input_size=side).SerializeToString()
    native, python = _both(model, monkeypatch, threads)
    channels = zoo.DEFAULT_INPUT[name][0]
    for batch in (1, 2, 1):
        x = np.random.default_rng(batch).standard_normal((batch, channels, side, side),
                                                         dtype=np.float32)
        (got,) = native.run(None, {"input": x})
        (want,) = python.run(None, {"input": x})
        np.testing.assert_array_equal(got, want, err_msg=f"{name} batch {batch}")
    plans = _plans(native)
    assert set(plans) == {((1, channels, side, side),), ((2, channels, side, side),)}
    assert all(p is not None for p in plans.values()), f"{name} did not run natively"
    assert not any(_python_steps(p) for p in plans.values()), f"{name} has Python steps"
    assert not any(_plans(python).values())


@pytest.mark.parametrize("file,shape", [("mtcnn_pnet.onnx", (1, 3, 120, 160)),
                                        ("mtcnn_rnet.onnx", (3, 3, 24, 24)),
                                        ("mtcnn_onet.onnx", (2, 3, 48, 48)),
                                        ("ppocr_mobile_v2_cls.onnx", (1, 3, 48, 192)),
                                        ("ppocr_mobile_v2_cls.onnx", (3, 3, 48, 192))])
def test_real_models_are_native(file, shape, monkeypatch):
    # PaddleOCR's classifier has a dynamic batch: its Shape -> Cast -> Slice -> Concat chain
    # into a Reshape is evaluated when the plan is made; SE blocks multiply by broadcasting.
    # RNet / ONet: Transpose before their FC layers, PRelu per feature after them.
    path = resources.files("cyconv") / "data" / file
    native, python = _both(path.read_bytes(), monkeypatch, 2)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    name = native.get_inputs()[0].name
    got = native.run(None, {name: x})
    want = python.run(None, {name: x})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert all(p is not None and not _python_steps(p) for p in _plans(native).values())


def _graph(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _conv_weight(name, cout, cin, k, seed=0):
    w = np.random.default_rng(seed).standard_normal((cout, cin, k, k)).astype(np.float32)
    return helper.make_tensor(name, TensorProto.FLOAT, w.shape, w.reshape(-1))


def test_non_native_step_runs_in_python_inside_the_plan(monkeypatch):
    # LRN has no native form: it runs as a Python step between the native convs, so the
    # rest of the graph stays one C loop; the answer is the Python loop's, bitwise
    f = helper.make_tensor_value_info
    model = _graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("LRN", ["c"], ["n"], size=3),
                    helper.make_node("Conv", ["n", "w2"], ["y"])],
                   [f("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                   [f("y", TensorProto.FLOAT, None)],
                   [_conv_weight("w", 4, 3, 3), _conv_weight("w2", 5, 4, 1, seed=1)])
    native, python = _both(model, monkeypatch, 2)
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8), dtype=np.float32)
        (y,) = native.run(None, {"x": x})
        np.testing.assert_array_equal(y, python.run(None, {"x": x})[0])
        np.testing.assert_allclose(y, ref.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)
    plans = list(_plans(native).values())
    assert len(plans) == 2 and all(p is not None for p in plans)
    assert ["LRN" in note for note in _python_steps(plans[0])] == [True]
    assert profile(native, {"x": x}, repeats=1).executor == "native"


def test_python_steps_with_several_outputs_and_concat_in_place(monkeypatch):
    # Split (two outputs) and Resize run in Python; their outputs feed native convs whose
    # outputs a Concat holds in place
    f = helper.make_tensor_value_info
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    model = _graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Split", ["c"], ["s0", "s1"], axis=1, num_outputs=2),
                    helper.make_node("Conv", ["s0", "wa"], ["a"]),
                    helper.make_node("Conv", ["s1", "wb"], ["b"]),
                    helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
                    helper.make_node("Resize", ["ab", "", "scales"], ["y"], mode="nearest")],
                   [f("x", TensorProto.FLOAT, [1, 3, 6, 6])], [f("y", TensorProto.FLOAT, None)],
                   [_conv_weight("w", 4, 3, 3), _conv_weight("wa", 3, 2, 1, seed=1),
                    _conv_weight("wb", 5, 2, 1, seed=2), scales])
    model = onnx.load_from_string(model)
    model.opset_import[0].version = 18
    model = model.SerializeToString()
    native, python = _both(model, monkeypatch, 2)
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6), dtype=np.float32)
    (y,) = native.run(None, {"x": x})
    np.testing.assert_array_equal(y, python.run(None, {"x": x})[0])
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, want[0], rtol=1e-4, atol=1e-4)
    (plan,) = _plans(native).values()
    assert plan is not None
    assert len(_python_steps(plan)) == 2
    assert any("Concat" in note and "no copy" in note for note in plan.notes)


def _resize_by_fed_scales():
    # Resize's output shape depends on the values of a float32 feed: no plan can hold it
    f = helper.make_tensor_value_info
    model = _graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest")],
                   [f("x", TensorProto.FLOAT, [1, 3, 4, 4]), f("scales", TensorProto.FLOAT, [4])],
                   [f("y", TensorProto.FLOAT, None)], [_conv_weight("w", 2, 3, 3)])
    return model


def test_python_step_whose_shape_follows_values_leaves_the_plan(monkeypatch):
    model = _resize_by_fed_scales()
    native, python = _both(model, monkeypatch, 2)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4), dtype=np.float32)
    for scales in ([1, 1, 2, 2], [1, 1, 3, 1], [1, 1, 2, 2]):
        feed = {"x": x, "scales": np.array(scales, np.float32)}
        (y,) = native.run(None, feed)
        assert y.shape == (1, 2, 4 * scales[2], 4 * scales[3])
        np.testing.assert_array_equal(y, python.run(None, feed)[0])
    # the plan made with the first feed could not hold the changed shape: dropped
    assert list(_plans(native).values()) == [None]


def test_python_step_errors_are_the_python_loops(monkeypatch):
    # an error a Python step raises inside the plan is reported as the Python loop does
    model = _resize_by_fed_scales()
    native, python = _both(model, monkeypatch, 2)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4), dtype=np.float32)
    native.run(None, {"x": x, "scales": np.array([1, 1, 1, 1], np.float32)})
    bad = {"x": x, "scales": np.array([1, 1, -1, 1], np.float32)}
    with pytest.raises(CyconvError) as from_python:
        python.run(None, bad)
    with pytest.raises(type(from_python.value)) as from_native:
        native.run(None, bad)
    assert str(from_native.value) == str(from_python.value)


@pytest.mark.parametrize("name,channels", [("lenet5", 1), ("cifar_cnn", 3), ("cifar_bn", 3)])
def test_unoptimized_graph_runs_natively_too(name, channels, monkeypatch):
    # optimize=False: separate Tanh / Relu, BatchNormalization and Dropout (a view) nodes
    model = zoo.ZOO[name](input_size=32).SerializeToString()
    native = cyconv.InferenceSession(model, threads=2, optimize=False)
    monkeypatch.setenv("CYCONV_NATIVE", "0")
    python = cyconv.InferenceSession(model, threads=2, optimize=False)
    x = np.random.default_rng(0).standard_normal((1, channels, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(native.run(None, {"input": x})[0],
                                  python.run(None, {"input": x})[0])
    assert all(p is not None and not _python_steps(p) for p in _plans(native).values())


@pytest.mark.parametrize("op,opset,axes,keepdims,native", [
    ("ReduceMean", 18, [-1, -2], 1, True),     # PyTorch's dynamo export of adaptive_avg_pool2d
    ("ReduceMean", 13, [2, 3], 0, True),       # axes an attribute before opset 18
    ("ReduceMax", 18, [1, 2, 3], 0, False),    # numpy's max (keeps a NaN): a Python step
    ("ReduceMean", 18, [1], 1, False),         # not the trailing axes: a Python step
    ("ReduceMean", 18, None, 0, True),         # every axis
])
def test_reductions_over_trailing_axes_are_native(op, opset, axes, keepdims, native,
                                                  monkeypatch):
    # Conv -> ReduceMean(axes), the head of a dynamo-exported classifier: the reduction runs
    # natively, or (other axes, ReduceMax) as a Python step inside the plan.
    rng = np.random.default_rng(0)
    f = helper.make_tensor_value_info
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3],
                                rng.standard_normal(216).astype(np.float32))]
    reads = ["c"]
    attrs = {"keepdims": keepdims}
    if axes is not None and opset >= 18:
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes))
        reads.append("axes")
    elif axes is not None:
        attrs["axes"] = axes
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(op, reads, ["r"], **attrs)]
    g = helper.make_graph(nodes, "g", [f("x", TensorProto.FLOAT, [None, 3, 7, 9])],
                          [f("r", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    blob = model.SerializeToString()
    native_sess, python_sess = _both(blob, monkeypatch, 2)
    ref = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 7, 9), dtype=np.float32)
        (got,) = native_sess.run(None, {"x": x})
        (want,) = ref.run(None, {"x": x})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got, python_sess.run(None, {"x": x})[0])
    for plan in _plans(native_sess).values():
        assert plan is not None
        assert bool(_python_steps(plan)) == (not native)


def test_outputs_that_are_views_feeds_or_reused():
    # y1 = Flatten(conv(x)) (an alias of an intermediate), y2 = x itself, y3 = conv(x) also
    # read by the Flatten: every output is a fresh array, equal to the Python loop's
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3],
                           np.random.default_rng(0).standard_normal(108).astype(np.float32))
    f = helper.make_tensor_value_info
    model = _graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Flatten", ["c"], ["y1"]),
         helper.make_node("Identity", ["x"], ["y2"])],
        [f("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [f("y1", TensorProto.FLOAT, None), f("y2", TensorProto.FLOAT, None),
         f("c", TensorProto.FLOAT, None)], [w])
    sess = cyconv.InferenceSession(model, threads=2)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8), dtype=np.float32)
    y1, y2, c = sess.run(None, {"x": x})
    assert all(p is not None for p in _plans(sess).values())
    np.testing.assert_array_equal(y1, c.reshape(1, -1))
    np.testing.assert_array_equal(y2, x)
    assert not np.shares_memory(y2, x) and not np.shares_memory(y1, c)
    y1b, _, _ = sess.run(None, {"x": x})
    assert not np.shares_memory(y1, y1b)       # a new array each run, the old one kept
    np.testing.assert_array_equal(y1, y1b)
    (only,) = sess.run(["c"], {"x": x})
    np.testing.assert_array_equal(only, c)


def test_bad_feed_still_raises_the_python_loops_error():
    sess = cyconv.InferenceSession(zoo.cifar_cnn(input_size=32), threads=2)
    with pytest.raises(cyconv.InputError):
        sess.run(None, {"input": np.zeros((1, 3, 30, 30), np.float32)})
    (y,) = sess.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert y.shape == (1, 10)


def _with_lrn(model):
    """``model`` with an LRN (no native form: a Python step) after its first MaxPool."""
    graph = model.graph
    k = next(i for i, n in enumerate(graph.node) if n.op_type == "MaxPool")
    out = graph.node[k].output[0]
    graph.node[k].output[0] = out + "_pooled"
    graph.node.insert(k + 1, helper.make_node("LRN", [out + "_pooled"], [out], size=5))
    return model


@pytest.mark.parametrize("python_step", [False, True])
def test_threads_share_a_session(python_step, monkeypatch):
    # one thread runs the plan (a Python step takes the GIL inside it), the others the
    # Python loop meanwhile: every answer is the single-threaded one, bitwise (so without
    # the banded plan, whose results differ by float rounding: test_bands.py)
    monkeypatch.setenv("CYCONV_BANDS", "0")
    model = zoo.squeezenet1_1(input_size=67)
    sess = cyconv.InferenceSession(_with_lrn(model) if python_step else model, threads=2)
    xs = [np.random.default_rng(i).standard_normal((1, 3, 67, 67), dtype=np.float32)
          for i in range(4)]
    want = [sess.run(None, {"input": x})[0] for x in xs]
    got = [None] * 16

    def work(i):
        got[i] = sess.run(None, {"input": xs[i % 4]})[0]
    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, y in enumerate(got):
        np.testing.assert_array_equal(y, want[i % 4])
    (plan,) = _plans(sess).values()
    assert len(_python_steps(plan)) == int(python_step)


def test_assign_offsets_keeps_live_values_apart():
    rng = np.random.default_rng(0)
    sizes, life = {}, {}
    for v in range(60):
        first = int(rng.integers(0, 40))
        sizes[v] = int(rng.integers(1, 5000))
        life[v] = (first, first + int(rng.integers(0, 6)))
    offsets, total = assign_offsets(sizes, life)
    for a in sizes:
        assert offsets[a] % ALIGN_FLOATS == 0 and offsets[a] + sizes[a] <= total
        for b in sizes:
            if a < b and life[a][0] <= life[b][1] and life[b][0] <= life[a][1]:
                assert (offsets[a] + sizes[a] <= offsets[b]
                        or offsets[b] + sizes[b] <= offsets[a]), (a, b)
    # far less than one buffer per value
    assert total < 0.5 * sum(sizes.values())


def test_assign_offsets_chain_reuses_memory():
    # a chain x1 -> x2 -> x3 ...: only neighbours are alive together
    sizes = {v: 1000 for v in range(10)}
    life = {v: (v, v + 1) for v in range(10)}
    _, total = assign_offsets(sizes, life)
    assert total <= 2 * 1008


def test_assign_offsets_by_plane_reuses_memory_within_a_plane_only():
    # a value reuses only memory of values of its own plane, at a multiple of that plane, so
    # the thread that writes position p of a plane writes the same bytes whatever the value
    rng = np.random.default_rng(2)
    planes_of = [0, 169, 729, 3136]
    sizes, life, planes = {}, {}, {}
    for v in range(80):
        first = int(rng.integers(0, 40))
        planes[v] = planes_of[int(rng.integers(0, 4))]
        channels = int(rng.integers(1, 9))
        sizes[v] = channels * planes[v] if planes[v] else int(rng.integers(1, 5000))
        life[v] = (first, first + int(rng.integers(0, 6)))
    offsets, total = assign_offsets_by_plane(sizes, life, planes)

    def apart(a, b):
        return offsets[a] + sizes[a] <= offsets[b] or offsets[b] + sizes[b] <= offsets[a]

    for a in sizes:
        assert offsets[a] + sizes[a] <= total
        if planes[a] == 0:
            assert offsets[a] % ALIGN_FLOATS == 0
        for b in sizes:
            if a >= b:
                continue
            if planes[a] != planes[b]:
                assert apart(a, b), (a, b)
            elif life[a][0] <= life[b][1] and life[b][0] <= life[a][1]:
                assert apart(a, b), (a, b)
            if planes[a] == planes[b] and planes[a]:
                assert (offsets[a] - offsets[b]) % planes[a] == 0, (a, b)
    # each group still reuses: well under a buffer per value
    assert total < 0.6 * sum(sizes.values())


def test_plans_reuse_buffers_by_plane(monkeypatch):
    # x (32x32) -> a -> b -> MaxPool -> c (16x16) -> d -> y: in one shared arena c and d
    # would take a's dead buffer; by plane they get their own (two 4-channel 16x16 planes
    # more), and the results are bitwise the same either way
    from cyconv.engine import session
    rng = np.random.default_rng(3)
    f = helper.make_tensor_value_info
    weights = [onnx.numpy_helper.from_array(
        rng.standard_normal((4, 4, 1, 1)).astype(np.float32), f"w{i}") for i in range(4)]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"]),
             helper.make_node("Conv", ["a", "w1"], ["b"]),
             helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["c", "w2"], ["d"]),
             helper.make_node("Conv", ["d", "w3"], ["y"])]
    model = _graph(nodes, [f("x", TensorProto.FLOAT, [1, 4, 32, 32])],
                   [f("y", TensorProto.FLOAT, [1, 4, 16, 16])], weights)
    x = rng.standard_normal((1, 4, 32, 32)).astype(np.float32)
    (want,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    monkeypatch.setattr(session, "PRIVATE_ARENA_BYTES", 0)

    def run():
        sess = cyconv.InferenceSession(model, optimize=False, threads=2)
        result = profile(sess, {"x": x}, repeats=1)
        assert result.executor == "native"
        y = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
        return result.peak_activation_bytes, y

    by_plane, y_by_plane = run()
    monkeypatch.setattr(session, "PLANE_ARENA_BYTES", 0)
    shared, y_shared = run()
    assert by_plane - shared == 2 * 4 * 16 * 16 * 4
    np.testing.assert_array_equal(y_by_plane, y_shared)


def test_int64_and_repeated_outputs():
    # Shape(x) as a graph output stays int64 (the Python loop runs it); an output listed
    # twice comes back twice, both computed
    f = helper.make_tensor_value_info
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 1, 1], [2.0, -1.0])
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    model = _graph([conv, helper.make_node("Shape", ["y"], ["s"])],
                   [f("x", TensorProto.FLOAT, [1, 1, 3, 3])],
                   [f("y", TensorProto.FLOAT, None), f("s", TensorProto.INT64, None)], [w])
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    y, s = cyconv.InferenceSession(model, threads=2).run(None, {"x": x})
    assert s.dtype == np.int64 and list(s) == [1, 2, 3, 3]
    np.testing.assert_array_equal(y[0, 1], -x[0, 0])
    g = helper.make_graph([conv], "g", [f("x", TensorProto.FLOAT, [1, 1, 3, 3])],
                          [f("y", TensorProto.FLOAT, None)], [w])
    sess = cyconv.InferenceSession(helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17)]), threads=2)
    a, b = sess.run(["y", "y"], {"x": x})
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0, 0], 2 * x[0, 0])


@pytest.mark.parametrize("shape,perm", [((2, 3, 4, 5), (0, 2, 3, 1)), ((2, 3, 4, 5), (3, 1, 0, 2)),
                                        ((7, 9), (1, 0)), ((2, 3, 1, 4, 2), (4, 0, 3, 2, 1)),
                                        ((5,), (0,))])
def test_transpose_step(shape, perm):
    f = helper.make_tensor_value_info
    model = _graph([helper.make_node("Transpose", ["x"], ["t"], perm=list(perm)),
                    helper.make_node("Relu", ["t"], ["y"])],
                   [f("x", TensorProto.FLOAT, list(shape))], [f("y", TensorProto.FLOAT, None)])
    sess = cyconv.InferenceSession(model, threads=2)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    (y,) = sess.run(None, {"x": x})
    assert all(p is not None for p in _plans(sess).values())
    np.testing.assert_array_equal(y, np.maximum(x.transpose(perm), 0))


def test_elementwise_steps_run_in_place(monkeypatch):
    # optimize=False keeps Relu, Sigmoid, BatchNormalization and Add as steps: each writes
    # over its input (dead after it), so the arena holds one tensor, not four
    f = helper.make_tensor_value_info
    rng = np.random.default_rng(0)
    t = lambda name, shape: helper.make_tensor(name, TensorProto.FLOAT, shape,  # noqa: E731
                                               rng.random(int(np.prod(shape))).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Sigmoid", ["n"], ["g"]),
             helper.make_node("Add", ["g", "k"], ["a"]),
             helper.make_node("Conv", ["a", "w2"], ["y"])]
    model = _graph(nodes, [f("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                   [f("y", TensorProto.FLOAT, None)],
                   [t("w", [8, 3, 3, 3]), t("s", [8]), t("b", [8]), t("m", [8]), t("v", [8]),
                    t("k", [1, 8, 1, 1]), t("w2", [4, 8, 1, 1])])
    native = cyconv.InferenceSession(model, threads=2, optimize=False)
    monkeypatch.setenv("CYCONV_NATIVE", "0")
    python = cyconv.InferenceSession(model, threads=2, optimize=False)
    x = rng.standard_normal((1, 3, 16, 16), dtype=np.float32)
    np.testing.assert_array_equal(native.run(None, {"x": x})[0], python.run(None, {"x": x})[0])
    (plan,) = _plans(native).values()
    assert plan is not None and plan.arena_bytes == 8 * 16 * 16 * 4


# ---- concats written in place (engine/plan.py concats_in_place) ---------------------------

class _Concat:
    """A stand-in for a native ConcatOp: its inputs' floats when laid end to end."""
    def __init__(self, *parts):
        self.parts = parts


def test_concats_in_place_nests_dense_blocks():
    # DenseNet: c1 = [x, y1], c2 = [x, y1, y2], c3 = [c2, y3]: one buffer, c3's, holds all
    sizes = {"x": 64, "y1": 32, "y2": 32, "y3": 32, "c1": 96, "c2": 128, "c3": 160}
    steps = [(None, [], ["x"]), (None, ["x"], ["y1"]),
             (_Concat(64, 32), ["x", "y1"], ["c1"]), (None, ["c1"], ["y2"]),
             (_Concat(64, 32, 32), ["x", "y1", "y2"], ["c2"]), (None, ["c2"], ["y3"]),
             (_Concat(128, 32), ["c2", "y3"], ["c3"])]
    place, elided = concats_in_place(steps, sizes, lambda v: True)
    assert elided == {2, 4, 6}
    assert place == {"x": ("c3", 0), "y1": ("c3", 64), "y2": ("c3", 96), "y3": ("c3", 128),
                     "c1": ("c3", 0), "c2": ("c3", 0)}


def test_concats_in_place_keeps_written_values_apart():
    # concat(x, y) then concat(x, z): y and z would share the floats after x, so the second
    # stays a copy; so do a concat of one value twice and one of a value that may not nest
    sizes = {"x": 8, "y": 4, "z": 4, "a": 12, "b": 12, "d": 16, "e": 12}
    steps = [(_Concat(8, 4), ["x", "y"], ["a"]), (_Concat(8, 4), ["x", "z"], ["b"]),
             (_Concat(8, 8), ["x", "x"], ["d"]), (_Concat(8, 4), ["z", "x"], ["e"])]
    place, elided = concats_in_place(steps, sizes, lambda v: v != "e")
    assert elided == {0}
    assert place == {"x": ("a", 0), "y": ("a", 8)}
    # an op without parts (a copy along another axis, or batch > 1) is never elided
    place, elided = concats_in_place([(_Concat(), ["x"], ["a"]), (object(), ["x", "y"], ["a"])],
                                     sizes, lambda v: True)
    assert elided == set() and place == {}


def _concat_model(nodes, outputs, channels=4):
    f = helper.make_tensor_value_info
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor(f"w{i}", TensorProto.FLOAT, [channels, channels, 3, 3],
                                rng.standard_normal(channels * channels * 9).astype(np.float32))
             for i in range(4)]
    return _graph(nodes, [f("x", TensorProto.FLOAT, [None, channels, 6, 6])],
                  [f(o, TensorProto.FLOAT, None) for o in outputs], inits)


CONCAT_GRAPHS = {
    # a fire module: two convs of one input, concatenated, then read by a conv
    "fire": ([helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1] * 4),
              helper.make_node("Conv", ["x", "w1"], ["b"], pads=[1] * 4),
              helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
              helper.make_node("Relu", ["c"], ["y"])], ["y"]),
    # a dense block: each concat the prefix of the next; a part read again after
    "dense": ([helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1] * 4),
               helper.make_node("Conv", ["a", "w1"], ["b"], pads=[1] * 4),
               helper.make_node("Concat", ["a", "b"], ["c1"], axis=1),
               helper.make_node("Conv", ["b", "w2"], ["d"], pads=[1] * 4),
               helper.make_node("Concat", ["a", "b", "d"], ["c2"], axis=1),
               helper.make_node("Concat", ["c2", "c1"], ["c3"], axis=1),
               helper.make_node("Sigmoid", ["c3"], ["s"]),
               helper.make_node("Conv", ["b", "w3"], ["e"], pads=[1] * 4),
               helper.make_node("Mul", ["e", "b"], ["y"])], ["s", "y"]),
    # copies: a part that is a graph output (c), a concat of one value twice (rr), a feed
    # and the concat itself an output (y); in place: q, whose part r an element-wise op
    # would otherwise write over d
    "edges": ([helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1] * 4),
               helper.make_node("Conv", ["x", "w1"], ["b"], pads=[1] * 4),
               helper.make_node("Conv", ["x", "w2"], ["d"], pads=[1] * 4),
               helper.make_node("Concat", ["a", "b", "d"], ["c"], axis=1),
               helper.make_node("Relu", ["d"], ["r"]),
               helper.make_node("Concat", ["r", "b"], ["q"], axis=1),
               helper.make_node("Sigmoid", ["q"], ["z"]),
               helper.make_node("Concat", ["r", "r"], ["rr"], axis=1),
               helper.make_node("Concat", ["c", "rr", "x"], ["y"], axis=1)],
              ["a", "c", "y", "z"]),
}


@pytest.mark.parametrize("optimize", (True, False))
@pytest.mark.parametrize("name", sorted(CONCAT_GRAPHS))
def test_concats_in_place_equal_the_python_loop(name, optimize, monkeypatch):
    nodes, outputs = CONCAT_GRAPHS[name]
    model = _concat_model(nodes, outputs)
    native = cyconv.InferenceSession(model, threads=2, optimize=optimize)
    monkeypatch.setenv("CYCONV_NATIVE", "0")
    python = cyconv.InferenceSession(model, threads=2, optimize=optimize)
    for batch in (1, 3, 1):
        x = np.random.default_rng(batch).standard_normal((batch, 4, 6, 6), dtype=np.float32)
        got, want = native.run(None, {"x": x}), python.run(None, {"x": x})
        for g, w, o in zip(got, want, outputs):
            np.testing.assert_array_equal(g, w, err_msg=f"{name} {o} batch {batch}")
    plans = _plans(native)
    one = plans[((1, 4, 6, 6),)]
    three = plans[((3, 4, 6, 6),)]
    assert one is not None and three is not None
    # at batch 1 some concat runs no copy; at batch 3 (not one block) every one copies
    assert len(one.nodes) < len(three.nodes)
    assert one.notes and all("runs no copy" in note for note in one.notes) and not three.notes
    # cyconv profile lists them with the fusions
    x = np.zeros((1, 4, 6, 6), np.float32)
    assert set(one.notes) <= set(profile(native, {"x": x}, repeats=1).fusions)


def test_profile_says_why_a_plan_is_not_native(monkeypatch):
    # an error while planning falls back to the Python loop (which reports bad feeds); the
    # profile names the error, so a planning bug shows as more than a slower run
    model = zoo.ZOO["lenet5"]().SerializeToString()
    channels, side = zoo.DEFAULT_INPUT["lenet5"]
    x = np.random.default_rng(0).standard_normal((1, channels, side, side), dtype=np.float32)
    sess = cyconv.InferenceSession(model, threads=1)
    assert profile(sess, {"input": x}, repeats=1).executor == "native"

    def broken(*args, **kwargs):
        raise TypeError("planner broke")

    monkeypatch.setattr("cyconv.engine.session.assign_offsets_by_plane", broken)
    sess = cyconv.InferenceSession(model, threads=1)
    got = profile(sess, {"input": x}, repeats=1)
    assert got.executor == "python"
    assert got.executor_note == "TypeError: planner broke"
    monkeypatch.undo()
    want = cyconv.InferenceSession(model, threads=1).run(None, {"input": x})[0]
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], want, rtol=1e-6, atol=1e-6)


def _conv_chain(side):
    # x -> Conv -> a -> Conv -> b -> Conv -> c -> Conv -> y (1x1, 4 channels): only
    # neighbours are alive together, so a and c may share a buffer
    rng = np.random.default_rng(0)
    names = ["x", "a", "b", "c", "y"]
    nodes = [helper.make_node("Conv", [u, f"w{i}"], [v])
             for i, (u, v) in enumerate(zip(names, names[1:]))]
    weights = [onnx.numpy_helper.from_array(
        rng.standard_normal((4, 4, 1, 1)).astype(np.float32), f"w{i}") for i in range(4)]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, side, side])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("side, private", [(16, True), (256, False)])
def test_small_plans_give_every_value_its_own_buffer(side, private, monkeypatch):
    # Activations that fit PRIVATE_ARENA_BYTES (3 x 4 KB here) get a buffer each, so every
    # run writes each byte from the same thread; 3 x 1 MiB reuse dead values' buffers.
    from cyconv.engine import session
    model = _conv_chain(side)
    x = np.random.default_rng(1).standard_normal((1, 4, side, side)).astype(np.float32)
    (want,) = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})

    def arena_bytes():
        sess = cyconv.InferenceSession(model, optimize=False, threads=2)
        result = profile(sess, {"x": x}, repeats=1)
        assert result.executor == "native"
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-4)
        return result.peak_activation_bytes

    value = 4 * 4 * side * side
    limit = session.PRIVATE_ARENA_BYTES
    assert (3 * value <= limit) is private
    default = arena_bytes()
    monkeypatch.setattr(session, "PRIVATE_ARENA_BYTES", 0)
    reused = arena_bytes()
    # a and c share when reused: the private plan holds one value more
    assert default - reused == (value if private else 0)
