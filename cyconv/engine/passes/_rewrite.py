"""Small helpers shared by the graph passes: who consumes a value, renaming, constant lookup."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..graph import Graph, Node


def consumers(graph: Graph) -> dict:
    """value name -> list of nodes reading it (a node reading twice appears twice)."""
    table = defaultdict(list)
    for node in graph.nodes:
        for name in node.inputs:
            if name:
                table[name].append(node)
    return table


def graph_output_names(graph: Graph) -> set:
    return {v.name for v in graph.outputs}


def sole_consumer(graph: Graph, uses: dict, value: str):
    """The one node reading ``value``, or None if several do or it is a graph output."""
    readers = uses.get(value, [])
    if len(readers) != 1 or value in graph_output_names(graph):
        return None
    return readers[0]


def rename_uses(graph: Graph, old: str, new: str) -> None:
    """Every reader of ``old`` reads ``new`` instead (graph outputs keep their names)."""
    for node in graph.nodes:
        node.inputs = [new if name == old else name for name in node.inputs]


def bypass(graph: Graph, node: Node, keep_input: str) -> bool:
    """Remove a pass-through node (Identity-like) by rewiring its readers to its input.

    When the node's output is a graph output, the producer of the input is renamed instead,
    unless that input is itself a graph input, an output or a constant (then keep the node).
    """
    out = node.outputs[0]
    if out in graph_output_names(graph):
        producer = next((n for n in graph.nodes if keep_input in n.outputs), None)
        if producer is None or keep_input in graph_output_names(graph) or \
                len(consumers(graph).get(keep_input, [])) != 1:
            return False
        producer.outputs = [out if o == keep_input else o for o in producer.outputs]
        graph.nodes.remove(node)
        return True
    graph.nodes.remove(node)
    rename_uses(graph, out, keep_input)
    return True


def attr_text(attrs: dict, name: str, default: str) -> str:
    """A string attribute (ONNX gives bytes) as str, or ``default`` when absent."""
    value = attrs.get(name)
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def const(graph: Graph, name: str):
    """The constant array named ``name`` or None."""
    return graph.constants.get(name) if name else None


def add_constant(graph: Graph, hint: str, value: np.ndarray) -> str:
    """Store a new read-only constant under a fresh name derived from ``hint``."""
    name, k = f"{hint}", 0
    while name in graph.constants or any(name in n.outputs for n in graph.nodes):
        k += 1
        name = f"{hint}_{k}"
    value = np.array(value, copy=True)
    value.flags.writeable = False
    graph.constants[name] = value
    return name


def drop_unused_constants(graph: Graph) -> None:
    used = {i for n in graph.nodes for i in n.inputs} | graph_output_names(graph)
    for name in [n for n in graph.constants if n not in used]:
        del graph.constants[name]


def static_shape(graph: Graph, name: str):
    """The fully known shape of a value (tuple of ints) or None."""
    if name in graph.constants:
        return tuple(graph.constants[name].shape)
    shape = graph.value_shapes.get(name)
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return tuple(shape)


def same_shape(graph: Graph, a: str, b: str) -> bool:
    """True when two values provably have the same shape (equal ints or equal symbols)."""
    sa, sb = graph.value_shapes.get(a), graph.value_shapes.get(b)
    if a in graph.constants:
        sa = tuple(graph.constants[a].shape)
    if b in graph.constants:
        sb = tuple(graph.constants[b].shape)
    if sa is None or sb is None or len(sa) != len(sb):
        return False
    return all(x is not None and x == y for x, y in zip(sa, sb))
