"""Fold inference BatchNormalization into the Conv or Gemm before it (or the Conv after it).

BN(y) = s * y + t per channel c, with s = scale / sqrt(var + eps), t = B - mean * s.

* Preceding Conv:   W'[o] = s[o] * W[o],  b'[o] = s[o] * b[o] + t[o]            (exact)
* Preceding Gemm:   Y = A B + C with channels on Y's axis 1: B'[:, o] = s[o] B[:, o]
  (transB: rows), C' = s * C + t                                                (exact)
* Following Conv (BN output feeds only a Conv without padding):
      Conv(s*x + t, W) = Conv(x, W * s[i]) + sum_{i,k} W[o,i,k] t[i]
  Only without padding: a zero-padded border of BN(x) is not BN of a zero border.
Folding happens in float64 and casts back, so the folded model matches the unfolded one to
float32 rounding.

``fold_bias_add`` is the same idea for a bias written as a separate Add of a per-channel
constant after a Conv without bias (PaddlePaddle's exports of squeeze-excitation blocks):
Conv(x, W) + c = Conv(x, W, b + c), which lets the activation after it fuse too.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from ._rewrite import add_constant, const, consumers, drop_unused_constants, sole_consumer


def bn_affine(graph: Graph, bn: Node):
    """(s, t) as float64 vectors, or None if BN is not a foldable inference BN."""
    if bn.domain or bn.op_type != "BatchNormalization" or len(bn.inputs) < 5:
        return None
    if any(o for o in bn.outputs[1:]) or bn.attrs.get("training_mode", 0) or \
            bn.attrs.get("spatial", 1) != 1:
        return None
    params = [const(graph, name) for name in bn.inputs[1:5]]
    if any(p is None or p.ndim != 1 or p.dtype.kind != "f" for p in params):
        return None
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return s, bias - mean * s


def fold_batchnorm(graph: Graph) -> Graph:
    graph = graph.copy()
    changed = True
    while changed:
        changed = False
        uses = consumers(graph)
        for bn in list(graph.nodes):
            affine = bn_affine(graph, bn)
            if affine is None:
                continue
            producer = next((n for n in graph.nodes if bn.inputs[0] in n.outputs), None)
            if producer is not None and sole_consumer(graph, uses, bn.inputs[0]) is bn and \
                    _fold_into_producer(graph, producer, bn, *affine):
                changed = True
                break
            follower = sole_consumer(graph, uses, bn.outputs[0])
            if follower is not None and _fold_into_follower(graph, bn, follower, *affine):
                changed = True
                break
    drop_unused_constants(graph)
    return graph


def _per_channel(value: np.ndarray, channels: int, rank: int):
    """``value`` as one number per channel of a (N, channels, ...) tensor of rank ``rank``
    under broadcasting, or None if it varies along another axis."""
    if value is None or value.dtype.kind != "f" or value.ndim > rank:
        return None
    aligned = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for k, d in enumerate(aligned) if k != 1) or aligned[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,))


def _matmul_bias_to_gemm(graph: Graph, matmul, add, bias_name) -> bool:
    """MatMul(a, B) -> Add(., c) as Gemm(a, B, c): ``a`` of rank 2, B a constant (K, N)
    matrix, c a constant (N,) or (1, N) row (TensorFlow's exporters write every Dense layer
    so). The Gemm then takes its activation like any other (fuse_activation)."""
    b = const(graph, matmul.inputs[1]) if len(matmul.inputs) > 1 else None
    c = const(graph, bias_name)
    a_shape = graph.value_shapes.get(matmul.inputs[0])
    if b is None or c is None or b.ndim != 2 or a_shape is None or len(a_shape) != 2 or \
            b.dtype != np.float32 or c.dtype != np.float32 or graph.opset < 7 or \
            c.shape not in ((b.shape[1],), (1, b.shape[1])):
        return False
    matmul.op_type, matmul.attrs = "Gemm", {}
    matmul.inputs = [matmul.inputs[0], matmul.inputs[1], bias_name]
    matmul.outputs = [add.outputs[0]]
    graph.nodes.remove(add)
    graph.fusions.append(f"folded MatMul {matmul.name!r} and Add {add.name!r} of a bias row "
                         f"into one Gemm")
    return True


def fold_bias_add(graph: Graph) -> Graph:
    """Conv(x, W[, b]) -> Add(., c) with c constant per output channel -> Conv(x, W, b + c);
    MatMul(a, B) -> Add(., c) with B and the row c constant -> Gemm(a, B, c)."""
    graph = graph.copy()
    uses = consumers(graph)
    producer_of = {o: n for n in graph.nodes for o in n.outputs}
    for add in list(graph.nodes):
        if add.domain or add.op_type != "Add" or len(add.inputs) != 2:
            continue
        for mine, other in (add.inputs, add.inputs[::-1]):
            conv = producer_of.get(mine)
            if conv is not None and not conv.domain and conv.op_type == "MatMul" and \
                    sole_consumer(graph, uses, mine) is add and \
                    _matmul_bias_to_gemm(graph, conv, add, other):
                producer_of[add.outputs[0]] = conv
                uses = consumers(graph)
                break
            w = const(graph, conv.inputs[1]) if conv is not None and len(conv.inputs) > 1 \
                else None
            if conv is None or conv.domain or conv.op_type != "Conv" or w is None or \
                    w.ndim < 3 or sole_consumer(graph, uses, mine) is not add:
                continue
            c = _per_channel(const(graph, other), w.shape[0], w.ndim)
            bias_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
            b = const(graph, bias_name) if bias_name else np.zeros(w.shape[0])
            if c is None or b is None:
                continue
            dtype = w.dtype
            conv.inputs = list(conv.inputs[:2]) + [add_constant(
                graph, f"{conv.name}_biasadd", (b.astype(np.float64) + c).astype(dtype))]
            conv.outputs = [add.outputs[0]]
            graph.nodes.remove(add)
            producer_of[add.outputs[0]] = conv
            graph.fusions.append(f"folded Add {add.name!r} of a per-channel constant into the "
                                 f"bias of Conv {conv.name!r}")
            uses = consumers(graph)
            break
    drop_unused_constants(graph)
    return graph


def _fold_into_producer(graph, producer, bn, s, t) -> bool:
    if producer.domain or producer.op_type not in ("Conv", "Gemm"):
        return False
    w = const(graph, producer.inputs[1])
    b = const(graph, producer.inputs[2]) if len(producer.inputs) > 2 else None
    if w is None or w.dtype.kind != "f" or (len(producer.inputs) > 2 and producer.inputs[2]
                                            and b is None):
        return False
    dtype = w.dtype
    if producer.op_type == "Conv":
        if w.shape[0] != s.size:
            return False
        w_new = w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))
        b_old = np.zeros(s.size) if b is None else b.astype(np.float64)
        b_new = b_old * s + t
    else:
        alpha, beta = producer.attrs.get("alpha", 1.0), producer.attrs.get("beta", 1.0)
        trans_b = producer.attrs.get("transB", 0)
        n_out = w.shape[0] if trans_b else w.shape[1]
        if w.ndim != 2 or n_out != s.size:
            return False
        w_new = w.astype(np.float64) * (s[:, None] if trans_b else s[None, :])
        if b is None:
            b_new, beta = t / 1.0, 1.0
        else:
            c = np.broadcast_to(b.astype(np.float64) * beta, np.broadcast_shapes(b.shape, (n_out,)))
            b_new, beta = c * s + t, 1.0
        producer.attrs["beta"] = beta
        producer.attrs["alpha"] = alpha
    inputs = list(producer.inputs[:2]) + [""]
    inputs[1] = add_constant(graph, producer.inputs[1] + "_bnfold", w_new.astype(dtype))
    inputs[2] = add_constant(graph, (producer.inputs[2] if len(producer.inputs) > 2 and
                                     producer.inputs[2] else producer.name) + "_bnfold_bias",
                             np.asarray(b_new).astype(dtype))
    producer.inputs = inputs + list(producer.inputs[3:])
    producer.outputs = [bn.outputs[0]]
    graph.nodes.remove(bn)
    graph.fusions.append(f"folded BatchNormalization {bn.name!r} into {producer.op_type} "
                         f"{producer.name!r}")
    return True


def _fold_into_follower(graph, bn, conv, s, t) -> bool:
    if conv.domain or conv.op_type != "Conv" or conv.inputs[0] != bn.outputs[0]:
        return False
    if any(conv.attrs.get("pads", [0])) or conv.attrs.get("auto_pad", "NOTSET") not in (
            "NOTSET", "VALID"):
        return False
    w = const(graph, conv.inputs[1])
    b = const(graph, conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
    if w is None or w.dtype.kind != "f" or (len(conv.inputs) > 2 and conv.inputs[2] and b is None):
        return False
    group = int(conv.attrs.get("group", 1))
    c_in = w.shape[1] * group
    if c_in != s.size:
        return False
    w64 = w.astype(np.float64)
    # Input channel of W[o, j] is g(o) * Cin_g + j, g(o) the group of output channel o.
    c_out, cin_g = w.shape[0], w.shape[1]
    groups_of = np.arange(c_out) // (c_out // group)
    channel = groups_of[:, None] * cin_g + np.arange(cin_g)[None, :]      # (Cout, Cin_g)
    spatial = (1,) * (w.ndim - 2)
    w_new = w64 * s[channel].reshape(c_out, cin_g, *spatial)
    shift = (w64 * t[channel].reshape(c_out, cin_g, *spatial)).reshape(c_out, -1).sum(1)
    b_new = (np.zeros(c_out) if b is None else b.astype(np.float64)) + shift
    new_w = add_constant(graph, conv.inputs[1] + "_bnfold", w_new.astype(w.dtype))
    new_b = add_constant(graph, conv.name + "_bnfold_bias", b_new.astype(w.dtype))
    conv.inputs = [bn.inputs[0], new_w, new_b]
    graph.nodes.remove(bn)
    graph.fusions.append(f"folded BatchNormalization {bn.name!r} into the following Conv "
                         f"{conv.name!r}")
    return True
