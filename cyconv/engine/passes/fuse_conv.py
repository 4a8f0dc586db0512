"""Fuse what follows a Conv/Gemm into its epilogue: the residual Add, then the activation.

The fused nodes are ONNX Runtime's contrib ops (domain ``com.microsoft``), so an optimized
graph stays a valid model ORT can run, which is how the tests check these passes:

    FusedConv(X, W, B, Z; activation, activation_params) = act(Conv(X, W, B) + Z)
    FusedGemm(A, B, C; activation, activation_alpha/beta) = act(Gemm(A, B, C))

cyconv also accepts activations ORT's FusedConv lacks ("HardSwish", "Swish" = x*sigmoid(x),
"PRelu" with per-channel slopes in activation_params); graphs using those run only here.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, topological_order
from ._rewrite import const, consumers, same_shape, sole_consumer

MS = "com.microsoft"


def kernel_support():
    """(activations FusedConv's kernel implements, whether it takes the residual Z input).

    Declared by the op family (``cyconv/ops/conv.py``) so a pass never emits a node the
    kernels cannot run.
    """
    from ...ops import conv as conv_ops
    return (set(getattr(conv_ops, "FUSED_CONV_ACTIVATIONS", {"Relu"})),
            bool(getattr(conv_ops, "FUSED_CONV_RESIDUAL", False)))


def _is_conv(node: Node) -> bool:
    return (node.domain == "" and node.op_type == "Conv") or \
        (node.domain == MS and node.op_type == "FusedConv")


def _to_fused_conv(node: Node) -> None:
    if node.op_type == "Conv":
        node.op_type, node.domain = "FusedConv", MS
        node.attrs["activation"] = "Identity"


def fuse_residual_add(graph: Graph) -> Graph:
    """Add(Conv(...), other) -> FusedConv(..., Z=other) when shapes provably match."""
    graph = graph.copy()
    if not kernel_support()[1]:
        return graph
    producer_of = {o: n for n in graph.nodes for o in n.outputs}
    uses = consumers(graph)
    for add in list(graph.nodes):
        if add.domain or add.op_type != "Add" or len(add.inputs) != 2:
            continue
        for mine, other in (add.inputs, add.inputs[::-1]):
            conv = producer_of.get(mine)
            if conv is None or not _is_conv(conv) or \
                    conv.attrs.get("activation", "Identity") != "Identity" or \
                    len(conv.inputs) > 3 or sole_consumer(graph, uses, mine) is not add or \
                    not same_shape(graph, mine, other) or other == mine:
                continue
            _to_fused_conv(conv)
            conv.inputs = (list(conv.inputs) + ["", ""])[:3] + [other]
            conv.outputs = [add.outputs[0]]
            graph.nodes.remove(add)
            producer_of[add.outputs[0]] = conv
            graph.fusions.append(f"fused residual Add {add.name!r} into Conv {conv.name!r}")
            uses = consumers(graph)
            break
    # Z may be produced after the Conv in the old order (a downsample branch): re-sort, so later
    # passes that walk the node list (dead-node removal) see producers before consumers.
    available = set(graph.constants) | {v.name for v in graph.inputs}
    graph.nodes = topological_order(graph.nodes, available)
    graph.opsets.setdefault(MS, 1)
    return graph


def _activation_of(graph: Graph, node: Node, uses: dict, x: str):
    """(name, params, nodes consumed, output) if ``node`` applies an activation to ``x``."""
    if node.domain:
        return None
    op, attrs = node.op_type, node.attrs
    if op in ("Relu", "Sigmoid", "Tanh", "HardSwish"):
        if op == "Sigmoid":   # x * sigmoid(x): Sigmoid and Mul both read x
            mul = sole_consumer(graph, uses, node.outputs[0])
            readers = uses.get(x, [])
            if mul is not None and not mul.domain and mul.op_type == "Mul" and \
                    sorted(mul.inputs) == sorted([x, node.outputs[0]]) and \
                    len(readers) == 2 and mul in readers and node in readers:
                return "Swish", [], [node, mul], mul.outputs[0]
        if len(uses.get(x, [])) != 1:
            return None
        return op, [], [node], node.outputs[0]
    if len(uses.get(x, [])) != 1:
        return None
    if op == "LeakyRelu":
        return op, [float(attrs.get("alpha", 0.01))], [node], node.outputs[0]
    if op == "HardSigmoid":
        return op, [float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))], [node], \
            node.outputs[0]
    if op == "Clip":
        if graph.opsets.get("", 1) < 11:
            lo, hi = attrs.get("min", -3.4028234663852886e38), attrs.get("max", 3.4028234663852886e38)
        else:
            bounds = []
            for k, default in ((1, -np.inf), (2, np.inf)):
                name = node.inputs[k] if len(node.inputs) > k else ""
                value = const(graph, name)
                if name and (value is None or value.size != 1):
                    return None
                bounds.append(float(value.reshape(())) if name else default)
            lo, hi = bounds
        return op, [float(lo), float(hi)], [node], node.outputs[0]
    if op == "PRelu":
        slope = const(graph, node.inputs[1])
        shape = graph.value_shapes.get(x)
        if slope is None or shape is None or slope.ndim > len(shape):
            return None
        aligned = (1,) * (len(shape) - slope.ndim) + slope.shape
        if len(shape) < 2 or any(d != 1 for k, d in enumerate(aligned) if k != 1):
            return None
        return op, [float(v) for v in slope.reshape(-1)], [node], node.outputs[0]
    return None


_GEMM_ACTIVATIONS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "Clip"}


def fused_gemm_registered() -> bool:
    from ..registry import lookup
    return lookup(MS, "FusedGemm", 1) is not None


def fuse_activation(graph: Graph) -> Graph:
    """Conv/FusedConv/Gemm followed by an activation -> one fused node."""
    graph = graph.copy()
    conv_activations = kernel_support()[0]
    gemm_ops = fused_gemm_registered()
    changed = True
    while changed:
        changed = False
        uses = consumers(graph)
        for node in graph.nodes:
            is_gemm = node.domain == "" and node.op_type == "Gemm"
            if not (_is_conv(node) or is_gemm) or \
                    node.attrs.get("activation", "Identity") != "Identity" or \
                    node.outputs[0] in {v.name for v in graph.outputs}:
                continue
            readers = uses.get(node.outputs[0], [])
            if not readers:
                continue
            found = _activation_of(graph, readers[0], uses, node.outputs[0])
            if found is None:
                continue
            name, params, absorbed, output = found
            if is_gemm:
                if name not in _GEMM_ACTIVATIONS or not gemm_ops:
                    continue
                node.op_type, node.domain = "FusedGemm", MS
                node.attrs["activation"] = name
                for key, value in zip(("activation_alpha", "activation_beta"), params):
                    node.attrs[key] = value
            else:
                if name not in conv_activations:
                    continue
                _to_fused_conv(node)
                node.attrs["activation"] = name
                if params:
                    node.attrs["activation_params"] = params
            node.outputs = [output]
            for gone in absorbed:
                graph.nodes.remove(gone)
            graph.fusions.append(f"fused {name} into {node.op_type} {node.name!r}")
            changed = True
            break
    graph.opsets.setdefault(MS, 1)
    return graph
