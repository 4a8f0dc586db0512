"""The session's cache of activation blocks (cyconv/kernels/buffers.pyx): a run reuses the
blocks of >= 1 MiB that the previous run freed; results, the caller's memory handler and the
arrays handed out are unaffected."""
import gc
import threading

import numpy as np
import onnx
import pytest
from numpy._core.multiarray import get_handler_name
from onnx import TensorProto, helper, numpy_helper

import cyconv
from cyconv.kernels import buffers


@pytest.fixture(autouse=True)
def python_loop(monkeypatch):
    # The cache serves the Python loop; a native plan keeps its values in its arena instead.
    monkeypatch.setenv("CYCONV_NATIVE", "0")


def big_model():
    # x (1, 4, 1024, 1024) -> Relu -> Conv 1x1 (4 -> 8 channels: a 32 MiB tensor) -> Relu
    # -> ReduceSum over channels, so a 32 MiB intermediate dies inside every run
    w = np.random.default_rng(0).standard_normal((8, 4, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["c2"]),
             helper.make_node("ReduceSum", ["c2", "axes"], ["y"], keepdims=1)]
    graph = helper.make_graph(
        nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1024, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1024, 1024])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1]), "axes")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_big_blocks_are_reused_and_results_unchanged():
    model, w = big_model()
    x = np.random.default_rng(1).standard_normal((1, 4, 1024, 1024)).astype(np.float32)
    want = np.maximum(np.einsum("mc,nchw->nmhw", w[:, :, 0, 0], np.maximum(x, 0)), 0)
    want = want.sum(axis=1, keepdims=True)
    sess = cyconv.InferenceSession(model, threads=2)
    first = sess.run(None, {"x": x})[0]
    held = buffers.cached_bytes(sess._buffers)
    assert held >= buffers.MIN_CACHED_BYTES          # the dead 32 MiB conv output is kept
    second = sess.run(None, {"x": x})[0]
    assert buffers.cached_bytes(sess._buffers) == held   # reused, not grown
    np.testing.assert_allclose(first, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(first, second)


def test_caller_handler_restored_and_outputs_outlive_the_session():
    model, _ = big_model()
    x = np.ones((1, 4, 1024, 1024), np.float32)
    sess = cyconv.InferenceSession(model, threads=1)
    before = get_handler_name()
    y = sess.run(None, {"x": x})[0]
    assert get_handler_name() == before
    expect = y.copy()
    del sess
    gc.collect()
    np.testing.assert_array_equal(y, expect)         # its memory is not the cache's to free
    big = np.empty(40 << 20, np.uint8)               # plain numpy afterwards: default handler
    assert get_handler_name(big) == before


def test_threads_sharing_a_session():
    model, _ = big_model()
    sess = cyconv.InferenceSession(model, threads=1)
    xs = [np.full((1, 4, 1024, 1024), i, np.float32) for i in range(3)]
    want = [sess.run(None, {"x": x})[0] for x in xs]
    got = [None] * 3

    def work(i):
        for _ in range(2):
            got[i] = sess.run(None, {"x": xs[i]})[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w_ in zip(got, want):
        np.testing.assert_array_equal(g, w_)


def test_cache_is_bounded():
    handler = buffers.new_handler(100 << 20)         # room for two 40 MiB blocks, not three
    outer = buffers.set_handler(handler)
    try:
        arrays = [np.empty(40 << 20, np.uint8) for _ in range(3)]
        del arrays
        gc.collect()
    finally:
        buffers.set_handler(outer)
    assert buffers.cached_bytes(handler) == 80 << 20


def with_handler(handler, fn):
    outer = buffers.set_handler(handler)
    try:
        return fn()
    finally:
        buffers.set_handler(outer)


def test_a_smaller_request_reuses_a_block_up_to_twice_its_size():
    handler = buffers.new_handler(1 << 30)

    def work():
        a = np.empty(3 << 20, np.uint8)
        del a                                        # cached: 3 MiB
        b = np.empty(2 << 20, np.uint8)              # fits (3 <= 2 x 2): reused
        held_b = buffers.cached_bytes(handler)
        c = np.empty(1 << 20, np.uint8)              # 3 MiB block taken; nothing else fits
        return held_b, b, c

    held_b, b, c = with_handler(handler, work)
    assert held_b == 0
    assert buffers.cached_bytes(handler) == 0
    del b, c
    gc.collect()
    # 3 MiB back, plus a fresh 1 MiB (capacity rounded to 64 bytes)
    assert buffers.cached_bytes(handler) == (3 << 20) + (1 << 20)


def test_blocks_are_64_byte_aligned_and_realloc_keeps_contents():
    handler = buffers.new_handler(1 << 30)

    def work():
        out = []
        for n in (1, 100, 5000, (1 << 20) + 3):
            a = np.arange(n, dtype=np.uint8)
            assert a.ctypes.data % 64 == 0
            out.append(a)
        grown = np.arange(300000, dtype=np.float32)
        grown.resize(700000, refcheck=False)         # numpy reallocs the data
        shrunk = np.arange(700000, dtype=np.float32)
        shrunk.resize(1000, refcheck=False)
        return out, grown, shrunk

    out, grown, shrunk = with_handler(handler, work)
    np.testing.assert_array_equal(grown[:300000], np.arange(300000, dtype=np.float32))
    assert not grown[300000:].any()                  # numpy zero-fills what resize adds
    np.testing.assert_array_equal(shrunk, np.arange(1000, dtype=np.float32))
