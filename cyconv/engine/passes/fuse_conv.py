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
from ._rewrite import (add_constant, attr_text, const, consumers, drop_unused_constants,
                       same_shape, sole_consumer)

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


def _may_match(graph: Graph, a: str, b: str) -> bool:
    """Shapes not provably different: same rank (or unknown) and no two known dims differ."""
    sa, sb = graph.value_shapes.get(a), graph.value_shapes.get(b)
    if b in graph.constants:
        return False                    # a per-channel bias, not a residual
    if sa is None or sb is None:
        return True
    return len(sa) == len(sb) and all(
        not (isinstance(x, int) and isinstance(y, int) and x != y) for x, y in zip(sa, sb))


def fuse_residual_add(graph: Graph) -> Graph:
    """Add(Conv(...), other) -> FusedConv(..., Z=other) when shapes provably match, or when
    they may (dims unknown at load): then the node carries cyconv_z_broadcast=1 and adds a Z
    of another shape under broadcasting at run time, as the Add did (ops/conv.py)."""
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
                    other == mine:
                continue
            proven = same_shape(graph, mine, other)
            if not proven and not _may_match(graph, mine, other):
                continue
            _to_fused_conv(conv)
            if not proven:
                conv.attrs["cyconv_z_broadcast"] = 1
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


def _scalar_is(graph: Graph, name: str, value: float) -> bool:
    c = const(graph, name)
    return c is not None and c.size == 1 and c.dtype.kind == "f" and \
        abs(float(c.reshape(())) - value) <= 1e-6 * abs(value)


def _clip_bounds(graph: Graph, clip: Node):
    """(lo, hi) of a Clip with constant bounds (attributes before opset 11), or None."""
    if graph.opsets.get("", 1) < 11:
        return (float(clip.attrs.get("min", -3.4028234663852886e38)),
                float(clip.attrs.get("max", 3.4028234663852886e38)))
    bounds = []
    for k, default in ((1, -np.inf), (2, np.inf)):
        name = clip.inputs[k] if len(clip.inputs) > k else ""
        value = const(graph, name)
        if name and (value is None or value.size != 1):
            return None
        bounds.append(float(value.reshape(())) if name else default)
    return tuple(bounds)


def _decomposed_hardswish(graph: Graph, uses: dict, x: str):
    """HardSwish written out by exporters (PaddlePaddle, older PyTorch), as _activation_of:

        Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)    (or Mul(..., 1/6))
        Mul(x, HardSigmoid(x, alpha=1/6, beta=1/2))

    x must feed exactly the pattern's two nodes, and every value inside it one reader."""
    readers = uses.get(x, [])
    if len(readers) != 2 or any(r.domain for r in readers):
        return None
    ops = {r.op_type: r for r in readers}
    mul = ops.get("Mul")
    if mul is None or len(ops) != 2 or len(mul.inputs) != 2:
        return None
    other = mul.inputs[1] if mul.inputs[0] == x else mul.inputs[0]
    gate = next((r for r in readers if r is not mul), None)
    if gate.outputs[0] != other:
        # Add -> Clip -> Mul: the Mul reads the Clip's output, not the Add's
        if gate.op_type != "Add" or len(gate.inputs) != 2:
            return None
        three = gate.inputs[1] if gate.inputs[0] == x else gate.inputs[0]
        clip = sole_consumer(graph, uses, gate.outputs[0])
        if not _scalar_is(graph, three, 3.0) or clip is None or clip.domain or \
                clip.op_type != "Clip" or clip.outputs[0] != other or \
                _clip_bounds(graph, clip) != (0.0, 6.0):
            return None
        chain = [gate, clip, mul]
    elif gate.op_type == "HardSigmoid" and \
            abs(float(gate.attrs.get("alpha", 0.2)) - 1 / 6) < 1e-6 and \
            abs(float(gate.attrs.get("beta", 0.5)) - 0.5) < 1e-6:
        return "HardSwish", [], [gate, mul], mul.outputs[0]
    else:
        return None
    if sole_consumer(graph, uses, other) is not mul:
        return None
    scale = sole_consumer(graph, uses, mul.outputs[0])
    if scale is None or scale.domain or len(scale.inputs) != 2 or \
            scale.inputs[0] != mul.outputs[0] or not (
                (scale.op_type == "Div" and _scalar_is(graph, scale.inputs[1], 6.0)) or
                (scale.op_type == "Mul" and _scalar_is(graph, scale.inputs[1], 1 / 6))):
        return None
    return "HardSwish", [], chain + [scale], scale.outputs[0]


def _activation_of(graph: Graph, node: Node, uses: dict, x: str):
    """(name, params, nodes consumed, output) if ``node`` applies an activation to ``x``."""
    hardswish = _decomposed_hardswish(graph, uses, x)
    if hardswish is not None:
        return hardswish
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
        bounds = _clip_bounds(graph, node)
        if bounds is None:
            return None
        return op, [float(bounds[0]), float(bounds[1])], [node], node.outputs[0]
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


CYCONV = "ai.cyconv"


def _pointwise_conv(graph: Graph, node: Node):
    """W of a Conv/FusedConv that reads its input as is (1x1, stride 1, no padding, one
    group, constant 4-D weights), or None."""
    if not _is_conv(node) or len(node.inputs) < 2:
        return None
    w = const(graph, node.inputs[1])
    attrs = node.attrs
    if w is None or w.ndim != 4 or w.shape[2:] != (1, 1) or int(attrs.get("group", 1)) != 1:
        return None
    if any(int(v) != 1 for v in attrs.get("strides", ()) or ()) or \
            any(int(v) != 1 for v in attrs.get("dilations", ()) or ()) or \
            any(int(v) != 0 for v in attrs.get("pads", ()) or ()):
        return None
    return w if attr_text(attrs, "auto_pad", "NOTSET") in ("NOTSET", "VALID") else None


def fuse_preactivation(graph: Graph) -> Graph:
    """BatchNormalization -> Relu -> 1x1 Conv (pre-activation networks: DenseNet, ResNet v2)
    -> one ai.cyconv PreActivationConv, which applies relu(s*x + t) per channel while the
    GEMM packs x: neither the normalised nor the rectified tensor is written. The BN cannot
    fold into the Conv's weights because the Relu sits between them."""
    from ..registry import lookup
    from .fold_batchnorm import bn_affine
    graph = graph.copy()
    if lookup(CYCONV, "PreActivationConv", 1) is None:
        return graph
    producer_of = {o: n for n in graph.nodes for o in n.outputs}
    uses = consumers(graph)
    for conv in list(graph.nodes):
        w = _pointwise_conv(graph, conv)
        relu = producer_of.get(conv.inputs[0]) if w is not None else None
        if relu is None or relu.domain or relu.op_type != "Relu" or \
                sole_consumer(graph, uses, relu.outputs[0]) is not conv:
            continue
        bn = producer_of.get(relu.inputs[0])
        affine = bn_affine(graph, bn) if bn is not None else None
        if affine is None or sole_consumer(graph, uses, bn.outputs[0]) is not relu or \
                affine[0].shape != (w.shape[1],):
            continue
        s, t = affine
        inputs = (list(conv.inputs) + ["", ""])[:4]
        inputs[0] = bn.inputs[0]
        inputs += [add_constant(graph, f"{bn.name}_scale", s.astype(np.float32)),
                   add_constant(graph, f"{bn.name}_shift", t.astype(np.float32))]
        conv.inputs = inputs
        conv.attrs.setdefault("activation", "Identity")
        conv.op_type, conv.domain = "PreActivationConv", CYCONV
        graph.nodes.remove(relu)
        graph.nodes.remove(bn)
        graph.fusions.append(f"applied BatchNormalization {bn.name!r} and Relu "
                             f"{relu.name!r} while Conv {conv.name!r} packs its input")
        uses = consumers(graph)
        producer_of = {o: n for n in graph.nodes for o in n.outputs}
    graph.opsets.setdefault(CYCONV, 1)
    drop_unused_constants(graph)
    return graph
