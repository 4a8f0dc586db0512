"""Remove nodes that compute nothing at inference: Identity, inference-mode Dropout, dead nodes."""
from __future__ import annotations

from ..graph import Graph
from ._rewrite import bypass, consumers, const, drop_unused_constants, graph_output_names


def remove_identities(graph: Graph) -> Graph:
    """Identity and inference Dropout (mask unused, training_mode absent or constant False)."""
    graph = graph.copy()
    for node in list(graph.nodes):
        if node.domain:
            continue
        if node.op_type == "Identity":
            removable = True
        elif node.op_type == "Dropout":
            training = const(graph, node.inputs[2]) if len(node.inputs) > 2 else None
            training_off = len(node.inputs) <= 2 or not node.inputs[2] or \
                (training is not None and not bool(training))
            mask_unused = len(node.outputs) < 2 or not node.outputs[1] or \
                (node.outputs[1] not in consumers(graph) and
                 node.outputs[1] not in graph_output_names(graph))
            removable = training_off and mask_unused
        else:
            continue
        if removable and node.inputs and node.inputs[0]:
            if bypass(graph, node, node.inputs[0]):
                graph.fusions.append(f"removed {node.op_type} {node.name!r}")
    return graph


def remove_dead_nodes(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output (walking backwards)."""
    graph = graph.copy()
    live = graph_output_names(graph)
    kept = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(i for i in node.inputs if i)
        else:
            graph.fusions.append(f"removed dead {node.op_type} {node.name!r}")
    graph.nodes = kept[::-1]
    drop_unused_constants(graph)
    return graph
