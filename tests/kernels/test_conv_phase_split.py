"""Strided convs (column stride >= 2, kernel width >= 5 or >= 16 channels per group: ResNet's
7x7 s2 and 3x3 s2 layers, AlexNet's 11x11 s4) pack im2col from a zero-padded, column-phase-
split copy of the input (ConvPlan._prepare_gemm and _gemm_exec, gemm/im2col.h's cy_im2col_phase_split), in
runs copied as whole 16-float vectors (output rows of 5 to 28 pixels here). Against the float64
reference over strides, dilations, asymmetric pads, widths that leave partial phase rows,
groups, batches and a residual epilogue; bitwise equal for 1, 2 and 3 threads."""
import numpy as np
import pytest

from cyconv.kernels import conv as kc
from cyconv.ops.conv import conv_reference

CASES = [
    # N, C, H, W, M, (kh, kw), strides, dilations, pads (t, l, b, r), group
    (1, 3, 23, 29, 16, (7, 7), (2, 2), (1, 1), (3, 3, 3, 3), 1),
    (2, 3, 30, 31, 13, (7, 7), (2, 2), (1, 1), (3, 2, 1, 3), 1),
    (1, 4, 40, 41, 20, (11, 11), (4, 4), (1, 1), (2, 2, 2, 2), 1),
    (1, 3, 37, 35, 8, (5, 5), (3, 3), (1, 1), (0, 4, 2, 1), 1),
    (1, 2, 20, 26, 9, (5, 5), (1, 2), (1, 1), (2, 2, 2, 2), 1),
    (1, 6, 21, 25, 12, (5, 5), (2, 2), (2, 2), (4, 4, 4, 4), 2),
    (3, 3, 17, 19, 40, (7, 5), (2, 3), (1, 2), (1, 0, 2, 3), 1),
    (1, 16, 14, 14, 24, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),
    (2, 32, 15, 13, 20, (3, 3), (2, 2), (2, 2), (2, 1, 0, 2), 2),
    (1, 20, 9, 9, 14, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),
    (1, 24, 56, 57, 13, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),
]


@pytest.mark.parametrize("case", CASES)
def test_wide_strided_conv_matches_reference(case):
    N, C, H, W, M, (kh, kw), st, dl, pads, group = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((M, C // group, kh, kw)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    want = conv_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          strides=list(st), dilations=list(dl), pads=list(pads), group=group)
    z = rng.standard_normal(want.shape).astype(np.float32)
    want = np.maximum(want + z, 0)
    plan = kc.ConvPlan(w, b, st, dl, group, activation="Relu")
    got = [plan.run(x, pads, n_threads=t, z=z) for t in (1, 2, 3)]
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4 * scale)
    for g in got[1:]:
        np.testing.assert_array_equal(g, got[0])
