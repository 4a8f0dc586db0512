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
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from ._rewrite import add_constant, const, consumers, drop_unused_constants, sole_consumer


def _bn_affine(graph: Graph, bn: Node):
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
            affine = _bn_affine(graph, bn)
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
