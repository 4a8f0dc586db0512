"""The row-offset conv path (ConvPlan._prepare_offsets, _offsets_exec): a kxk stride-1 conv on a small plane, read
in place from its zero-padded input by the micro-kernel (gemm.h's cy_operand.row_off), no
im2col packing. Against the float64 reference over kernel sizes, dilations, pad patterns,
widths whose padded-width grid rows straddle the 16- and 32-column panels, channel counts
around the 6- and 12-row tiles, batches, epilogues (bias, residual, activations); bitwise
equal for 1, 2 and 3 threads; on every micro-kernel the CPU has that reads B by row offsets
(AVX-512 and AVX2); and the generic kernel, which has no such path, in a subprocess."""
import os
import subprocess
import sys

import numpy as np
import pytest

from cyconv.kernels import conv as kc
from cyconv.kernels.gemm import _gemm
from cyconv.ops.conv import conv_reference
from isa_testing import runnable_gemm_isas

# the micro-kernels with a row-offset variant that this CPU runs
OFFSET_ISAS = runnable_gemm_isas(("avx2", "avx512f"))

pytestmark = pytest.mark.skipif(not OFFSET_ISAS or not kc.OFFSETS_ENABLED,
                                reason="no micro-kernel with row offsets on this CPU")


@pytest.fixture(autouse=True, params=OFFSET_ISAS)
def isa(request):
    """Every test runs on each row-offset kernel (plans repack their weights per ISA)."""
    prev = _gemm.isa()
    _gemm.set_isa(request.param)
    yield request.param
    _gemm.set_isa(prev)


def check(rng, N, C, H, W, M, k, d, pads, act=None, residual=False, kw=None, strides=(1, 1)):
    kw = k if kw is None else kw
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((M, C, k, kw)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    kwargs = {"activation": act, "act_alpha": 0.1, "act_beta": 0.0} if act == "LeakyRelu" \
        else {"activation": act, "act_alpha": -1.0, "act_beta": 2.0} if act == "Clip" \
        else {"activation": act}
    plan = kc.ConvPlan(w, b, strides, (d, d), 1, **kwargs)
    assert plan.uses_row_offsets(H, W, pads), (C, H, W, M, k, pads)
    want = conv_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          strides=list(strides), dilations=[d, d], pads=list(pads))
    z = rng.standard_normal(want.shape).astype(np.float32) if residual else None
    if z is not None:
        want = want + z
    if act == "Relu":
        want = np.maximum(want, 0)
    elif act == "LeakyRelu":
        want = np.where(want < 0, 0.1 * want, want)
    elif act == "Clip":
        want = np.clip(want, -1.0, 2.0)
    outs = [plan.run(x, pads, t, z=z) for t in (1, 2, 3)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("W", [3, 7, 14, 15, 16, 17, 30, 31])
def test_widths(rng, W):
    check(rng, 1, 8, 9, W, 13, 3, 1, (1, 1, 1, 1))


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (2, 0, 1, 3), (0, 3, 3, 0), (4, 4, 4, 4)])
def test_pads(rng, pads):
    check(rng, 2, 9, 11, 10, 20, 3, 1, pads)


@pytest.mark.parametrize("k,kw,d", [(2, 2, 1), (5, 5, 1), (3, 3, 2), (3, 1, 1), (1, 3, 1),
                                    (7, 7, 1)])
def test_kernel_shapes(rng, k, kw, d):
    check(rng, 1, 8, 16, 16, 24, k, d, (2, 2, 2, 2) if kw > 1 else (2, 0, 2, 0), kw=kw)


@pytest.mark.parametrize("M", [1, 5, 12, 13, 32, 100])
def test_output_channels(rng, M):
    check(rng, 2, 16, 13, 13, M, 3, 1, (1, 1, 1, 1))


@pytest.mark.parametrize("act", [None, "Relu", "LeakyRelu", "Clip"])
@pytest.mark.parametrize("residual", [False, True])
def test_epilogues(rng, act, residual):
    check(rng, 3, 12, 8, 9, 17, 3, 1, (1, 1, 1, 1), act=act, residual=residual)


@pytest.mark.parametrize("N,C,H,M,k,pads", [(1, 1, 32, 6, 5, (0, 0, 0, 0)),
                                             (2, 6, 14, 16, 5, (0, 0, 0, 0)),
                                             (1, 3, 24, 16, 3, (1, 1, 1, 1)),
                                             (3, 4, 9, 5, 3, (1, 0, 2, 1))])
def test_tiny_few_channel_convs(rng, N, C, H, M, k, pads):
    # LeNet-5's convs and the like: below 8 input channels only tiny convs take this path
    check(rng, N, C, H, H, M, k, 1, pads, act="Relu")


@pytest.mark.parametrize("N,C,H,M,pads,act,residual", [
    (1, 64, 15, 64, (0, 0, 0, 0), "Relu", False),       # CIFAR CNN's 13x13: 3 bands
    (1, 32, 13, 100, (1, 1, 1, 1), "LeakyRelu", True),  # SqueezeNet-like, ragged last tile
    (2, 16, 9, 70, (1, 1, 1, 1), "Clip", True),         # 2 images, still few bands
    (1, 24, 7, 13, (1, 1, 1, 1), None, True)])          # 13 channels: ranges of 6 and 7 rows
def test_band_channel_ranges(rng, N, C, H, M, pads, act, residual):
    # few output rows: each band's output channels are split into ranges of whole tiles
    # across the threads (ConvCall.msplit); bitwise equal to one thread's single range
    check(rng, N, C, H, H, M, 3, 1, pads, act=act, residual=residual)


@pytest.mark.parametrize("act,residual", [("Relu", False), ("LeakyRelu", True)])
def test_deep_k_grid_output(rng, act, residual):
    # K = 48 * 9 = 432 runs in two K blocks: the second adds to what the first stored, both
    # at the grid's kept columns only (AVX-512 stores the grid output directly, gemm.h)
    check(rng, 1, 48, 12, 11, 20, 3, 1, (1, 1, 1, 1), act=act, residual=residual)


def test_grid_rows_wider_than_a_panel_of_dropped_columns(rng):
    # dilation 17: each grid row has 34 dropped columns after its 2 outputs, so whole 32-column
    # panels hold no output at all
    check(rng, 1, 8, 36, 36, 12, 3, 17, (0, 0, 0, 0), act="Relu", residual=True)


def test_in_place_grid_channel_ranges(rng):
    # the grid is y itself and the bands' channels are split: ranges write y directly
    check(rng, 1, 8, 9, 9, 40, 3, 1, (1, 0, 1, 0), act="Relu", residual=True, kw=1)


def test_in_place_grid(rng):
    # no horizontal padding and a 1-wide kernel: the grid is y itself (epilogue in the GEMM)
    check(rng, 2, 8, 12, 12, 16, 3, 1, (1, 0, 1, 0), act="Relu", residual=True, kw=1)


def test_choice():
    w = np.zeros((32, 32, 3, 3), np.float32)
    plan = kc.ConvPlan(w, None, (1, 1), (1, 1), 1)
    assert plan.uses_row_offsets(30, 30, (1, 1, 1, 1)) is True     # padded 32x32 = 1024
    # beyond 32x32 only with few channels (C * M <= 1024) and a padded input <= 320 KiB
    assert plan.uses_row_offsets(31, 31, (1, 1, 1, 1)) is True     # 32 x 33 x 33 floats
    assert plan.uses_row_offsets(56, 56, (1, 1, 1, 1)) is False    # 32 x 58 x 58 > 81920
    assert not kc.ConvPlan(np.zeros((64, 32, 3, 3), np.float32), None, (1, 1), (1, 1),
                           1).uses_row_offsets(31, 31, (1, 1, 1, 1))  # C * M = 2048
    assert kc.ConvPlan(np.zeros((16, 10, 3, 3), np.float32), None, (1, 1), (1, 1),
                       1).uses_row_offsets(59, 79, (0, 0, 0, 0))     # MTCNN PNet's second
    assert not kc.ConvPlan(np.zeros((8, 8, 1, 1), np.float32), None, (1, 1), (1, 1),
                           1).uses_row_offsets(7, 7, (0, 0, 0, 0))  # 1x1: packed copy pays
    # few input channels: only tiny convs (LeNet's), which then run on one thread
    assert kc.ConvPlan(np.zeros((8, 4, 3, 3), np.float32), None, (1, 1), (1, 1),
                       1).uses_row_offsets(7, 7, (1, 1, 1, 1))
    assert not kc.ConvPlan(np.zeros((512, 4, 3, 3), np.float32), None, (1, 1), (1, 1),
                           1).uses_row_offsets(30, 30, (1, 1, 1, 1))   # C * M = 2048
    # few channels each way on a plane whose padded input fits 320 KiB: PNet's first conv;
    # VGG's (3 x 226 x 226 floats) is too big
    rgb = kc.ConvPlan(np.zeros((10, 3, 3, 3), np.float32), None, (1, 1), (1, 1), 1)
    assert rgb.uses_row_offsets(120, 160, (0, 0, 0, 0))
    assert not rgb.uses_row_offsets(224, 224, (1, 1, 1, 1))
    # strided: split by phase, few channels each way on an input up to 1 MiB (first convs)
    assert kc.ConvPlan(np.zeros((64, 3, 7, 7), np.float32), None, (2, 2), (1, 1),
                       1).uses_row_offsets(224, 224, (3, 3, 3, 3))    # ResNet's conv1
    assert kc.ConvPlan(w, None, (2, 2), (1, 1), 1).uses_row_offsets(16, 16, (1, 1, 1, 1))
    assert not kc.ConvPlan(np.zeros((64, 64, 3, 3), np.float32), None, (2, 2), (1, 1),
                           1).uses_row_offsets(56, 56, (1, 1, 1, 1))  # C * M = 4096
    assert not kc.ConvPlan(np.zeros((32, 8, 3, 3), np.float32), None, (2, 2), (1, 1),
                           1).uses_row_offsets(190, 190, (1, 1, 1, 1))  # 8 x 192 x 192 floats


@pytest.mark.parametrize("cap", ["generic"])
def test_other_isas_use_im2col(cap):
    code = ("import numpy as np; "
            "from cyconv.kernels import conv as kc; "
            "p = kc.ConvPlan(np.ones((16, 8, 3, 3), np.float32), None, (1, 1), (1, 1), 1); "
            "assert not p.uses_row_offsets(14, 14, (1, 1, 1, 1)); "
            "x = np.ones((1, 8, 14, 14), np.float32); y = p.run(x, (1, 1, 1, 1), 2); "
            "assert y[0, 0, 5, 5] == 72 and y[0, 0, 0, 0] == 32")
    import cyconv
    env = dict(os.environ, CYCONV_GEMM_ISA=cap,
               PYTHONPATH=os.path.dirname(os.path.dirname(cyconv.__file__)))
    # run from the tests folder: from the repository root, "import cyconv" would find the
    # unbuilt sources before the installed package
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("N,H,W,kw,pads,act,residual", [
    (1, 27, 27, 3, (1, 1, 1, 1), "Relu", True),    # 783 grid columns, bands of 7 panels
    (2, 20, 23, 3, (1, 1, 1, 1), "Clip", False),    # 2 images, a band ends inside a row
    (1, 30, 19, 1, (1, 0, 1, 0), None, True)])      # in-place grid (Wp == OW), cut mid-row
def test_bands_cut_mid_row(rng, N, H, W, kw, pads, act, residual):
    # with several threads an image's grid is cut into bands of whole NR panels, not whole
    # rows: the copy into y and the residual's epilogue pass start and end inside rows
    check(rng, N, 8, H, W, 20, 3, 1, pads, act=act, residual=residual, kw=kw)


@pytest.mark.parametrize("N,C,H,W,M,k,kw,strides,d,pads,act,residual", [
    (1, 3, 64, 64, 16, 7, 7, (2, 2), 1, (3, 3, 3, 3), "Relu", False),   # ResNet's conv1, small
    (2, 3, 47, 47, 10, 11, 11, (4, 4), 1, (0, 0, 0, 0), None, True),    # AlexNet's conv1
    (1, 3, 48, 96, 8, 3, 3, (2, 2), 1, (1, 1, 1, 1), "Clip", False),    # PaddleOCR's first
    (1, 4, 20, 21, 7, 3, 3, (2, 1), 1, (1, 0, 2, 1), "LeakyRelu", True),  # rows only
    (1, 4, 20, 21, 7, 3, 3, (1, 2), 2, (1, 2, 0, 1), None, False),       # columns, dilated
    (2, 6, 15, 15, 9, 5, 5, (3, 3), 1, (2, 2, 2, 2), "Relu", True),      # stride 3
    (1, 8, 23, 18, 12, 3, 2, (2, 3), 2, (0, 1, 1, 0), None, False),      # odd everything
    (1, 5, 9, 9, 13, 3, 1, (2, 2), 1, (0, 0, 0, 0), "Relu", True),       # in-place grid (Wq == OW)
    (1, 3, 5, 2101, 4, 3, 3, (2, 2), 1, (1, 1, 1, 1), None, False)])    # rows past the split's stage
def test_strided(rng, N, C, H, W, M, k, kw, strides, d, pads, act, residual):
    # strided convs read x split by row and column phase: each tap a stride-1 read of one
    # phase plane (gemm/im2col.h cy_im2col_phase_split)
    check(rng, N, C, H, W, M, k, d, pads, act=act, residual=residual, kw=kw, strides=strides)


@pytest.mark.parametrize("C, H, W, M, k, d, N", [(32, 32, 32, 32, 3, 1, 1), (64, 15, 15, 64, 3, 1, 2),
                                                 (8, 20, 17, 12, 3, 2, 1), (5, 9, 11, 7, 2, 1, 3)])
def test_unpadded_input_read_in_place_or_copied_near_a_page_end(rng, C, H, W, M, k, d, N):
    # No pads: x is its own padded image and is read where it lies, unless the grid's
    # reads past its last float (the dropped columns of the last row, and the kernel's own
    # over-read) could leave the page; then it is copied as a padded input would be.
    # Both placements give the same bits, equal to the reference.
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((M, C, k, k)).astype(np.float32)
    plan = kc.ConvPlan(w, None, (1, 1), (d, d), 1)
    assert plan.uses_row_offsets(H, W, (0, 0, 0, 0))
    want = conv_reference(x.astype(np.float64), w.astype(np.float64), dilations=[d, d])
    page = 4096 // 4
    pages = -(-x.size // page)
    buf = np.zeros((pages + 3) * page, np.float32)
    start = (-buf.ctypes.data // 4) % page          # floats to the first page boundary
    end_of_page = start + (pages + 1) * page - x.size   # x's last float ends a page
    mid_page = end_of_page - page // 2                  # x's last float is mid-page
    got = []
    for at in (end_of_page, mid_page):
        xv = buf[at:at + x.size].reshape(x.shape)
        xv[...] = x
        got += [plan.run(xv, (0, 0, 0, 0), t) for t in (1, 2)]
    for y in got[1:]:
        np.testing.assert_array_equal(y, got[0])
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))
