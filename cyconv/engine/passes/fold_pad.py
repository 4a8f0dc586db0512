"""Pad nodes that a Conv or AveragePool can do itself.

Exporters write explicit zero padding in two shapes: a Pad of all-zero pads in front of a
pool (PyTorch's TorchScript exporter at opset 9 does so for every ``avg_pool2d``: DenseNet-121
gets three), and a Pad of zeros in front of a Conv (TensorFlow's asymmetric "SAME" padding,
``nn.ZeroPad2d``). The first is an identity; the second is the Conv's own ``pads`` attribute,
which the conv kernels apply without writing a padded copy of the input (ONNX Runtime's
PadFusion does the same). An AveragePool that counts padding (``count_include_pad=1``) or has
no padding of its own takes zero spatial pads too: the padded zeros were counted as values.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph
from ._rewrite import attr_text, bypass, const, consumers, sole_consumer


def _zero_pads(graph: Graph, pad):
    """``pad``'s pads as ``[b_0 .. b_{r-1}, e_0 .. e_{r-1}]`` (ints), when it pads with
    constant zeros over every axis it names (None otherwise: reflect / edge modes, a
    non-zero or run-time value, run-time pads, or per-axis pads of opset 18's ``axes``)."""
    if attr_text(pad.attrs, "mode", "constant") != "constant":
        return None
    if graph.opset < 11:
        pads, value = pad.attrs.get("pads", pad.attrs.get("paddings")), pad.attrs.get("value", 0.0)
    else:
        pads = const(graph, pad.inputs[1]) if len(pad.inputs) > 1 and pad.inputs[1] else None
        value = 0.0
        if len(pad.inputs) > 2 and pad.inputs[2]:
            value = const(graph, pad.inputs[2])
            if value is None:
                return None
        if len(pad.inputs) > 3 and pad.inputs[3]:
            return None
    if pads is None or np.asarray(value).size > 1 or float(np.asarray(value)) != 0.0:
        return None
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) % 2 or any(p < 0 for p in pads):
        return None
    return pads


def _takes_spatial_pads(node) -> bool:
    """Whether ``node`` (reading the Pad's output as its input 0) can take zero pads on its
    spatial axes into its own ``pads``."""
    if node.domain or attr_text(node.attrs, "auto_pad", "NOTSET") != "NOTSET":
        return False
    if node.op_type == "Conv":
        return True
    if node.op_type == "AveragePool" and not node.attrs.get("ceil_mode", 0):
        # (with ceil_mode, a last window hanging past the pads divides differently)
        return bool(node.attrs.get("count_include_pad", 0)) or not any(node.attrs.get("pads", []))
    return False


def fold_pads(graph: Graph) -> Graph:
    """Remove Pads of all-zero pads; fold zero padding of the spatial axes into the Conv or
    AveragePool that alone reads it."""
    graph = graph.copy()
    for pad in [n for n in graph.nodes if n.op_type == "Pad" and not n.domain]:
        pads = _zero_pads(graph, pad)
        if pads is None or not pad.inputs or not pad.inputs[0]:
            continue
        if not any(pads):
            if bypass(graph, pad, pad.inputs[0]):
                graph.fusions.append(f"removed Pad {pad.name!r} (all pads zero)")
            continue
        rank = len(pads) // 2
        reader = sole_consumer(graph, consumers(graph), pad.outputs[0])
        if rank < 3 or any(pads[:2]) or any(pads[rank:rank + 2]) or reader is None or \
                reader.inputs[0] != pad.outputs[0] or not _takes_spatial_pads(reader):
            continue
        spatial = rank - 2
        own = [int(p) for p in reader.attrs.get("pads", [0] * (2 * spatial))]
        if len(own) != 2 * spatial:
            continue
        reader.attrs["pads"] = [own[i] + pads[2 + i] for i in range(spatial)] + \
            [own[spatial + i] + pads[rank + 2 + i] for i in range(spatial)]
        if reader.op_type == "AveragePool":
            reader.attrs["count_include_pad"] = 1
        reader.inputs[0] = pad.inputs[0]
        graph.nodes.remove(pad)
        graph.fusions.append(f"folded Pad {pad.name!r} into the pads of {reader.op_type} "
                             f"{reader.name!r}")
    return graph
