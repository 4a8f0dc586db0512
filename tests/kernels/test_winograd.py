"""Winograd F(4x4, 3x3) and F(2x2, 3x3) convolution (cyconv/kernels/gemm/winograd.c) against
the float64 numpy reference, both tile sizes everywhere: image sizes around the tiles and the
GEMM's 16/32-tile panels, every pad pattern, batches whose tiles span images, channel counts
around the register tile, fused bias / residual / activations, thread counts (bitwise equal);
when the builder picks it; and the AVX2 / generic variants in a subprocess (the ISA is chosen
once per process).

Accuracy contract (ARCHITECTURE.md section 3): max |winograd - exact| <= 1e-4 x max |exact|.
"""
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import cyconv
import cyconv.ops  # noqa: F401
from cyconv.engine.registry import NodeContext
from cyconv.kernels import conv as kc
from cyconv.ops.conv import _use_winograd, conv_reference, fused_activation_reference

TOL = 1e-4


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(params=[4, 2], ids=["F4x4", "F2x2"])
def tile(request):
    return request.param


def check_winograd(rng, N, C, H, W, M, pads, act=None, params=(), residual=False, bias=True,
                   threads=(1, 2, 3), tile=4):
    x = rand(rng, N, C, H, W)
    w = (rand(rng, M, C, 3, 3) / np.sqrt(9 * C)).astype(np.float32)
    b = rand(rng, M) if bias else None
    kwargs = {}
    if act is not None:
        kwargs = dict(activation=act)
        if act in ("LeakyRelu", "HardSigmoid", "Clip"):
            kwargs.update(act_alpha=params[0])
        if act in ("HardSigmoid", "Clip"):
            kwargs.update(act_beta=params[1])
    plan = kc.ConvPlan(w, b, (1, 1), (1, 1), 1, winograd=tile, **kwargs)
    assert plan.winograd == tile
    pt, pl, pb, pr = pads
    exact = conv_reference(x.astype(np.float64), w.astype(np.float64),
                           None if b is None else b.astype(np.float64),
                           pads=[pt, pl, pb, pr])
    z = None
    if residual:
        z = rand(rng, *exact.shape)
        exact = exact + z
    if act is not None:
        exact = fused_activation_reference(exact, act, params)
    outs = [plan.run(x, pads, t, z) for t in threads]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    y = outs[0]
    assert y.shape == exact.shape and y.dtype == np.float32
    err = np.abs(y - exact).max()
    assert err <= TOL * max(np.abs(exact).max(), 1e-30), (err, np.abs(exact).max())


@pytest.mark.parametrize("H,W", [(1, 1), (2, 5), (4, 4), (5, 7), (6, 6), (7, 7), (8, 9),
                                 (13, 17), (14, 14), (28, 28), (9, 70)])
def test_image_sizes(rng, H, W, tile):
    check_winograd(rng, 1, 5, H, W, 6, (1, 1, 1, 1), tile=tile)


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2), (0, 2, 2, 0),
                                  (3, 1, 0, 3), (2, 2, 2, 2)])
def test_pads(rng, pads, tile):
    check_winograd(rng, 2, 4, 11, 10, 3, pads, tile=tile)


@pytest.mark.parametrize("N", [2, 3, 5])
def test_batches_span_chunks(rng, N, tile):
    # 9x9 outputs = 9 (25) tiles per image: panels and chunks start mid-image
    check_winograd(rng, N, 16, 9, 9, 20, (1, 1, 1, 1), tile=tile)


@pytest.mark.parametrize("C,M", [(1, 1), (3, 13), (12, 24), (33, 17), (64, 64)])
def test_channels(rng, C, M, tile):
    check_winograd(rng, 1, C, 12, 12, M, (1, 1, 1, 1), tile=tile)


@pytest.mark.parametrize("act,params", [("Relu", ()), ("LeakyRelu", (0.1,)),
                                        ("Clip", (-0.5, 0.5)), ("Sigmoid", ()),
                                        ("HardSigmoid", (0.2, 0.5)), ("Tanh", ())])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_epilogue(rng, act, params, residual, tile):
    check_winograd(rng, 2, 8, 10, 13, 9, (1, 1, 1, 1), act=act, params=params,
                   residual=residual, tile=tile)


def test_no_bias_and_large_layer(rng, tile):
    check_winograd(rng, 1, 8, 6, 6, 4, (1, 1, 1, 1), bias=False, tile=tile)
    # ResNet's 14x14 and 7x7 stages: one chunk, phases split across threads
    check_winograd(rng, 1, 256, 14, 14, 256, (1, 1, 1, 1), act="Relu", params=(),
                   residual=True, threads=(1, 2), tile=tile)
    check_winograd(rng, 1, 512, 7, 7, 512, (1, 1, 1, 1), act="Relu", params=(),
                   residual=True, threads=(1, 2), tile=tile)


def test_many_chunks(rng, tile):
    # 56x56: 196 (784) tiles per image, whole chunks per thread
    check_winograd(rng, 2, 32, 56, 56, 48, (1, 1, 1, 1), threads=(1, 2), tile=tile)


def test_rejects_other_convs(rng):
    w = rand(rng, 4, 4, 3, 3)
    for strides, dilations, group in [((2, 2), (1, 1), 1), ((1, 1), (2, 2), 1),
                                      ((1, 1), (1, 1), 2)]:
        wg = w[:, : 4 // group]
        with pytest.raises(ValueError, match="Winograd"):
            kc.ConvPlan(wg, None, strides, dilations, group, winograd=4)
    with pytest.raises(ValueError, match="Winograd"):
        kc.ConvPlan(rand(rng, 4, 4, 5, 5), None, (1, 1), (1, 1), 1, winograd=2)
    with pytest.raises(ValueError, match="tile must be 2 or 4"):
        kc.ConvPlan(w, None, (1, 1), (1, 1), 1, winograd=3)


def node_with_shape(shape):
    return NodeContext(op_type="Conv", name="c", opset=17, num_inputs=2,
                       input_shapes=(shape, None))


@pytest.mark.parametrize("shape,strides,group,want", [
    ((1, 64, 56, 56), None, 1, 4),
    (("N", 64, 56, 56), None, 1, 4),           # symbolic batch: decided for one image
    ((1, 256, 7, 7), None, 1, 2),              # 4 tiles of 4x4 but 16 of 2x2
    ((1, 512, 7, 7), None, 1, 0),              # ... but 512x512 weights: memory-bound
    ((8, 512, 7, 7), None, 1, 4),
    ((1, 64, 3, 3), None, 1, 0),               # 4 tiles of 2x2: too few for a GEMM panel
    ((1, 3, 224, 224), None, 1, 0),            # GEMM depth 3
    ((1, 64, "H", "W"), None, 1, 0),           # unknown size: the GEMM path fits any
    ((1, 64, 56, 56), [2, 2], 1, 0),
    ((1, 64, 56, 56), None, 2, 0),
])
def test_builder_decision(rng, shape, strides, group, want):
    W = rand(rng, shape[1], shape[1] // group, 3, 3)
    got = _use_winograd(node_with_shape(shape), W, strides, None, [1, 1, 1, 1], "NOTSET",
                        group)
    assert got == want and type(got) is int


def test_environment_switch(rng, monkeypatch):
    W = rand(rng, 64, 64, 3, 3)
    node = node_with_shape((1, 64, 56, 56))
    monkeypatch.setenv("CYCONV_WINOGRAD", "0")
    assert _use_winograd(node, W, None, None, [1, 1, 1, 1], "NOTSET", 1) == 0
    monkeypatch.setenv("CYCONV_WINOGRAD", "1")
    assert _use_winograd(node, W, None, None, [1, 1, 1, 1], "NOTSET", 1) == 4


@pytest.mark.parametrize("cap", ["avx2", "generic"])
def test_capped_isa_variants(cap):
    # each variant in a fresh process: the ISA is chosen once, at the first call
    code = ("import numpy as np, sys; sys.path.insert(0, %r); "
            "import test_winograd as t; rng = np.random.default_rng(1); "
            "[t.check_winograd(rng, n, c, h, w, m, (1, 1, 1, 1), act='Relu', residual=True, "
            "tile=f) for n, c, h, w, m in ((1, 5, 7, 9, 6), (2, 20, 14, 14, 18), "
            "(1, 9, 30, 17, 4)) for f in (4, 2)]"
            % os.path.dirname(__file__))
    # The cyconv this test imported (installed or built in place), not whatever the cwd holds.
    import cyconv
    env = dict(os.environ, CYCONV_GEMM_ISA=cap,
               PYTHONPATH=os.path.dirname(os.path.dirname(cyconv.__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]


def test_dynamic_size_picks_winograd_per_input_shape(rng, monkeypatch):
    # spatial size unknown at load: 3x3 convs decide per input shape at run time
    from onnx import TensorProto, helper, numpy_helper

    from cyconv.engine.session import InferenceSession
    w = (rand(rng, 48, 32, 3, 3) / 17).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 32, "H", "W"])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    dynamic = InferenceSession(model)
    monkeypatch.setenv("CYCONV_WINOGRAD", "0")
    direct = InferenceSession(model)
    # 40x40: Winograd (a padded plane over 32x32 and C * M > 1024; below, few channels take
    # the row-offset path)
    for size, winograd in ((40, True), (3, False), (40, True)):
        x = rand(rng, 1, 32, size, size)
        got, = dynamic.run(None, {"x": x})
        want, = direct.run(None, {"x": x})
        exact = conv_reference(x.astype(np.float64), w.astype(np.float64), pads=[1, 1, 1, 1])
        assert np.abs(got - exact).max() <= TOL * np.abs(exact).max()
        # Winograd rounds differently from the direct GEMM: bitwise equal only without it
        assert np.array_equal(got, want) is not winograd


def test_tile_choice():
    # no Winograd without 16 tiles to fill a panel, nor on few channels (C = 3 stems)
    assert kc.winograd_tile(3, 64, 1, 56, 56) == 0
    assert kc.winograd_tile(256, 256, 1, 56, 56) == 4
    assert kc.winograd_tile(256, 256, 1, 7, 7) == 2        # 16 tiles of 2x2
    assert kc.winograd_tile(512, 512, 1, 7, 7) == 0        # F(2x2) weights too big to stream
    assert kc.winograd_tile(256, 256, 1, 3, 3) == 0        # 4 tiles
    if not kc.ConvPlan(np.zeros((8, 8, 3, 3), np.float32), None, (1, 1), (1, 1),
                       1).uses_row_offsets(8, 8, (1, 1, 1, 1)):
        return                                           # no row-offset kernel on this ISA
    # where the row-offset path applies: Winograd from C * M >= 20 (C + M) up to C * M =
    # 2275 (its weights in cache); above that up to C * M = 8192, only with >= 49 tiles of
    # 4x4 to share its weights (planes from 25x25), the row offsets otherwise
    assert kc.winograd_tile(32, 64, 1, 15, 15) == 4        # 2048 >= 1920
    assert kc.winograd_tile(16, 96, 1, 28, 28) == 0        # 1536 < 2240
    assert kc.winograd_tile(32, 32, 1, 30, 30) == 0
    assert kc.winograd_tile(128, 32, 1, 28, 28) == 4       # 4096 > 2275, 49 tiles
    assert kc.winograd_tile(32, 128, 1, 27, 27) == 4       # SqueezeNet's 27x27 expands
    assert kc.winograd_tile(128, 32, 1, 14, 14) == 0       # 16 tiles: row offsets
    assert kc.winograd_tile(64, 64, 1, 13, 13) == 0
    assert kc.winograd_tile(96, 128, 1, 28, 28) == 4       # 12288 > 8192
    assert kc.winograd_tile(128, 32, 1, 7, 7) == 0         # no F(4x4): row offsets
    assert kc.winograd_tile(160, 320, 1, 7, 7) == 2
    # weights_cached (the model's small-plane F(4x4) weights fit the cache together,
    # ops/conv.py small_plane_winograd): those layers take F(4x4), nothing else changes
    assert kc.winograd_tile(64, 64, 1, 13, 13, True) == 4
    assert kc.winograd_tile(128, 32, 1, 14, 14, True) == 4
    assert kc.winograd_tile(32, 32, 1, 30, 30, True) == 0      # below the ratio still
    assert kc.winograd_tile(128, 32, 1, 7, 7, True) == 0       # no F(4x4) tiles
    assert kc.winograd_tile(160, 320, 1, 7, 7, True) == 2


def _valid_convs(count, side=15, channels=64):
    # `count` 3x3 valid convs of channels -> channels, each on a side x side map (padded
    # back by the next conv's pads=1 except the first)
    rng = np.random.default_rng(0)
    nodes, weights, prev = [], [], "x"
    for i in range(count):
        w = (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32)
        weights.append(onnx.numpy_helper.from_array(w, f"w{i}"))
        pads = [0, 0, 0, 0] if i == 0 else [1, 1, 1, 1]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"y{i}"], pads=pads))
        prev = f"y{i}"
    out = side - 2
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                   [1, channels, side, side])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, channels, out, out])],
        weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("count, cached", [(1, True), (5, False)])
def test_small_plane_winograd_counts_the_models_weights(count, cached, monkeypatch):
    # 64 -> 64 at 13x13: 16 tiles of 4x4, C * M = 4096; its F(4x4) weights take 0.59 MB,
    # so one such layer fits SMALL_PLANE_WINOGRAD_BYTES and five (2.9 MB) do not
    from cyconv.engine import registry
    from cyconv.ops import conv as ops_conv
    if not kc.ConvPlan(np.zeros((8, 8, 3, 3), np.float32), None, (1, 1), (1, 1),
                       1).uses_row_offsets(8, 8, (1, 1, 1, 1)):
        pytest.skip("no row-offset kernel on this ISA: such layers take F(4x4) anyway")
    seen = []

    def spy(graph):
        seen.append(ops_conv.small_plane_winograd(graph))
        return seen[-1]
    monkeypatch.setattr(registry, "MODEL_HINTS", [spy if f is ops_conv.small_plane_winograd
                                                  else f for f in registry.MODEL_HINTS])
    model = _valid_convs(count)
    x = np.random.default_rng(1).standard_normal((1, 64, 15, 15)).astype(np.float32)
    got, = cyconv.InferenceSession(model, threads=2).run(None, {"x": x})
    assert seen == [{"small_plane_winograd": cached}]
    want, = ort.InferenceSession(model.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
