"""Row bands (engine/bands.py): a batch-1 image network run as one band of rows per thread.

A banded plan must give what the whole-image plan and the Python loop give, within float
rounding (a band's own shape may take another Winograd tile or GEMM blocking), for every
window geometry a band meets at its edges (strides, pads, dilations, ceil mode, average
pools' divisors), for odd heights and any band count, whether one thread or several run the
bands; and it must join the bands back wherever an op needs the whole image."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv
from cyconv import zoo
from cyconv.engine import bands
from cyconv.engine.profiler import profile
from cyconv.kernels.native import RowGatherOp

RNG = np.random.default_rng(0)


def _model(nodes, x_shape, y_shape, inits, opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _weights(shape, seed):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.3).astype(np.float32)


def _plans(model, x, threads):
    """(whole-image plan, banded plan or None, Python loop's outputs) for feed x."""
    sess = cyconv.InferenceSession(model, threads=threads)
    want = sess.run(None, {"x": x})           # first runs: the whole-image plan
    feeds = sess._check_feed({"x": x})
    return sess, sess._build_native_steps(feeds), \
        sess._build_native_steps(feeds, bands=True), want


def _check(model, x, threads=2, banded=True, rtol=1e-5, atol=1e-5):
    sess, whole, band_plan, want = _plans(model, x, threads)
    assert whole is not None
    if not banded:
        assert band_plan is None
        return None
    assert band_plan is not None and band_plan.section_streams == threads
    got = band_plan.run([x])
    python = cyconv.InferenceSession(model, threads=threads, optimize=True)
    python._native = False
    ref = python.run(None, {"x": x})
    for g, w, r in zip(got, want, ref):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
        np.testing.assert_allclose(w, r, rtol=rtol, atol=atol)
    return band_plan


# ---- the gather -------------------------------------------------------------------------------

def test_row_gather_assembles_rows_from_bands():
    C, H, W = 5, 23, 7
    image = RNG.standard_normal((1, C, H, W)).astype(np.float32)
    cuts = [0, 6, 13, 23]
    srcs = [np.ascontiguousarray(image[:, :, a:b]) for a, b in zip(cuts, cuts[1:])]
    for a, b in [(0, 23), (5, 14), (12, 13), (0, 6), (6, 13), (4, 20)]:
        used = [(cuts[i], cuts[i + 1] - cuts[i]) for i in range(3)
                if cuts[i] < b and cuts[i + 1] > a]
        arrays = [srcs[i] for i in range(3) if cuts[i] < b and cuts[i + 1] > a]
        op = RowGatherOp(C, W, a, b - a, used)
        assert op.out_shapes == ((1, C, b - a, W),)
        plan = cyconv.kernels.native.NativePlan(
            [(op, list(range(len(arrays))), [len(arrays)])], len(arrays) + 1,
            list(range(len(arrays))), [(len(arrays), (1, C, b - a, W), False)], [], [], 0)
        (got,) = plan.run(arrays)
        np.testing.assert_array_equal(got, image[:, :, a:b])


def test_row_gather_refuses_rows_no_source_holds():
    with pytest.raises(ValueError, match="not all in"):
        RowGatherOp(2, 3, 0, 10, [(0, 4), (6, 4)])
    with pytest.raises(ValueError, match="order"):
        RowGatherOp(2, 3, 0, 8, [(4, 4), (0, 4)])


def test_band_rows_cover_the_image_evenly():
    for H in (4, 5, 13, 111):
        for T in (2, 3, 4):
            rows = bands.band_rows(H, T)
            assert rows[0][0] == 0 and rows[-1][1] == H
            assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
            assert max(hi - lo for lo, hi in rows) - min(hi - lo for lo, hi in rows) <= 1


# ---- window geometry at the bands' edges ------------------------------------------------------

CONV_CASES = [
    # kernel, strides, pads (t, l, b, r), dilations, group
    (3, 1, (1, 1, 1, 1), 1, 1),
    (3, 2, (1, 1, 1, 1), 1, 1),
    (3, 1, (0, 0, 0, 0), 1, 1),
    (5, 1, (2, 1, 0, 2), 1, 1),
    (3, 1, (2, 2, 2, 2), 2, 1),
    (1, 1, (0, 0, 0, 0), 1, 1),
    (3, 1, (1, 1, 1, 1), 1, 8),
    (7, 2, (3, 3, 3, 3), 1, 1),
    (3, 2, (0, 1, 1, 0), 1, 2),
]


@pytest.mark.parametrize("kernel,stride,pads,dilation,group", CONV_CASES)
@pytest.mark.parametrize("H", (19, 32))
def test_conv_chain_in_bands(kernel, stride, pads, dilation, group, H):
    C, M = 8, 16
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[kernel] * 2,
                              strides=[stride] * 2, pads=list(pads),
                              dilations=[dilation] * 2, group=group),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1])]
    inits = {"w1": _weights((M, C // group, kernel, kernel), 1), "b1": _weights((M,), 2),
             "w2": _weights((M, M, 3, 3), 3)}
    x = RNG.standard_normal((1, C, H, 21)).astype(np.float32)
    _check(_model(nodes, [1, C, H, 21], None, inits), x)


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2], pads=[1, 0, 2, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         ceil_mode=1, count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
])
@pytest.mark.parametrize("H", (27, 30))
def test_pools_in_bands(op, attrs, H):
    C = 6
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c1"], ["p"], **attrs),
             helper.make_node("Conv", ["p", "w2"], ["y"], kernel_shape=[1, 1])]
    inits = {"w1": _weights((C, 3, 3, 3), 4), "w2": _weights((C, C, 1, 1), 5)}
    x = RNG.standard_normal((1, 3, H, 17)).astype(np.float32)
    _check(_model(nodes, [1, 3, H, 17], None, inits), x)


@pytest.mark.parametrize("threads", (2, 3, 4))
def test_fire_modules_and_residuals_in_bands(threads):
    """Concats of channels (written in place per band), a residual Add fused into its conv,
    per-channel constants, and a graph output read whole (the bands joined)."""
    C = 16
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "ws"], ["s"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["s", "we1"], ["e1"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["s", "we3"], ["e3"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["e1", "e3"], ["cat"], axis=1),
             helper.make_node("Mul", ["cat", "scale"], ["m"]),
             helper.make_node("Conv", ["m", "wr"], ["r"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["r", "m"], ["sum"]),
             helper.make_node("Relu", ["sum"], ["y"])]
    inits = {"w0": _weights((C, 3, 3, 3), 6), "ws": _weights((8, C, 1, 1), 7),
             "we1": _weights((C, 8, 1, 1), 8), "we3": _weights((C, 8, 3, 3), 9),
             "scale": _weights((1, 2 * C, 1, 1), 10), "wr": _weights((2 * C, 2 * C, 3, 3), 11)}
    x = RNG.standard_normal((1, 3, 61, 40)).astype(np.float32)
    plan = _check(_model(nodes, [1, 3, 61, 40], None, inits), x, threads=threads)
    assert any("no copy" in note for note in plan.notes)


def test_ops_that_need_rows_of_other_bands_join_them():
    """A constant varying along H, a Concat along H and a Flatten + Gemm each read the
    image whole: the steps before them band, they run on the joined image."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "ramp"], ["a"]),
             helper.make_node("Concat", ["a", "c1"], ["h"], axis=2),
             helper.make_node("Flatten", ["h"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    inits = {"w1": _weights((4, 3, 3, 3), 12), "w2": _weights((4, 4, 3, 3), 13),
             "ramp": np.linspace(0, 1, 16 * 9, dtype=np.float32).reshape(1, 1, 16, 9),
             "wf": _weights((5, 4 * 32 * 9), 14)}
    x = RNG.standard_normal((1, 3, 16, 9)).astype(np.float32)
    model = _model(nodes, [1, 3, 16, 9], [1, 5], inits)
    sess, whole, band_plan, want = _plans(model, x, 2)
    assert band_plan is None                 # 2 of 6 steps band: not worth a plan
    band_plan = _forced(sess, x)
    (got,) = band_plan.run([x])
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-5)
    assert sum(op is not None and "Conv" in op.what for op in band_plan.step_ops) == 4


def _forced(sess, x, name="x"):
    """The banded plan however few steps band."""
    old, bands.MIN_BANDED_SHARE = bands.MIN_BANDED_SHARE, 0.0
    try:
        return sess._build_native_steps(sess._check_feed({name: x}), bands=True)
    finally:
        bands.MIN_BANDED_SHARE = old


def test_images_too_small_to_band_stay_whole():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    model = _model(nodes, [1, 2, 3, 8], None, {"w": _weights((2, 2, 3, 3), 15)})
    _check(model, RNG.standard_normal((1, 2, 3, 8)).astype(np.float32), banded=False)


def test_batches_above_one_stay_whole():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    model = _model(nodes, [2, 2, 16, 8], None, {"w": _weights((2, 2, 3, 3), 16)})
    _check(model, RNG.standard_normal((2, 2, 16, 8)).astype(np.float32), banded=False)


# ---- whole networks ---------------------------------------------------------------------------

BANDED_ZOO = {"lenet5": 32, "cifar_bn": 32, "cifar_cnn": 32, "squeezenet1_1": 67,
              "resnet18": 64, "googlenet": 67, "densenet121": 64, "nin": 32,
              "alexnet": 224}


@pytest.mark.parametrize("name", sorted(BANDED_ZOO))
def test_zoo_models_in_bands(name):
    side = BANDED_ZOO[name]
    channels = zoo.DEFAULT_INPUT[name][0]
    model = zoo.ZOO[name](input_size=side)
    x = np.random.default_rng(1).standard_normal((1, channels, side, side), dtype=np.float32)
    sess = cyconv.InferenceSession(model, threads=2)
    (want,) = sess.run(None, {"input": x})
    band_plan = sess._build_native_steps(sess._check_feed({"input": x}), bands=True)
    assert band_plan is not None and band_plan.section_streams == 2
    (got,) = band_plan.run([x])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * float(np.abs(want).max()))


def test_bands_run_when_the_pool_is_busy():
    """Two sessions' banded plans at once from two Python threads: one of them finds the
    thread pool taken and runs every band itself; both give their answers."""
    model = zoo.squeezenet1_1(input_size=67)
    x = np.random.default_rng(2).standard_normal((1, 3, 67, 67), dtype=np.float32)
    made = []
    for _ in range(2):
        sess = cyconv.InferenceSession(model, threads=2)
        (want,) = sess.run(None, {"input": x})
        made.append((sess._build_native_steps(sess._check_feed({"input": x}), bands=True),
                     want))
    errors = []

    def work(plan, want):
        try:
            for _ in range(30):
                (got,) = plan.run([x])
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        except BaseException as exc:     # noqa: B036 - reported below
            errors.append(exc)
    workers = [threading.Thread(target=work, args=pair) for pair in made]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors


def test_more_bands_than_cores():
    model = zoo.cifar_bn()
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32), dtype=np.float32)
    sess = cyconv.InferenceSession(model, threads=6)
    (want,) = sess.run(None, {"input": x})
    plan = _forced(sess, x, "input")          # 32x32 in 6 bands: the first 3 steps
    assert plan is not None and plan.section_streams == 6
    for _ in range(5):
        (got,) = plan.run([x])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---- the choice between the two plans ---------------------------------------------------------

class _FakePlan:
    def __init__(self, seconds, name):
        self.seconds, self.name, self.runs = seconds, name, 0
        self.nodes, self.notes, self.arena_bytes = [0], [name], 100

    def run(self, feeds, seconds=None):
        self.runs += 1
        time.sleep(self.seconds)
        return [self.name]


def _placement(monkeypatch, far):
    """Pretend the threads' cores are near (0) or far (1); returns the setter."""
    state = {"far": far}
    monkeypatch.setattr(bands._placement, "update", lambda *a: state["far"])
    monkeypatch.setattr(bands._placement, "far", far)
    return state


def test_choice_runs_the_whole_plan_while_the_cores_are_near(monkeypatch):
    _placement(monkeypatch, 0)
    whole, banded = _FakePlan(0.0002, "whole"), _FakePlan(0.00005, "banded")
    made = []
    choice = bands.BandChoice(whole, lambda: made.append(1) or banded)
    for _ in range(3 * choice.EARLY_EXPLORE):
        assert choice.run([]) == ["whole"]
    assert not made and not choice.whole_only and choice.preferred() is whole


@pytest.mark.parametrize("banded_faster", (True, False))
def test_choice_runs_the_faster_plan_while_the_cores_are_far(monkeypatch, banded_faster):
    _placement(monkeypatch, 1)
    whole = _FakePlan(0.002 if banded_faster else 0.0002, "whole")
    banded = _FakePlan(0.0002 if banded_faster else 0.002, "banded")
    made = []
    choice = bands.BandChoice(whole, lambda: made.append(1) or banded)
    outs = [choice.run([])[0] for _ in range(8 * choice.EARLY_EXPLORE)]
    assert made == [1]                        # made on the first far run
    favourite = "banded" if banded_faster else "whole"
    assert choice.preferred().name == favourite
    late = [choice.run([])[0] for _ in range(2 * choice.EXPLORE)]
    assert late.count(favourite) == len(late) - 4      # 2 of every EXPLORE runs explore
    assert outs.count("banded") > 0 and outs.count("whole") > 0
    assert choice.arena_bytes == 200 and choice.notes == ["whole"]


def test_choice_follows_a_change_of_speed(monkeypatch):
    """Far, the plans swap speeds: within a few cycles the other one runs; near again, the
    whole-image plan."""
    where = _placement(monkeypatch, 1)
    whole, banded = _FakePlan(0.0002, "whole"), _FakePlan(0.002, "banded")
    choice = bands.BandChoice(whole, lambda: banded)
    for _ in range(8 * choice.EARLY_EXPLORE):
        choice.run([])
    assert choice.preferred() is whole
    whole.seconds, banded.seconds = 0.002, 0.0002
    for _ in range((choice.WINDOW + 1) * choice.EXPLORE):
        choice.run([])
    assert choice.preferred() is banded
    where["far"] = 0
    monkeypatch.setattr(bands._placement, "far", 0)
    assert choice.run([]) == ["whole"] and choice.preferred() is whole


def test_choice_without_a_banded_plan(monkeypatch):
    _placement(monkeypatch, 1)
    whole = _FakePlan(0, "whole")
    choice = bands.BandChoice(whole, lambda: None)
    for _ in range(3 * choice.EARLY_EXPLORE):
        assert choice.run([]) == ["whole"]
    assert choice.whole_only and choice.preferred() is whole


def test_tiny_plans_are_never_banded(monkeypatch):
    where = _placement(monkeypatch, 0)
    choice = bands.BandChoice(_FakePlan(0, "whole"), lambda: _FakePlan(0, "banded"))
    for _ in range(5):
        choice.run([])
    where["far"] = 1
    assert choice.whole_only and choice.run([]) == ["whole"]


def test_placement_probe_through_the_pool():
    """The probe's round trip is a cache line's (tens to hundreds of ns), or -1 when no
    worker answered within 50 us; never a time of a thread off its core."""
    got = []
    for _ in range(50):
        cyconv.kernels.native.pool_round_trip_ns()       # wakes and keeps the worker
        got.append(cyconv.kernels.native.pool_round_trip_ns())
    assert all(ns == -1.0 or 0 < ns <= 10000 for ns in got)
    assert any(ns > 0 for ns in got)


def test_session_switches_to_bands_and_profiles_them(monkeypatch):
    _placement(monkeypatch, 1)
    model = zoo.squeezenet1_1(input_size=67)
    x = np.random.default_rng(4).standard_normal((1, 3, 67, 67), dtype=np.float32)
    sess = cyconv.InferenceSession(model, threads=2)
    python = cyconv.InferenceSession(model, threads=2)
    python._native = False
    (want,) = python.run(None, {"input": x})
    for _ in range(3 * bands.BandChoice.EARLY_EXPLORE):
        (got,) = sess.run(None, {"input": x})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    (choice,) = sess._native_plans.values()
    assert isinstance(choice, bands.BandChoice) and choice.banded is not None
    choice._favour = 1
    report = profile(sess, {"input": x}, repeats=2, warmup=1)
    assert report.executor == "native"
    assert any("bands of rows" in note for note in report.fusions)


def test_bands_off_by_environment(monkeypatch):
    _placement(monkeypatch, 1)
    monkeypatch.setenv("CYCONV_BANDS", "0")
    sess = cyconv.InferenceSession(zoo.cifar_bn(), threads=2)
    x = np.zeros((1, 3, 32, 32), np.float32)
    for _ in range(3 * bands.BandChoice.EARLY_EXPLORE):
        sess.run(None, {"input": x})
    (plan,) = sess._native_plans.values()
    assert not isinstance(plan, bands.BandChoice)


@pytest.mark.parametrize("name,side", [("squeezenet1_1", 99), ("resnet18", 96)])
def test_stem_conv_writes_the_rows_its_pool_borrows(name, side):
    """The stem conv of each band computes the row its max pool borrows from the other band
    (from one more row of the image) instead of the pool's band being copied with it."""
    model = zoo.ZOO[name](input_size=side)
    x = np.random.default_rng(5).standard_normal((1, 3, side, side), dtype=np.float32)
    sess = cyconv.InferenceSession(model, threads=2)
    (want,) = sess.run(None, {"input": x})
    plan = sess._build_native_steps(sess._check_feed({"input": x}), bands=True)
    whats = [op.what for op in plan.step_ops[:len(plan.streams)] if op is not None]
    _, channels, _, width = whats[2].split("->")[1].strip(" ()").split(", ")   # the stem's
    assert whats[0].startswith("rows 0..") and whats[1].startswith("rows ")
    assert not any(w.startswith("rows") and w.endswith(f"1x{channels}x?x{width}")
                   for w in whats), whats[:8]
    (got,) = plan.run([x])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op,attrs", [("GlobalAveragePool", {}),
                                      ("ReduceMean", dict(axes=[2, 3], keepdims=1))])
def test_global_mean_of_bands_needs_no_join(op, attrs):
    """A global average pool after the bands: each band pools its rows, the means are
    weighed by the bands' rows (13 rows: 6 and 7), no band is copied."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c2"], ["y"], **attrs)]
    inits = {"w1": _weights((8, 3, 3, 3), 17), "w2": _weights((8, 8, 3, 3), 18)}
    x = RNG.standard_normal((1, 3, 13, 11)).astype(np.float32)
    plan = _check(_model(nodes, [1, 3, 13, 11], None, inits, opset=17), x)
    whats = [op.what for op in plan.step_ops if op is not None]
    assert "mean of 2 bands' means -> (1, 8, 1, 1)" in whats
    assert not any(w.startswith("rows 0..13") for w in whats)


def test_stem_output_that_is_also_a_graph_output():
    """The stem conv's output is a graph output too: its bands are joined whole, so the
    stem keeps its own rows (no fold) and both outputs are right."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["stem"], kernel_shape=[3, 3],
                              strides=[2, 2]),
             helper.make_node("MaxPool", ["stem"], ["p"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w2"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
    inits = {"w1": _weights((8, 3, 3, 3), 19), "w2": _weights((8, 8, 3, 3), 20)}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 47, 33])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("stem", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.standard_normal((1, 3, 47, 33)).astype(np.float32)
    _check(model, x)
