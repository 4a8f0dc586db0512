"""Conv through im2col packed straight into the GEMM's B panels (cyconv/kernels/gemm/im2col.c):
strides 1-4 (the vectorised 2 and 4 paths and the general one), dilations, every pad pattern,
output widths around the 16/32-pixel panels (runs that cross output rows), groups, batches,
and images large enough that the column range is split across threads (pieces starting
mid-image, the packer's pixel offset), bitwise equal for 1, 2 and 3 threads."""
import numpy as np
import pytest

from cyconv.kernels import conv as kc
from cyconv.ops.conv import conv_reference


def check(rng, N, C, H, W, M, k, s, d, pads, group=1):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((M, C // group, k, k)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    plan = kc.ConvPlan(w, b, (s, s), (d, d), group)
    assert not plan.winograd
    outs = [plan.run(x, pads, t) for t in (1, 2, 3)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    want = conv_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          strides=[s, s], dilations=[d, d], pads=list(pads), group=group)
    np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("s", [1, 2, 3, 4])
@pytest.mark.parametrize("W", [5, 16, 33, 70])
def test_strides_and_widths(rng, s, W):
    check(rng, 1, 3, 9, W, 5, 3, s, 1, (1, 1, 1, 1))


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (3, 0, 1, 2), (0, 3, 2, 0), (5, 5, 5, 5)])
@pytest.mark.parametrize("s", [1, 2])
def test_pads_wider_than_taps(rng, pads, s):
    check(rng, 2, 4, 8, 11, 6, 3, s, 1, pads)


@pytest.mark.parametrize("k,s,d", [(3, 1, 2), (3, 2, 3), (5, 1, 1), (7, 2, 1), (11, 4, 1),
                                   (2, 1, 1), (1, 2, 1)])
def test_kernel_shapes(rng, k, s, d):
    check(rng, 1, 3, 31, 29, 8, k, s, d, (2, 3, 1, 2))


def test_split_across_threads(rng):
    # 56x56 = 3136 pixels: the column range is cut into pieces that start mid-row
    check(rng, 1, 16, 56, 56, 24, 3, 1, 1, (1, 1, 1, 1))
    check(rng, 2, 3, 112, 112, 16, 7, 2, 1, (3, 3, 3, 3))


def test_groups_and_batch(rng):
    check(rng, 3, 8, 13, 17, 12, 3, 1, 1, (1, 1, 1, 1), group=4)
    check(rng, 2, 6, 20, 20, 6, 5, 2, 1, (2, 2, 2, 2), group=2)


@pytest.mark.parametrize("N,C,H,W,M", [(1, 3, 1, 1, 5), (2, 64, 7, 9, 128), (1, 40, 28, 28, 16)])
def test_preactivation_in_the_packer(rng, N, C, H, W, M):
    # relu(scale * x + shift) per channel, computed while the GEMM packs a 1x1 conv's input
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((M, C, 1, 1)).astype(np.float32)
    scale, shift = (rng.standard_normal(C).astype(np.float32) for _ in range(2))
    plan = kc.ConvPlan(w, None, (1, 1), (1, 1), 1)
    outs = [plan.run(x, (0, 0, 0, 0), t, pre=(scale, shift)) for t in (1, 2, 3)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    xa = np.maximum(x.astype(np.float64) * scale[:, None, None] + shift[:, None, None], 0)
    want = conv_reference(xa, w.astype(np.float64))
    np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_preactivation_only_where_the_conv_reads_x(rng):
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    pre = (np.ones(4, np.float32), np.zeros(4, np.float32))
    for w, st, pads in [((3, 4, 3, 3), (1, 1), (1, 1, 1, 1)), ((3, 4, 1, 1), (2, 2), (0,) * 4),
                        ((3, 4, 1, 1), (1, 1), (1, 0, 0, 0))]:
        plan = kc.ConvPlan(rng.standard_normal(w).astype(np.float32), None, st, (1, 1), 1)
        with pytest.raises(ValueError, match="pre-activation"):
            plan.run(x, pads, 1, pre=pre)
