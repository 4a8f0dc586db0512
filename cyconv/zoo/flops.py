"""Floating-point operation count of a model: 2 x multiply-adds of its Conv, Gemm and MatMul nodes.

Only these dominate a CNN's cost; elementwise ops, pooling and normalisation are left out (as
in the usual GFLOP figures quoted for ResNet-50's "4.1 GMACs", i.e. 8.2 GFLOP).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference


def _with_input_shapes(model, input_shape):
    """Copy of ``model`` whose graph inputs have the fixed shapes given (name -> dims)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    init = {t.name for t in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in init]
    if not isinstance(input_shape, dict):
        if len(inputs) != 1:
            raise ValueError("the model has several inputs: pass a dict name -> shape")
        input_shape = {inputs[0].name: input_shape}
    for inp in inputs:
        if inp.name not in input_shape:
            continue
        dims = inp.type.tensor_type.shape.dim
        shape = list(input_shape[inp.name])
        if len(dims) != len(shape):
            raise ValueError(f"input {inp.name!r} has rank {len(dims)}, got shape {shape}")
        for d, size in zip(dims, shape):
            d.Clear()
            d.dim_value = int(size)
    # Stale intermediate shapes (for another input size) would conflict with the new ones.
    del m.graph.value_info[:]
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return m


def flops(model, input_shape):
    """Count 2 x multiply-adds of Conv, ConvTranspose, Gemm and MatMul for one input shape.

    Parameters
    ----------
    model : onnx.ModelProto
        The model (weights may be large; they are not touched).
    input_shape : sequence of int or dict
        Shape of the single input, e.g. ``(1, 3, 224, 224)``, or a dict input name -> shape.

    Returns
    -------
    int
        Floating-point operations of one ``run`` at that shape.

    Raises
    ------
    ValueError
        If a counted node's shapes cannot be inferred.
    """
    m = shape_inference.infer_shapes(_with_input_shapes(model, input_shape))
    shapes = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for t in m.graph.initializer:
        shapes[t.name] = tuple(t.dims)

    def shape_of(name, node):
        if name not in shapes:
            raise ValueError(f"{node.op_type} node {node.name!r}: shape of {name!r} unknown")
        return shapes[name]

    total = 0
    for node in m.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shape_of(node.input[1], node)
            # Conv: out (N, M, *spatial) x (C/group * prod(k)) MACs per output element.
            # ConvTranspose: every input element meets C_out/group * prod(k) weights.
            if node.op_type == "Conv":
                total += int(np.prod(shape_of(node.output[0], node))) * int(np.prod(w[1:]))
            else:
                total += int(np.prod(shape_of(node.input[0], node))) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            a = shape_of(node.input[0], node)
            out = shape_of(node.output[0], node)
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[0] if trans_a else a[1]
            total += out[0] * out[1] * k
        elif node.op_type == "MatMul":
            a = shape_of(node.input[0], node)
            out = shape_of(node.output[0], node)
            total += int(np.prod(out)) * a[-1]
    return 2 * total
