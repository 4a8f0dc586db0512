"""Depthwise conv kernels (cyconv/kernels/conv_dw*.h and the general plane kernel) against the
float64 numpy reference: 3x3 stride 1/2 over widths around the 8/16/32-lane blocks, every pad
pattern, channel multipliers, batch, fused ReLU and FusedConv epilogues, thread counts; and
the AVX2 / generic variants in a subprocess (CYCONV_GEMM_ISA caps the ISA once per process)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cyconv.ops  # noqa: F401
from cyconv.engine.registry import call_op
from cyconv.ops.conv import conv_reference, fused_conv_reference


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def check_dw(rng, N, C, H, W, mult, k, s, pads, dil=1, relu=False, act=None, params=None,
             residual=False, sw=None):
    """One depthwise conv through the registry vs the float64 reference; relu=True is
    act="Relu". FusedConv (act or residual) applies act(conv + b + z)."""
    x, w, b = rand(rng, N, C, H, W), rand(rng, C * mult, 1, k, k), rand(rng, C * mult)
    sw = s if sw is None else sw
    attrs = {"group": C, "strides": [s, sw], "pads": list(pads), "dilations": [dil, dil]}
    act = "Relu" if relu else act
    inputs = [x, w, b]
    if act is None and not residual:
        op, dom = "Conv", ""
        want = conv_reference(*(v.astype(np.float64) for v in inputs), **attrs)
    else:
        op, dom = "FusedConv", "com.microsoft"
        attrs["activation"] = act or "Identity"
        if params is not None:
            attrs["activation_params"] = list(params)
        if residual:
            inputs.append(rand(rng, *conv_reference(x, w, b, group=C, strides=[s, sw],
                                                    pads=list(pads),
                                                    dilations=[dil, dil]).shape))
        want = fused_conv_reference(*(v.astype(np.float64) for v in inputs), **attrs)
    outs = [call_op(op, inputs, attrs, n_threads=t, const_inputs=(1, 2), domain=dom)
            for t in (1, 2, 3)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("W", [1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 47, 64, 65])
@pytest.mark.parametrize("s", [1, 2])
def test_dw3x3_widths(rng, W, s):
    check_dw(rng, 1, 3, 5, W, 1, 3, s, (1, 1, 1, 1))


@pytest.mark.parametrize("H", [1, 2, 3, 5, 7, 8, 9, 11, 13, 14, 16, 17, 23, 28])
@pytest.mark.parametrize("s", [1, 2])
def test_dw3x3_heights(rng, H, s):
    # output rows go in register tiles of up to 8 (conv_dw.h): all of a short plane, a
    # divisor of OH, or 8 with the last tile overlapping the one before
    check_dw(rng, 1, 3, H, 20, 1, 3, s, (1, 1, 1, 1))


@pytest.mark.parametrize("act,params", [("Relu", None), ("Clip", (0.0, 6.0)),
                                        ("Clip", (-0.5, 0.25)), ("LeakyRelu", (0.1,)),
                                        ("HardSigmoid", (0.2, 0.5)), ("Identity", None)])
@pytest.mark.parametrize("residual", [False, True])
def test_dw3x3_epilogues(rng, act, params, residual):
    # ReLU and Clip are applied in the vector kernel's registers, the rest after the plane
    for s in (1, 2):
        check_dw(rng, 2, 6, 11, 18, 1, 3, s, (1, 1, 1, 1), act=act, params=params,
                 residual=residual)


@pytest.mark.parametrize("W", [1, 4, 7, 12, 16, 17, 30, 33])
@pytest.mark.parametrize("H", [2, 5, 9, 13])
@pytest.mark.parametrize("s", [1, 2])
def test_dw5x5(rng, W, H, s):
    # 5x5 (PaddleOCR, MobileNetV3): the AVX-512 kernel's K = 5 tiles, scalar elsewhere
    check_dw(rng, 1, 4, H, W, 1, 5, s, (2, 2, 2, 2))


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("W", [6, 17, 40])
def test_dw_height_stride_only(rng, k, W):
    # strides (2, 1): PaddleOCR halves the height of its text-line features only
    check_dw(rng, 2, 6, 13, W, 1, k, 2, (k // 2,) * 4, sw=1, act="Relu")
    check_dw(rng, 1, 6, 12, W, 1, k, 2, (1, 0, 2, 1), sw=1)


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 3, 2, 0), (4, 4, 4, 4)])
@pytest.mark.parametrize("act,params", [("Relu", None), ("Clip", (0.0, 6.0)),
                                        ("HardSigmoid", (0.2, 0.5))])
def test_dw5x5_pads_and_epilogues(rng, pads, act, params):
    for s in (1, 2):
        check_dw(rng, 2, 5, 11, 19, 1, 5, s, pads, act=act, params=params)


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2), (0, 2, 2, 0),
                                  (3, 3, 3, 3)])
@pytest.mark.parametrize("s", [1, 2])
def test_dw3x3_pads(rng, pads, s):
    check_dw(rng, 2, 4, 9, 12, 1, 3, s, pads)


@pytest.mark.parametrize("mult,relu", [(1, True), (2, False), (3, True)])
def test_dw3x3_multiplier_relu(rng, mult, relu):
    check_dw(rng, 2, 5, 14, 19, mult, 3, 2, (1, 1, 1, 1), relu=relu)
    check_dw(rng, 1, 5, 14, 19, mult, 3, 1, (1, 1, 1, 1), relu=relu)


@pytest.mark.parametrize("k,s,dil", [(3, 3, 1), (3, 1, 2), (5, 1, 1), (5, 2, 1)])
def test_dw_other_shapes_fall_back(rng, k, s, dil):
    check_dw(rng, 1, 4, 13, 17, 1, k, s, (2, 2, 2, 2), dil=dil)


@pytest.mark.parametrize("C", [1, 7, 8, 9, 17, 24])
@pytest.mark.parametrize("H,W,pads", [(7, 7, (1, 1, 1, 1)), (14, 14, (1, 1, 1, 1)),
                                      (16, 16, (1, 1, 1, 1)), (17, 17, (1, 1, 1, 1)),
                                      (5, 11, (0, 1, 2, 0)), (1, 1, (1, 1, 1, 1)),
                                      (9, 6, (0, 0, 0, 0))])
def test_dw3x3_channel_blocks(rng, C, H, W, pads):
    # small stride-1 planes run 8 channels at a time in the lanes (conv_dw_c8_avx2.h):
    # partial blocks, batch 2 (blocks never straddle images), planes up to its 16x16 limit
    # and one past it (the plane kernel), one-sided pads, ReLU6 in the kernel
    check_dw(rng, 2, C, H, W, 1, 3, 1, pads, act="Clip", params=(0.0, 6.0))
    check_dw(rng, 1, C, H, W, 1, 3, 1, pads)


def test_mobilenet_sizes(rng):
    check_dw(rng, 1, 32, 112, 112, 1, 3, 1, (1, 1, 1, 1), relu=True)
    check_dw(rng, 1, 24, 56, 56, 1, 3, 2, (1, 1, 1, 1))
    check_dw(rng, 1, 64, 7, 7, 1, 3, 1, (1, 1, 1, 1), relu=True)


@pytest.mark.parametrize("cap", ["avx2", "generic"])
def test_capped_isa_variants(cap):
    # each variant in a fresh process: the ISA is chosen once, at the first call
    code = ("import numpy as np, sys; sys.path.insert(0, %r); "
            "import test_conv_depthwise as t; rng = np.random.default_rng(1); "
            "[t.check_dw(rng, 1, 3, H, W, 1, 3, s, (1, 0, 1, 2), act=a, params=p) "
            "for W in (5, 8, 9, 16, 17, 40) for H in (6, 13) for s in (1, 2) "
            "for a, p in (('Relu', None), ('Clip', (0.0, 6.0)), (None, None))]; "
            "[t.check_dw(rng, 1, 3, 7, W, 1, 5, s, (2, 2, 2, 2), act=a) "
            "for W in (5, 17) for s in (1, 2) for a in ('Relu', None)]"
            % os.path.dirname(__file__))
    # The cyconv this test imported (installed or built in place), not whatever the cwd holds.
    import cyconv
    env = dict(os.environ, CYCONV_GEMM_ISA=cap,
               PYTHONPATH=os.path.dirname(os.path.dirname(cyconv.__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
