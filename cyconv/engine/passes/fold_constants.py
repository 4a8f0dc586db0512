"""Constant and shape-subgraph folding.

* A node whose inputs are all constants is evaluated once, here, with its own kernel.
* ``Shape(x)`` becomes a constant when x's shape is fully known; when only some dims are
  known, ``Gather(Shape(x), k)`` / ``Shape(x, start, end)`` still fold if the dims they pick
  are known. This turns exporters' ``x.view(x.size(0) ...)`` chains into constants wherever
  the batch dim is not involved, so Reshape/Resize builders see constant targets.
"""
from __future__ import annotations

import numpy as np

from ...errors import CyconvError, ModelError
from ..registry import NodeContext, RunContext, build_with_attrs, lookup
from ._rewrite import drop_unused_constants

# Outputs larger than this stay computed at run time (folding them would only hold memory
# for the session's life, e.g. a ConstantOfShape feeding an Expand).
FOLD_LIMIT_BYTES = 64 << 20

# Ops whose output is not a function of the inputs alone.
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}


def fold_constants(graph, n_threads: int = 1):
    graph = graph.copy()
    kept = []
    for node in graph.nodes:
        value = _static_shape_value(graph, node)
        if value is not None:
            _store(graph, node.outputs[0], value)
            graph.fusions.append(f"folded {node.op_type} {node.name!r} from static shapes")
            continue
        if node.op_type in _NONDETERMINISTIC or node.domain or \
                any(i and i not in graph.constants for i in node.inputs) or \
                (node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2]):
            kept.append(node)
            continue
        outputs = _evaluate(graph, node, n_threads)
        if outputs is None:
            kept.append(node)
            continue
        for name, value in zip(node.outputs, outputs):
            if name:
                _store(graph, name, value)
    graph.nodes = kept
    drop_unused_constants(graph)
    return graph


def _store(graph, name, value):
    value = np.array(value, copy=True)
    value.flags.writeable = False
    graph.constants[name] = value
    graph.value_shapes[name] = tuple(value.shape)


def _evaluate(graph, node, n_threads):
    spec = lookup(node.domain, node.op_type, graph.opsets.get(node.domain, 0))
    if spec is None:
        return None
    args = [graph.constants[i] if i else None for i in node.inputs]
    ctx = NodeContext(node.op_type, node.name, graph.opsets[node.domain], tuple(args),
                      len(node.inputs), len(node.outputs), tuple(node.inputs),
                      tuple(node.outputs))
    run = build_with_attrs(spec, ctx, node.attrs)
    while args and args[-1] is None:
        args.pop()
    try:
        result = run(RunContext(n_threads), *args)
    except CyconvError:
        raise
    except (ValueError, IndexError, TypeError) as exc:
        raise ModelError(f"{node.op_type} node {node.name!r} fails on its constant "
                         f"inputs: {exc}") from exc
    if type(result) is not tuple and type(result) is not list:
        result = (result,)
    if sum(np.asarray(r).nbytes for r in result) > FOLD_LIMIT_BYTES:
        return None
    return [np.asarray(r) for r in result]


def _static_shape_value(graph, node):
    """The value of Shape(x) / Gather(Shape(x), k) when the dims involved are known."""
    if node.domain:
        return None
    if node.op_type == "Shape":
        shape = graph.value_shapes.get(node.inputs[0])
        if shape is None or node.inputs[0] in graph.constants:
            return None
        rank = len(shape)
        start = node.attrs.get("start", 0)
        end = node.attrs.get("end", rank)
        start, end = (max(0, min(rank, s + rank if s < 0 else s)) for s in (start, end))
        dims = shape[start:end]
        if all(isinstance(d, int) for d in dims):
            return np.array(dims, dtype=np.int64)
        return None
    if node.op_type == "Gather" and node.inputs[1] in graph.constants:
        producer = next((n for n in graph.nodes if node.inputs[0] in n.outputs), None)
        if producer is None or producer.op_type != "Shape" or producer.domain or \
                producer.attrs.get("start", 0) != 0 or "end" in producer.attrs:
            return None
        shape = graph.value_shapes.get(producer.inputs[0])
        index = graph.constants[node.inputs[1]]
        if shape is None or node.attrs.get("axis", 0) not in (0, -1) or \
                index.dtype.kind not in "iu":
            return None
        rank = len(shape)
        flat = [int(k) + rank if int(k) < 0 else int(k) for k in index.reshape(-1)]
        if any(not 0 <= k < rank or not isinstance(shape[k], int) for k in flat):
            return None
        return np.array([shape[k] for k in flat], dtype=np.int64).reshape(index.shape)
    return None
