"""Gemm and MatMul: numpy references, shape rules, builders on the packed SGEMM.

* Gemm: ``Y[M, N] = alpha * A' @ B' + beta * C`` with ``A' = A.T if transA`` (A' is M x K),
  ``B' = B.T if transB`` (K x N) and C broadcast unidirectionally to (M, N). The transposes
  are strides for the GEMM, never copies. C of shape (N,) / (1, N) becomes the epilogue's
  column bias, (M, 1) its row bias; any other C is written into Y first and accumulated onto.
* FusedGemm (com.microsoft): ``activation(Gemm(A, B, C))``, the activation applied in the
  GEMM epilogue (names and parameters as FusedConv's, see :mod:`cyconv.ops.conv`).
* MatMul: numpy ``matmul`` semantics: 1-D operands get a dimension prepended (A) or appended
  (B) that is removed from the result; batch dimensions broadcast. A 2-D B shared by every
  batch item folds the batch into M: one GEMM of (batch*M) x K by K x N.

float32 runs :mod:`cyconv.kernels.gemm._gemm` (B packed once when it is a load-time
constant, and then declared consumed so the session drops the original; the checks of A
are then done once per shape of A); other dtypes use the numpy reference. numpy's BLAS is never called on the fast path:
its spinning threads must not compete with the kernels' thread pool.
"""
from __future__ import annotations

import numpy as np

from ..engine.registry import consumes, natively, register
from ..errors import InputError
from ..kernels.gemm import _gemm
from .conv import (_ACT_DEFAULTS, _F32, FUSED_ACTIVATIONS, _kernel_activation, _shape_cache,
                   fused_activation_reference)


# ------------------------------------------------------------------------------------------
# numpy references

def gemm_reference(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=None):
    """ONNX Gemm in numpy: ``alpha * A' @ B' + beta * C``.

    Parameters
    ----------
    a : (M, K), or (K, M) with transA;  b : (K, N), or (N, K) with transB
    c : array broadcastable to (M, N), or None

    Returns
    -------
    y : (M, N), dtype of ``a``
    """
    a = np.asarray(a).T if transA else np.asarray(a)
    b = np.asarray(b).T if transB else np.asarray(b)
    y = alpha * np.matmul(a, b)
    if c is not None:
        y = y + beta * np.asarray(c)
    return y.astype(a.dtype, copy=False)


def matmul_reference(a, b):
    """ONNX MatMul in numpy (``numpy.matmul``): (..., M, K) @ (..., K, N) -> (..., M, N)."""
    return np.matmul(a, b)


# ------------------------------------------------------------------------------------------
# Gemm

def _gemm_bias(c, beta, M, N):
    """How C enters the GEMM: ``(bias_row, bias_col, prefill)``, at most one not None."""
    if c is None or beta == 0.0:
        return None, None, None
    c = np.asarray(c, np.float32)
    if c.ndim > 2 or any(d not in (1, n) for d, n in zip(c.shape[::-1], (N, M))):
        raise InputError(f"Gemm: C of shape {c.shape} does not broadcast to ({M}, {N})")
    scaled = (np.float32(beta) * c).astype(np.float32)
    if c.ndim >= 1 and c.shape[-1] == N and c.size == N and N > 1:
        return None, scaled.reshape(N), None
    if c.ndim == 2 and c.shape == (M, 1) and M > 1:
        return scaled.reshape(M), None, None
    return None, None, np.broadcast_to(scaled, (M, N))


@register("Gemm", reference=gemm_reference)
def Gemm(node, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=None):
    # broadcast: opset < 7 attribute; numpy-style broadcasting of C covers it
    return _gemm_builder(node, alpha, beta, transA, transB, None)


def fused_gemm_reference(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0,
                         activation="Identity", activation_alpha=None, activation_beta=None,
                         activation_gamma=None):
    """com.microsoft FusedGemm: ``activation(alpha * A' @ B' + beta * C)``; the activation's
    parameters are (activation_alpha, activation_beta) in the order of FusedConv's
    activation_params (LeakyRelu alpha; Clip min, max; HardSigmoid alpha, beta; PRelu slope).
    """
    y = gemm_reference(a, b, c, alpha=alpha, beta=beta, transA=transA, transB=transB)
    act = activation.decode() if isinstance(activation, bytes) else str(activation)
    return fused_activation_reference(
        y, act, _fused_gemm_params(act, activation_alpha, activation_beta)).astype(y.dtype)


def _fused_gemm_params(act, a, b):
    params = [] if a is None else [float(a)]
    if b is not None:
        if a is None:    # beta alone: alpha at its ONNX default
            params = [float(_ACT_DEFAULTS.get(act, (0.01,))[0])]
        params.append(float(b))
    return tuple(params)


@register("FusedGemm", reference=fused_gemm_reference, domain="com.microsoft")
def FusedGemm(node, *, alpha=1.0, beta=1.0, transA=0, transB=0, activation="Identity",
              activation_alpha=None, activation_beta=None, activation_gamma=None):
    # ONNX Runtime's contrib op, emitted by the activation-fusion pass; activation_gamma is
    # accepted for ORT compatibility and unused by the activations supported here
    act = activation.decode() if isinstance(activation, bytes) else str(activation)
    if act not in FUSED_ACTIVATIONS:
        raise node.error(f"activation {act!r} is not supported; expected one of "
                         f"{', '.join(FUSED_ACTIVATIONS)}")
    params = _fused_gemm_params(act, activation_alpha, activation_beta)
    return _gemm_builder(node, float(alpha), float(beta), transA, transB, (act, params))


def _gemm_builder(node, alpha, beta, transA, transB, activation):
    """Gemm and FusedGemm; ``activation``: None or (name, params), applied in the epilogue."""
    act_name, act_params = activation if activation is not None else ("Identity", ())
    kact = _kernel_activation(act_name, act_params)
    if act_name == "PRelu":     # one slope for the whole matrix (no channel axis in a Gemm)
        if len(act_params) > 1:
            raise node.error("FusedGemm: PRelu takes one slope (activation_alpha)")
        kact = {"activation": "PRelu", "act_alpha": float(kact["slopes"][0]), "act_beta": 0.0}
    alpha, beta = float(alpha), float(beta)
    transA, transB = int(transA), int(transB)
    if transA not in (0, 1) or transB not in (0, 1):
        raise node.error(f"transA/transB must be 0 or 1, got {transA}, {transB}")
    Bc = node.const(1)
    if Bc is not None and Bc.ndim != 2:
        raise node.error(f"B must be 2-D, got shape {Bc.shape}")
    if Bc is not None and Bc.dtype == np.float32:
        # a constant float32 B (the weights of a fully connected layer) is packed once; a
        # constant float32 C is folded into the epilogue's bias once per A shape
        Cc = node.const(2)
        c_const = Cc is not None and Cc.dtype == np.float32
        run = _prepared_gemm(_gemm.pack_b(Bc.T if transB else Bc), Bc.shape,
                             Cc if c_const else None, alpha, beta, transA, transB, kact)
        return consumes(run, 1, 2) if c_const else consumes(run, 1)

    def run(ctx, a, b, c=None):
        if a.ndim != 2 or b.ndim != 2:
            raise InputError(f"Gemm: A and B must be 2-D, got shapes {a.shape} and {b.shape}")
        M, K = (a.shape[1], a.shape[0]) if transA else a.shape
        Kb, N = (b.shape[1], b.shape[0]) if transB else b.shape
        if K != Kb:
            raise InputError(f"Gemm: A' is ({M}, {K}) so B' must have {K} rows, got B' "
                             f"({Kb}, {N}) from B {b.shape} (transB={transB})")
        if not (a.dtype == b.dtype == np.float32 and (c is None or c.dtype == np.float32)):
            if c is not None:
                _gemm_bias(c, 1.0, M, N)          # same shape check as the fast path
            y = gemm_reference(a, b, c, alpha=alpha, beta=beta, transA=transA, transB=transB)
            if activation is None:
                return y
            return fused_activation_reference(y, act_name, act_params).astype(y.dtype)
        bias_row, bias_col, prefill = _gemm_bias(c, beta, M, N)
        out = np.empty((M, N), np.float32)
        if prefill is not None:
            out[...] = prefill
        return _gemm.sgemm(a.T if transA else a, b.T if transB else b, out, alpha=alpha,
                           accumulate=prefill is not None, bias_row=bias_row,
                           bias_col=bias_col, act=kact["activation"],
                           act_alpha=kact["act_alpha"], act_beta=kact["act_beta"],
                           n_threads=ctx.n_threads)
    return run


def _prepared_gemm(b_packed, b_shape, c_const, alpha, beta, transA, transB, kact):
    """The run of a Gemm / FusedGemm whose B is packed (and whose C, when ``c_const`` is
    given, is a constant): checks, M, N and the epilogue's bias once per shape of A."""
    Kb, N = (b_shape[1], b_shape[0]) if transB else b_shape
    act, act_alpha, act_beta = kact["activation"], kact["act_alpha"], kact["act_beta"]

    def derive(shape):
        if len(shape) != 2:
            raise InputError(f"Gemm: A and B must be 2-D, got shapes {shape} and {b_shape}")
        M, K = (shape[1], shape[0]) if transA else shape
        if K != Kb:
            raise InputError(f"Gemm: A' is ({M}, {K}) so B' must have {K} rows, got B' "
                             f"({Kb}, {N}) from B {b_shape} (transB={transB})")
        return M, (_gemm_bias(c_const, beta, M, N) if c_const is not None else None)

    cache, remember = _shape_cache(derive)

    def run(ctx, a, b=None, c=None):
        got = cache.get(a.shape)
        if got is None:
            got = remember(a.shape)
        M, bias = got
        if a.dtype != _F32:
            raise InputError(f"Gemm: A must be float32 like B, got {a.dtype}")
        bias_row, bias_col, prefill = bias if bias is not None else _gemm_bias(c, beta, M, N)
        out = np.empty((M, N), np.float32)
        if prefill is not None:
            out[...] = prefill
        return _gemm.sgemm(a.T if transA else a, b_packed, out, alpha=alpha,
                           accumulate=prefill is not None, bias_row=bias_row,
                           bias_col=bias_col, act=act, act_alpha=act_alpha, act_beta=act_beta,
                           n_threads=ctx.n_threads)

    def native(in_shapes, n_threads):
        # a C folded into the epilogue (or none); a run-time C or a full-matrix one is numpy
        if any(s is not None for s in in_shapes[1:]) or len(in_shapes[0]) != 2:
            return None
        M, bias = remember(tuple(in_shapes[0]))
        bias_row, bias_col, prefill = bias if bias is not None else (None, None, None)
        if prefill is not None:
            return None
        return _gemm.gemm_native(b_packed, M, bool(transA), alpha, bias_row, bias_col, act,
                                 act_alpha, act_beta, n_threads)
    return natively(run, native)


# ------------------------------------------------------------------------------------------
# MatMul

def matmul_shape(a_shape, b_shape):
    """Result shape of numpy matmul, or raise InputError saying what was expected."""
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise InputError("MatMul: operands must have rank >= 1")
    a2 = (1,) + tuple(a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b2 = tuple(b_shape) + (1,) if len(b_shape) == 1 else tuple(b_shape)
    if a2[-1] != b2[-2]:
        raise InputError(f"MatMul: A {tuple(a_shape)} has {a2[-1]} columns, so B must have "
                         f"{a2[-1]} rows, got B {tuple(b_shape)}")
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise InputError(f"MatMul: batch dimensions of {tuple(a_shape)} and {tuple(b_shape)} "
                         "do not broadcast") from None
    shape = batch + (a2[-2], b2[-1])
    if len(a_shape) == 1:
        shape = shape[:-2] + shape[-1:]
    if len(b_shape) == 1:
        shape = shape[:-1]
    return shape


@register("MatMul", reference=matmul_reference)
def MatMul(node):
    Bc = node.const(1)
    if Bc is not None and Bc.dtype == np.float32 and Bc.ndim == 2:
        return consumes(_prepared_matmul(_gemm.pack_b(Bc), Bc.shape), 1)

    def run(ctx, a, b):
        shape = matmul_shape(a.shape, b.shape)
        if not (a.dtype == b.dtype == np.float32):
            return matmul_reference(a, b)
        nt = ctx.n_threads
        a2 = a[None, :] if a.ndim == 1 else a
        if b.ndim <= 2:
            # every batch item shares B: fold the batch into the rows of A
            M, K = a2.shape[-2], a2.shape[-1]
            bb = b[:, None] if b.ndim == 1 else b
            rows = int(np.prod(a2.shape[:-1]))
            y = _gemm.sgemm(a2.reshape(rows, K), bb, n_threads=nt)
            return y.reshape(shape)
        b2 = b
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        M, K, N = a2.shape[-2], a2.shape[-1], b2.shape[-1]
        nb = int(np.prod(batch))
        a3 = np.broadcast_to(a2, batch + (M, K)).reshape(nb, M, K)
        b3 = np.broadcast_to(b2, batch + (K, N)).reshape(nb, K, N)
        return _gemm.sgemm(a3, b3, n_threads=nt).reshape(shape)
    return run


def _prepared_matmul(b_packed, b_shape):
    """The run of a MatMul whose 2-D B is packed: the batch of A folds into the rows of one
    GEMM; the result shape and the folded shape of A are derived once per shape of A."""
    K = b_shape[0]

    def derive(shape):
        out_shape = matmul_shape(shape, b_shape)
        return out_shape, (int(np.prod(shape[:-1])), K)

    cache, remember = _shape_cache(derive)

    def run(ctx, a, b=None):
        got = cache.get(a.shape)
        if got is None:
            got = remember(a.shape)
        out_shape, a_rows = got
        if a.dtype != _F32:
            raise InputError(f"MatMul: A must be float32 like B, got {a.dtype}")
        return _gemm.sgemm(a.reshape(a_rows), b_packed, n_threads=ctx.n_threads).reshape(
            out_shape)

    def native(in_shapes, n_threads):
        if len(in_shapes) > 1 and in_shapes[1] is not None or len(in_shapes[0]) < 2:
            return None
        out_shape, a_rows = remember(tuple(in_shapes[0]))
        op = _gemm.gemm_native(b_packed, a_rows[0], False, n_threads=n_threads)
        op.out_shapes = (tuple(out_shape),)
        return op
    return natively(run, native)
