"""ONNX ModelProto -> cyconv Graph.

Only translation and validation happen here: attributes become Python values, initializers and
Constant tensors become read-only numpy arrays (through the safety checks of ``model_io``), the
nodes are put in topological order. Opset-dependent semantics live in each op's builder, which
receives the model's opset (``cyconv/ops``), not here.
"""
from __future__ import annotations

import onnx
from onnx import AttributeProto

from ..engine.graph import Graph, Node, ValueInfo, topological_order
from ..errors import ModelError
from .model_io import ConstantBudget, load_model, numpy_dtype, tensor_to_array

ONNX_DOMAINS = ("", "ai.onnx")


def import_model(model) -> Graph:
    """``model`` (path | bytes | ModelProto) -> validated :class:`Graph`."""
    proto, base_dir = load_model(model)
    # A proto we parsed ourselves can give up each tensor's bytes once converted, so the file's
    # weights are not held twice while the session is built.
    return import_proto(proto, base_dir, release_tensors=not isinstance(model, onnx.ModelProto))


def import_proto(proto: onnx.ModelProto, base_dir=None, release_tensors=False) -> Graph:
    opsets = {}
    for entry in proto.opset_import:
        domain = "" if entry.domain in ONNX_DOMAINS else entry.domain
        opsets[domain] = int(entry.version)
    if "" not in opsets:
        if proto.ir_version and proto.ir_version < 3:
            opsets[""] = 1
        else:
            raise ModelError("model declares no ai.onnx opset (opset_import is empty)")
    if proto.graph.sparse_initializer:
        raise ModelError("sparse initializers are not supported")

    inferred = _infer_value_infos(proto)   # before release_tensors empties the weights
    budget = ConstantBudget()
    graph = proto.graph
    constants = {}
    for tensor in graph.initializer:
        if not tensor.name:
            raise ModelError("an initializer has no name")
        constants[tensor.name] = tensor_to_array(tensor, base_dir, budget)
        if release_tensors:
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")

    inputs = [_value_info(v) for v in graph.input if v.name not in constants]
    outputs = [_value_info(v) for v in graph.output]
    if not outputs:
        raise ModelError("the graph declares no outputs")

    nodes = []
    for index, proto_node in enumerate(graph.node):
        domain = "" if proto_node.domain in ONNX_DOMAINS else proto_node.domain
        name = proto_node.name or f"{proto_node.op_type}_{index}"
        attrs = {a.name: _attribute_value(a, name, base_dir, budget)
                 for a in proto_node.attribute}
        nodes.append(Node(proto_node.op_type, name, list(proto_node.input),
                          list(proto_node.output), attrs, domain))

    available = set(constants) | {v.name for v in inputs}
    nodes = topological_order(nodes, available)
    produced = available | {o for n in nodes for o in n.outputs}
    missing = [v.name for v in outputs if v.name not in produced]
    if missing:
        raise ModelError(f"graph outputs never produced: {', '.join(missing)}")

    # Shapes come only from inference over the declared inputs: value_info and output shapes
    # written in the file may be stale (exporters that mark only the inputs dynamic), and the
    # optimizer folds Shape ops from these.
    value_shapes = {}
    for v in inferred + list(graph.input):
        info = _value_info(v)
        if info.shape is not None:
            value_shapes[v.name] = info.shape
    # Outputs the model leaves untyped get what inference found (as ORT reports them).
    for k, info in enumerate(outputs):
        if info.shape is None or info.dtype is None:
            found = next((v for v in inferred if v.name == info.name), None)
            if found is not None:
                outputs[k] = _value_info(found)
    return Graph(nodes, inputs, outputs, constants, opsets, value_shapes)


# Sizes by element count, never ByteSize(): upb computes that by serializing the message,
# which for a whole model allocates twice its weights (ResNet-50's import peaked there).
_SMALL_CONSTANT_ELEMENTS = 1024          # initializers shape inference sees with their values
_SMALL_MODEL_ELEMENTS = 1 << 18          # below this, inference sees a plain copy of the model


def _elements(tensor) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def _initializer_elements(proto) -> int:
    return sum(_elements(t) for t in proto.graph.initializer)


def _infer_value_infos(proto: onnx.ModelProto) -> list:
    """Static types/shapes of every value, from ONNX's shape inference (best effort).

    Inference runs on a light copy: large initializers keep their dims but not their bytes
    (shape rules only need the values of small ones, e.g. Reshape targets). Models onnx cannot
    infer still run: their shapes are simply unknown until run time.
    """
    light = onnx.ModelProto()
    if _initializer_elements(proto) < _SMALL_MODEL_ELEMENTS:
        light.CopyFrom(proto)
    else:
        _copy_without_weights(proto, light)
    del light.graph.value_info[:]
    for output in light.graph.output:   # keep name and element type, forget the shape
        output.type.tensor_type.ClearField("shape")
    try:
        light = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:  # onnx raises several types on models it cannot infer
        return []
    return list(light.graph.value_info) + list(light.graph.output)


def _copy_without_weights(proto, light):
    light.ir_version = proto.ir_version
    light.opset_import.extend(proto.opset_import)
    graph = light.graph
    graph.node.extend(proto.graph.node)
    graph.input.extend(proto.graph.input)
    graph.output.extend(proto.graph.output)
    for tensor in proto.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL and \
                _elements(tensor) <= _SMALL_CONSTANT_ELEMENTS:
            graph.initializer.append(tensor)
        else:  # declare it as a typed input instead: same shape information, no bytes
            graph.input.append(onnx.helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
    return light


def _value_info(v: onnx.ValueInfoProto) -> ValueInfo:
    kind = v.type.WhichOneof("value")
    if kind != "tensor_type":
        # Sequences/maps/optionals are outside the CNN op set.
        return ValueInfo(v.name, None, None, f"{kind or 'unknown'}")
    tensor_type = v.type.tensor_type
    dtype = None
    type_string = "tensor(unknown)"
    if tensor_type.elem_type:
        dtype = numpy_dtype(tensor_type.elem_type, f"value {v.name!r}")
        type_string = f"tensor({_ORT_TYPE_NAMES.get(tensor_type.elem_type, 'unknown')})"
    shape = None
    if tensor_type.HasField("shape"):
        shape = []
        for d in tensor_type.shape.dim:
            if d.HasField("dim_value"):
                # Some exporters (Paddle) write -1 for a dynamic dimension: unknown, as in ORT.
                shape.append(int(d.dim_value) if d.dim_value >= 0 else None)
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
        shape = tuple(shape)
    return ValueInfo(v.name, dtype, shape, type_string)


# ONNX Runtime's names in NodeArg.type, e.g. "tensor(float)".
_ORT_TYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float", onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.INT16: "int16", onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.STRING: "string",
    onnx.TensorProto.BOOL: "bool", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "double", onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64", onnx.TensorProto.BFLOAT16: "bfloat16",
}


def _attribute_value(attr: AttributeProto, node_name: str, base_dir, budget):
    t = attr.type
    if t == AttributeProto.FLOAT:
        return float(attr.f)
    if t == AttributeProto.INT:
        return int(attr.i)
    if t == AttributeProto.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if t == AttributeProto.TENSOR:
        return tensor_to_array(attr.t, base_dir, budget)
    if t == AttributeProto.FLOATS:
        return [float(x) for x in attr.floats]
    if t == AttributeProto.INTS:
        return [int(x) for x in attr.ints]
    if t == AttributeProto.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in attr.strings]
    if t == AttributeProto.UNDEFINED and attr.ref_attr_name:
        raise ModelError(f"node {node_name!r}: attribute references are only valid in functions")
    # Graphs (If/Loop/Scan), sparse tensors, type protos: ops that need them are unsupported
    # and are reported as such; keep the raw proto.
    return onnx.helper.get_attribute_value(attr)
