"""Data-movement simplifications that are exact whatever the input values.

* ``Transpose(perm = identity)`` disappears.
* ``Transpose(Transpose(x, p), q)`` is one Transpose with perm ``p[q]``
  (output axis i of the pair reads input axis p[q[i]]); identity -> removed.
* ``Reshape(Reshape(x, s1), s2)`` is ``Reshape(x, s2)`` when s2 is a constant without 0
  entries (a 0 copies a dim of the *input*, which the merge would change).
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph
from ._rewrite import bypass, const, consumers, sole_consumer


def _perm(node, rank=None):
    perm = node.attrs.get("perm")
    if perm is None:
        return None if rank is None else list(range(rank))[::-1]
    return list(perm)


def simplify_data_movement(graph: Graph) -> Graph:
    graph = graph.copy()
    changed = True
    while changed:
        changed = False
        uses = consumers(graph)
        producer_of = {o: n for n in graph.nodes for o in n.outputs}
        for node in graph.nodes:
            if node.domain:
                continue
            if node.op_type == "Transpose":
                perm = _perm(node)
                if perm is not None and perm == sorted(perm):
                    if bypass(graph, node, node.inputs[0]):
                        graph.fusions.append(f"removed identity Transpose {node.name!r}")
                        changed = True
                        break
                first = producer_of.get(node.inputs[0])
                if first is not None and not first.domain and first.op_type == "Transpose" \
                        and sole_consumer(graph, uses, node.inputs[0]) is node:
                    p, q = _perm(first), _perm(node)
                    if p is None or q is None or len(p) != len(q):
                        continue
                    node.attrs["perm"] = [p[i] for i in q]
                    node.inputs = [first.inputs[0]]
                    graph.nodes.remove(first)
                    graph.fusions.append(f"merged Transposes {first.name!r} and {node.name!r}")
                    changed = True
                    break
            elif node.op_type == "Reshape" and len(node.inputs) == 2:
                target = const(graph, node.inputs[1])
                first = producer_of.get(node.inputs[0])
                if target is None or np.any(target == 0) or first is None or first.domain or \
                        first.op_type != "Reshape" or len(first.inputs) != 2 or \
                        sole_consumer(graph, uses, node.inputs[0]) is not node:
                    continue
                node.inputs = [first.inputs[0], node.inputs[1]]
                graph.nodes.remove(first)
                graph.fusions.append(f"merged Reshapes {first.name!r} and {node.name!r}")
                changed = True
                break
    return graph
