"""Graph -> Graph rewrites run once at load (``InferenceSession(..., optimize=True)``).

Each pass takes a Graph and returns a new one (the input is left untouched), appending a line
per rewrite to ``graph.fusions`` (shown by ``cyconv profile``). Layout and fusion decisions
live here, never in kernels. Order matters:

1. remove Identity / inference Dropout      (exposes Conv -> BN -> Relu chains)
2. fold constants and static shape chains   (weights produced by Constant/Cast/... nodes),
   then Pads of zeros into the Conv / AveragePool reading them
3. fold BatchNormalization into Conv/Gemm, and Adds of per-channel constants into Conv biases
4. fuse residual Add into the Conv producing one of its operands
5. fuse activations into Conv / FusedConv / Gemm (HardSwish also when written out as
   x * Clip(x + 3, 0, 6) / 6 or x * HardSigmoid(x))
6. BatchNormalization -> Relu -> 1x1 Conv into one PreActivationConv (pre-activation nets)
7. simplify Transpose / Reshape chains
8. remove dead nodes
"""
from __future__ import annotations

from ..graph import Graph, topological_order
from .cleanup import remove_dead_nodes, remove_identities
from .fold_batchnorm import fold_batchnorm, fold_bias_add
from .fold_constants import fold_constants
from .fold_pad import fold_pads
from .fuse_conv import fuse_activation, fuse_preactivation, fuse_residual_add
from .transposes import simplify_data_movement

__all__ = ["optimize", "fold_constants", "fold_pads", "remove_identities", "remove_dead_nodes",
           "fold_batchnorm", "fold_bias_add", "fuse_residual_add", "fuse_activation",
           "fuse_preactivation", "simplify_data_movement"]


def optimize(graph: Graph, n_threads: int = 1) -> Graph:
    """All passes in order; the result is topologically sorted."""
    graph = remove_identities(graph)
    graph = fold_constants(graph, n_threads)
    graph = fold_pads(graph)
    graph = fold_batchnorm(graph)
    graph = fold_bias_add(graph)
    graph = fuse_residual_add(graph)
    graph = fuse_activation(graph)
    graph = fuse_preactivation(graph)
    graph = simplify_data_movement(graph)
    graph = remove_dead_nodes(graph)
    available = set(graph.constants) | {v.name for v in graph.inputs}
    graph.nodes = topological_order(graph.nodes, available)
    return graph
