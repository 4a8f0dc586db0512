"""The graph IR: plain data the importer produces and the session compiles.

A :class:`Graph` holds nodes in topological order, the graph's runtime inputs and outputs,
and the constant tensors (initializers and Constant nodes, already numpy arrays).
Names follow ONNX: a value is a string; ``""`` marks an omitted optional input.
"""
from __future__ import annotations

import heapq

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import ModelError


@dataclass
class ValueInfo:
    name: str
    dtype: Optional[np.dtype]          # None when the model does not say
    shape: Optional[tuple]             # per dim int | str (symbolic) | None; None = rank unknown
    onnx_type: str = "tensor(float)"   # ONNX Runtime's type string, e.g. "tensor(float)"


@dataclass
class Node:
    op_type: str
    name: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    domain: str = ""


@dataclass
class Graph:
    nodes: list
    inputs: list                       # ValueInfo of the values fed at run time
    outputs: list                      # ValueInfo of the graph outputs
    constants: dict                    # name -> read-only numpy array
    opsets: dict                       # domain ("" = ai.onnx) -> version
    value_shapes: dict = field(default_factory=dict)  # name -> static shape when inferred
    fusions: list = field(default_factory=list)       # what the optimizer did, for `profile`

    @property
    def opset(self) -> int:
        return self.opsets.get("", 1)

    def copy(self) -> "Graph":
        """A copy whose node list, nodes and tables can be rewritten without touching this one
        (constant arrays are shared: they are read-only)."""
        nodes = [Node(n.op_type, n.name, list(n.inputs), list(n.outputs), dict(n.attrs), n.domain)
                 for n in self.nodes]
        return Graph(nodes, list(self.inputs), list(self.outputs), dict(self.constants),
                     dict(self.opsets), dict(self.value_shapes), list(self.fusions))


def topological_order(nodes: list, available: set) -> list:
    """Nodes sorted so every input is produced before use (Kahn's algorithm, stable).

    ``available`` are the names defined before any node runs (graph inputs, constants).
    Raises ModelError naming the values nobody produces, or the nodes on a cycle.
    """
    producers = {}
    for node in nodes:
        for out in node.outputs:
            if out == "":
                continue
            if out in producers or out in available:
                raise ModelError(f"value {out!r} is produced more than once "
                                 f"(second time by node {node.name!r})")
            producers[out] = node
    missing = sorted({i for n in nodes for i in n.inputs
                      if i and i not in available and i not in producers})
    if missing:
        raise ModelError(f"values used but never defined (no graph input, initializer or "
                         f"node output): {', '.join(map(repr, missing))}")

    waiting = {id(n): sum(1 for i in set(n.inputs) if i and i in producers) for n in nodes}
    consumers = {}
    for node in nodes:
        for i in set(node.inputs):
            if i and i in producers:
                consumers.setdefault(i, []).append(node)
    # A heap keyed by the original position keeps the model's own order where it is valid.
    position = {id(n): k for k, n in enumerate(nodes)}
    ready = [position[id(n)] for n in nodes if waiting[id(n)] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for out in node.outputs:
            for consumer in consumers.get(out, ()):
                waiting[id(consumer)] -= 1
                if waiting[id(consumer)] == 0:
                    heapq.heappush(ready, position[id(consumer)])
    if len(order) != len(nodes):
        stuck = [n.name or n.op_type for n in nodes if waiting[id(n)] > 0]
        raise ModelError(f"the graph has a cycle through nodes: {', '.join(stuck[:10])}")
    return order
