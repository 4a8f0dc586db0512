"""Floating-point operation count of a model: 2 x multiply-adds of its Conv, Gemm and MatMul nodes.

Only these dominate a CNN's cost; elementwise ops, pooling and normalisation are left out (as
in the usual GFLOP figures quoted for ResNet-50's "4.1 GMACs", i.e. 8.2 GFLOP).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference


# Initializers larger than this are replaced by typed graph inputs in the copy that shape
# inference sees: only their shapes matter, and copying VGG-16's 550 MB would dominate.
_KEEP_BYTES = 4096


def _with_input_shapes(model, input_shape):
    """Weightless copy of ``model`` whose graph inputs have the shapes given (name -> dims)."""
    # Copy field by field, leaving out the large initializers (no copy, no mutation of them):
    # the small ones stay (constant shapes for Reshape and the like), the large ones become
    # typed inputs of their shape.
    m = onnx.ModelProto(ir_version=model.ir_version)
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    src, dst = model.graph, m.graph
    dst.name = src.name
    for field in ("node", "input", "output", "value_info"):
        getattr(dst, field).extend(getattr(src, field))
    declared = {i.name for i in src.input}
    for t in src.initializer:
        if _nbytes(t) <= _KEEP_BYTES:
            dst.initializer.append(t)
        elif t.name not in declared:
            dst.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    init = {t.name for t in model.graph.initializer}
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


def _nbytes(tensor):
    return len(tensor.raw_data) or 4 * int(np.prod(tensor.dims))


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
    m = shape_inference.infer_shapes(_with_input_shapes(model, input_shape), data_prop=True)
    shapes = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        known_rank = vi.type.tensor_type.HasField("shape")
        if known_rank and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for t in model.graph.initializer:
        shapes[t.name] = tuple(t.dims)

    # Element counts survive where shapes do not: ONNX's data propagation stops at a Cast in
    # a Shape -> Slice -> Cast -> Concat -> Reshape chain (PaddlePaddle's exports), yet a
    # reshape keeps the count, and a MatMul by a constant (K, N) matrix costs numel(A) * N.
    numel = {name: int(np.prod(shape)) for name, shape in shapes.items()}

    def shape_of(name, node):
        if name not in shapes:
            raise ValueError(f"{node.op_type} node {node.name!r}: shape of {name!r} unknown")
        return shapes[name]

    total = 0
    for node in m.graph.node:
        op = node.op_type
        if op in _COUNT_KEEPING and node.input[0] in numel:
            for out in node.output[:1]:
                numel.setdefault(out, numel[node.input[0]])
        if op in ("Conv", "ConvTranspose"):
            w = shape_of(node.input[1], node)
            # Conv: out (N, M, *spatial) x (C/group * prod(k)) MACs per output element.
            # ConvTranspose: every input element meets C_out/group * prod(k) weights.
            if op == "Conv":
                total += numel[node.output[0]] * int(np.prod(w[1:])) if node.output[0] in numel \
                    else int(np.prod(shape_of(node.output[0], node))) * int(np.prod(w[1:]))
            else:
                total += int(np.prod(shape_of(node.input[0], node))) * int(np.prod(w[1:]))
        elif op in ("Gemm", "MatMul"):
            a, b = node.input[0], node.input[1]
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            trans_b = any(at.name == "transB" and at.i for at in node.attribute)
            if a in shapes and node.output[0] in shapes:
                k = shapes[a][-2] if trans_a else shapes[a][-1]
                total += int(np.prod(shapes[node.output[0]])) * k
            elif a in numel and b in shapes and len(shapes[b]) == 2 and not trans_a:
                n = shapes[b][0] if trans_b else shapes[b][1]
                k = shapes[b][1] if trans_b else shapes[b][0]
                total += numel[a] * n
                numel.setdefault(node.output[0], numel[a] // k * n)
            else:
                shape_of(a, node)  # raises: nothing known to count with
    return 2 * total


# Ops whose (first) output has as many elements as their first input.
_COUNT_KEEPING = {"Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze", "Transpose",
                  "Dropout", "Softmax", "Relu", "Clip", "Cast", "Add", "Mul", "Sigmoid",
                  "BatchNormalization", "PRelu", "HardSigmoid", "LeakyRelu", "Tanh"}
