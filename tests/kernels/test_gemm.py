"""Packed SGEMM vs a float64 numpy product: shapes around the register tile and cache blocks,
strided (transposed) operands, prepacked operands, epilogue, thread-count invariance, and
every micro-kernel the CPU supports."""
import numpy as np
import pytest

from cyconv.kernels.gemm import _gemm
from isa_testing import runnable_gemm_isas

ISAS = runnable_gemm_isas()


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


@pytest.mark.parametrize("M,N,K", [(1024, 49, 600), (600, 37, 1000), (2048, 20, 300)])
def test_tall_narrow_shares_packed_b(isa, rng, M, N, K):
    # many rows, few columns: the threads split M and B is packed once for all of them
    # (gemm.c, shared B); B plain or transposed, weights prepacked or not, residual epilogue
    a, b = rand(rng, M, K), rand(rng, K, N)
    z, bias = rand(rng, M, N), rand(rng, M)
    want = reference(a, b, bias_row=bias) + z
    outs = [_gemm.sgemm(aa, bb, bias_row=bias, residual=z, n_threads=t)
            for aa in (a, _gemm.pack_a(a)) for bb in (b, np.asfortranarray(b))
            for t in (1, 2, 3)]
    check(outs[0], want, K)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("M", [1, 3, 12, 13])
def test_few_rows_deep_k(isa, rng, M):
    # M <= MR takes all of K in one block (fully connected layers; M == 1 a GEMV kernel where
    # the ISA has one): packed or not, strided or not, any thread count, the same bits
    K, N = 5000, 300
    a, b = rand(rng, M, K), rand(rng, K, N)
    pa, pb = _gemm.pack_a(a), _gemm.pack_b(b)
    a_t = np.asfortranarray(a)
    outs = [_gemm.sgemm(aa, bb, n_threads=t) for aa in (a, pa, a_t) for bb in (b, pb)
            for t in (1, 2, 3)]
    check(outs[0], reference(a, b), K)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


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


# every epilogue activation, with bias and residual, on every ISA; ids as in gemm.h
ACTS = [("Identity", 0, 0), ("Relu", 0, 0), ("LeakyRelu", 0.1, 0), ("Clip", -0.5, 0.8),
        ("Sigmoid", 0, 0), ("Tanh", 0, 0), ("HardSigmoid", 0.3, 0.45), ("HardSwish", 0, 0),
        ("Swish", 0, 0), ("PRelu", 0.25, 0)]


def act_reference(y, name, alpha, beta, slope_row=None):
    if name == "Relu":
        return np.maximum(y, 0)
    if name in ("LeakyRelu", "PRelu"):
        s = slope_row[:, None] if slope_row is not None else alpha
        return np.where(y >= 0, y, s * y)
    if name == "Clip":
        return np.clip(y, alpha, beta)
    if name == "Sigmoid":
        return 1 / (1 + np.exp(-y))
    if name == "Tanh":
        return np.tanh(y)
    if name == "HardSigmoid":
        return np.clip(alpha * y + beta, 0, 1)
    if name == "HardSwish":
        return y * np.clip(y / 6 + 0.5, 0, 1)
    if name == "Swish":
        return y / (1 + np.exp(-y))
    return y


@pytest.mark.parametrize("name,alpha,beta", ACTS, ids=[a[0] for a in ACTS])
@pytest.mark.parametrize("M,N,K", [(13, 45, 20), (1, 70, 9), (30, 17, 500)])
def test_epilogue_activations(isa, rng, name, alpha, beta, M, N, K):
    # |y| up to ~15: exercises both saturated ends of sigmoid/tanh and the linear middle
    a, b = rand(rng, M, K), rand(rng, K, N) * (3.0 / K ** 0.5)
    br, z = rand(rng, M), rand(rng, M, N) * 3
    slopes = rand(rng, M) if name == "PRelu" else None
    out = _gemm.sgemm(a, b, bias_row=br, residual=z, act=name, act_alpha=alpha,
                      act_beta=beta, slope_row=slopes)
    want = act_reference(reference(a, b, bias_row=br) + z, name, alpha, beta, slopes)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)
    # the residual through a strided view, and threads agree bitwise
    zz = np.zeros((M, 2 * N), np.float32)
    zz[:, ::2] = z
    zv = np.ascontiguousarray(zz[:, ::2])
    outs = [_gemm.sgemm(a, b, bias_row=br, residual=zv, act=name, act_alpha=alpha,
                        act_beta=beta, slope_row=slopes, n_threads=t) for t in (1, 2, 3)]
    for o in outs:
        np.testing.assert_array_equal(o, out)


def test_vector_math_accuracy(isa):
    # the vectorised exp/tanh of the epilogue against float64, over the whole float range
    x = np.concatenate([np.linspace(-100, 100, 20001), np.linspace(-1e-3, 1e-3, 101),
                        [-1e30, -88.0, -20.0, 20.0, 88.0, 1e30]]).astype(np.float32)
    eye = np.ones((1, 1), np.float32)
    for name, f in (("Sigmoid", lambda v: 1 / (1 + np.exp(-v))), ("Tanh", np.tanh)):
        y = _gemm.sgemm(eye, x[None, :], act=name)[0]
        with np.errstate(over="ignore"):
            want = f(x.astype(np.float64))
        np.testing.assert_allclose(y, want, rtol=4e-6, atol=1e-30)


def test_residual_batched(rng):
    a, b, z = rand(rng, 3, 5, 7), rand(rng, 7, 6), rand(rng, 3, 5, 6)
    out = _gemm.sgemm(a, b, residual=z, act="Relu")
    want = np.maximum(np.einsum("bmk,kn->bmn", a.astype(np.float64), b) + z, 0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="residual"):
        _gemm.sgemm(a, b, residual=z[:, :, :5])


def test_concurrent_callers(rng):
    # the thread pool serves one call at a time; others (here 4 Python threads at once, and
    # the pieces of a call) fall back to running on their own thread: same bits everywhere
    from concurrent.futures import ThreadPoolExecutor
    a, b = rand(rng, 200, 300), rand(rng, 300, 500)
    want = _gemm.sgemm(a, b, n_threads=1)
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda t: _gemm.sgemm(a, b, n_threads=2 + t % 2), range(16)))
    for o in outs:
        np.testing.assert_array_equal(o, want)


@pytest.mark.parametrize("M,nr", [(1280, 1), (960, 1), (12, 1), (13, 1), (150, 2), (144, 3),
                                  (577, 4), (18, 4), (31, 1)])
def test_narrow_last_panel(isa, rng, M, nr):
    # a last panel of 1-4 columns (N = 49: a 7x7 plane) runs its full-height tiles several
    # at a time (gemm_isa.h, kernel_edge), blocks of MC rows and a ragged last tile included;
    # every element is the chain of FMAs the 16-column tile computes: bitwise the columns of
    # a wider product, with bias, PRelu-like slopes, residual and activation, on any threads
    K, N = 70, 48 + nr
    a, b = rand(rng, M, K), rand(rng, K, 64)
    bias, z, slopes = rand(rng, M), rand(rng, M, 64), rand(rng, M)
    for kwargs in ({}, {"bias_row": bias, "act": "relu"}, {"bias_row": bias, "residual": z},
                   {"slope_row": slopes, "act": "PRelu"}):
        wide = _gemm.sgemm(_gemm.pack_a(a), b, **kwargs)
        narrow_kwargs = dict(kwargs, residual=np.ascontiguousarray(z[:, :N])) \
            if "residual" in kwargs else kwargs
        outs = [_gemm.sgemm(aa, np.ascontiguousarray(b[:, :N]), n_threads=t, **narrow_kwargs)
                for aa in (a, _gemm.pack_a(a)) for t in (1, 2, 3)]
        for o in outs:
            np.testing.assert_array_equal(o, wide[:, :N])
        if "residual" in kwargs:
            check(outs[0], reference(a, b[:, :N], bias_row=bias) + z[:, :N], K)


@pytest.mark.parametrize("M", [2, 5, 16, 17, 48, 256, 257])
def test_b_read_in_place(isa, rng, M):
    # a B with contiguous rows (a 1x1 conv's input planes, here a column slice of a wider
    # array: rows farther apart than N) is read in place instead of packed for few rows of A
    # (gemm.c, b_in_place; the limit is per ISA): the same sums in the same order as from a
    # prepacked B, with the epilogue, on any number of threads
    K, N = 150, 203
    a, wide = rand(rng, M, K), rand(rng, K, N + 37)
    b = wide[:, :N]
    bias, z = rand(rng, M), rand(rng, M, N)
    want = _gemm.sgemm(a, _gemm.pack_b(np.ascontiguousarray(b)), bias_row=bias, residual=z,
                       act="relu")
    check(want, np.maximum(reference(a, b, bias_row=bias) + z, 0), K)
    for t in (1, 2, 3):
        np.testing.assert_array_equal(
            _gemm.sgemm(a, b, bias_row=bias, residual=z, act="relu", n_threads=t), want)


def test_b_in_place_stays_in_its_page(isa, rng):
    # B's last row ending at a page followed by an unreadable page: a kernel whose in-place
    # loads run past a row's end (AVX2: whole vectors) must pack this B instead of faulting
    import ctypes
    import mmap
    page = mmap.PAGESIZE
    buf = mmap.mmap(-1, 3 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prot_none = 0                   # PROT_NONE (the mmap module does not export it)
    assert libc.mprotect(base + 2 * page, page, prot_none) == 0
    try:
        floats = np.frombuffer(buf, np.float32, count=2 * page // 4)
        for K, N in [(7, 9), (20, 37), (3, 100)]:
            b = floats[floats.size - K * N:].reshape(K, N)     # ends at the guard page
            b[...] = rand(rng, K, N)
            a = rand(rng, 4, K)
            np.testing.assert_array_equal(_gemm.sgemm(a, b),
                                          _gemm.sgemm(a, _gemm.pack_b(b.copy())))
            del b
        del floats
    finally:
        libc.mprotect(base + 2 * page, page, mmap.PROT_READ | mmap.PROT_WRITE)
