"""Packed SGEMM vs a float64 numpy product: shapes around the register tile and cache blocks,
strided (transposed) operands, prepacked operands, epilogue, thread-count invariance, and
every micro-kernel the CPU supports."""
import numpy as np
import pytest

from cyconv.kernels.gemm import _gemm

ISAS = []
for _name in ("generic", "avx2", "avx512f"):
    _prev = _gemm.isa()
    try:
        _gemm.set_isa(_name)
        ISAS.append(_name)
    except ValueError:
        pass
    finally:
        _gemm.set_isa(_prev)


@pytest.fixture(params=ISAS)
def isa(request):
    prev = _gemm.isa()
    _gemm.set_isa(request.param)
    yield request.param
    _gemm.set_isa(prev)


def reference(a, b, alpha=1.0, c0=None, bias_row=None, bias_col=None, act=None):
    y = alpha * (a.astype(np.float64) @ b.astype(np.float64))
    if c0 is not None:
        y = y + c0
    if bias_row is not None:
        y = y + bias_row[:, None]
    if bias_col is not None:
        y = y + bias_col[None, :]
    if act == "relu":
        y = np.maximum(y, 0)
    return y


def check(c, ref, K):
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=2e-6 * max(K, 1) ** 0.5 * 10)


def rand(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


# M, N, K around MR in {4,6,12}, NR in {16,32}, KC in {256,384}, MC/NC blocks
SHAPES = [(1, 1, 1), (1, 33, 7), (5, 1, 3), (7, 17, 1), (12, 32, 16), (13, 33, 17),
          (25, 70, 385), (50, 31, 800), (3, 100, 0), (241, 40, 20), (6, 3073, 5)]


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_shapes(isa, rng, M, N, K):
    a, b = rand(rng, M, K), rand(rng, K, N)
    check(_gemm.sgemm(a, b), reference(a, b), K)


@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (True, True)])
def test_strided_operands(isa, rng, ta, tb):
    M, N, K = 29, 45, 67
    a = rand(rng, K, M).T if ta else rand(rng, M, K)
    b = rand(rng, N, K).T if tb else rand(rng, K, N)
    check(_gemm.sgemm(a, b), reference(a, b), K)
    # non-unit strides on both axes
    big = rand(rng, 2 * M, 3 * K)
    check(_gemm.sgemm(big[::2, ::3], b), reference(big[::2, ::3], b), K)


def test_epilogue_alpha_accumulate(isa, rng):
    M, N, K = 27, 50, 400
    a, b = rand(rng, M, K), rand(rng, K, N)
    br, bc = rand(rng, M), rand(rng, N)
    c0 = rand(rng, M, N)
    out = c0.copy()
    _gemm.sgemm(a, b, out, alpha=0.5, accumulate=True, bias_row=br, bias_col=bc, act="relu")
    check(out, reference(a, b, 0.5, c0, br, bc, "relu"), K)
    out = _gemm.sgemm(a, b, bias_row=br, act="relu")
    check(out, reference(a, b, bias_row=br, act="relu"), K)
    assert (out >= 0).all()


def test_k_zero_gives_bias(isa, rng):
    out = _gemm.sgemm(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32),
                      bias_col=np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(out, np.tile(np.arange(4, dtype=np.float32), (3, 1)))


def test_prepacked_operands(isa, rng):
    M, N, K = 30, 70, 500
    a, b = rand(rng, M, K), rand(rng, K, N)
    ref = _gemm.sgemm(a, b)
    pa, pb = _gemm.pack_a(a), _gemm.pack_b(b)
    # packing changes where the operands come from, never the arithmetic
    np.testing.assert_array_equal(_gemm.sgemm(pa, b), ref)
    np.testing.assert_array_equal(_gemm.sgemm(a, pb), ref)
    np.testing.assert_array_equal(_gemm.sgemm(pa, pb), ref)
    np.testing.assert_array_equal(_gemm.sgemm(_gemm.pack_a(np.asfortranarray(a)), b), ref)


@pytest.mark.parametrize("M,N,K", [(7, 1000, 300), (300, 9, 50), (100, 100, 700), (64, 3136, 27),
                                   (25, 200, 777)])
def test_thread_count_invariance(isa, rng, M, N, K):
    a, b = rand(rng, M, K), rand(rng, K, N)
    bias = rand(rng, M)
    outs = [_gemm.sgemm(a, b, bias_row=bias, act="relu", n_threads=t) for t in (1, 2, 3)]
    check(outs[0], reference(a, b, bias_row=bias, act="relu"), K)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_batched_and_broadcast(rng):
    a, b = rand(rng, 4, 9, 13), rand(rng, 13, 11)
    out = _gemm.sgemm(a, b, n_threads=2)
    check(out, np.einsum("bmk,kn->bmn", a.astype(np.float64), b), 13)
    bb = np.broadcast_to(b, (4, 13, 11))
    np.testing.assert_array_equal(_gemm.sgemm(a, bb), out)


def test_errors(rng):
    with pytest.raises(ValueError, match="inner dimensions"):
        _gemm.sgemm(rand(rng, 2, 3), rand(rng, 4, 5))
    with pytest.raises(TypeError):
        _gemm.sgemm(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="bias_row"):
        _gemm.sgemm(rand(rng, 2, 3), rand(rng, 3, 5), bias_row=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="packed right operand"):
        _gemm.sgemm(_gemm.pack_b(rand(rng, 3, 3)), rand(rng, 3, 3))
    with pytest.raises(ValueError):
        _gemm.set_isa("sse9")
