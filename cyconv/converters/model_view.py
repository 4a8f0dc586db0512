"""Read-only lookups over an ONNX graph shared by the model rewrites (fc_to_conv, receptive_field).

``ModelView`` answers the questions a rewrite asks of a node's neighbourhood: who produces a
tensor, who consumes it, is it a constant (and what value), what is its static shape when the
image input has a given size. Shapes come from ONNX's shape inference run once on a weightless
copy (large initializers become typed inputs: only their dims matter, and copying VGG-16's
550 MB of weights for inference would dominate the conversion time).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError

# Initializers above this many elements become typed inputs in the copy shape inference sees.
_SMALL_ELEMENTS = 1024


def attributes(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values (ints, floats, lists, arrays for tensors)."""
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) \
            else value
    return out


def node_label(node: onnx.NodeProto) -> str:
    """``Op 'name'`` (or the first output when the node is unnamed), for error messages."""
    return f"{node.op_type} {node.name or node.output[0]!r}"


def weightless_copy(model: onnx.ModelProto, replace_inputs=None) -> onnx.ModelProto:
    """Copy of ``model`` whose large initializers are typed graph inputs (dims, no bytes).

    What shape inference and the checker need, at a fraction of the cost of copying the
    weights. ``replace_inputs``: name -> ValueInfoProto to declare instead of the input.
    """
    replace_inputs = replace_inputs or {}
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    src, dst = model.graph, light.graph
    dst.name = src.name
    dst.node.extend(src.node)
    dst.output.extend(src.output)
    declared = {i.name for i in src.input}
    dst.input.extend(replace_inputs.get(v.name, v) for v in src.input)
    for tensor in src.initializer:
        # (element count, not ByteSize(): upb computes that by serializing 100s of MB)
        if tensor.data_location != onnx.TensorProto.EXTERNAL and \
                int(np.prod(tensor.dims)) <= _SMALL_ELEMENTS:
            dst.initializer.append(tensor)
        elif tensor.name not in declared:
            dst.input.append(helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
    return light


class ModelView:
    """Producers, consumers, constants and static shapes of ``model``'s main graph.

    Parameters
    ----------
    model : onnx.ModelProto
        Not modified.
    """

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        graph = model.graph
        self.opset = next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")),
                          1)
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {}
        self.consumers = defaultdict(list)
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self._cache = {}

    # ------------------------------------------------------------------ inputs
    def image_input(self) -> onnx.ValueInfoProto:
        """The single non-initializer input, which must be rank 4 (N, C, H, W)."""
        inputs = [i for i in self.model.graph.input if i.name not in self.initializers]
        if len(inputs) != 1:
            raise ModelError(f"expected one image input (N, C, H, W), the model has "
                             f"{len(inputs)}: {', '.join(i.name for i in inputs)}")
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) != 4:
            raise ModelError(f"input {inputs[0].name!r} has rank {len(dims)}; expected an "
                             "image batch (N, C, H, W)")
        return inputs[0]

    # ------------------------------------------------------------------ constants
    def constant(self, name: str):
        """Value of an initializer or Constant-node output as an array, else None."""
        if not name:
            return None
        if name in self._cache:
            return self._cache[name]
        value = None
        if name in self.initializers:
            tensor = self.initializers[name]
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise ModelError(f"initializer {name!r} is stored as external data: load the "
                                 "model with onnx.load(path) first so its weights are in memory")
            value = numpy_helper.to_array(tensor)
        elif name in self.producer and self.producer[name].op_type == "Constant":
            attrs = attributes(self.producer[name])
            for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
                if key in attrs:
                    value = np.asarray(attrs[key])
                    break
        self._cache[name] = value
        return value

    # ------------------------------------------------------------------ flatten patterns
    def reshape_target(self, shape_name, data):
        """Reshape's target as a list whose entries are ints or "batch" (data's dim 0 read at
        run time, the exporter's Shape->Gather(0)->Unsqueeze chain), else None."""
        const = self.constant(shape_name)
        if const is not None:
            return [int(v) for v in np.asarray(const).reshape(-1)]
        node = self.producer.get(shape_name)
        if node is None or node.op_type != "Concat":
            return None
        parts = []
        for part in node.input:
            const = self.constant(part)
            if const is not None:
                parts.extend(int(v) for v in np.asarray(const).reshape(-1))
            elif self.is_batch_of(part, data):
                parts.append("batch")
            else:
                return None
        return parts

    def is_batch_of(self, name, data) -> bool:
        """``name`` = [data.shape[0]] via Unsqueeze(Gather(Shape(x), 0)) or Slice(Shape(x), 0, 1)
        where x is ``data`` or a Transpose of it that keeps axis 0."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Unsqueeze":
            node = self.producer.get(node.input[0])
            if node is None or node.op_type != "Gather" or \
                    attributes(node).get("axis", 0) != 0 or \
                    self.constant(node.input[1]) is None or \
                    int(np.asarray(self.constant(node.input[1])).reshape(-1)[0]) != 0:
                return False
        elif node is not None and node.op_type == "Slice":
            starts, ends = self.constant(node.input[1]), self.constant(node.input[2])
            if starts is None or ends is None or list(np.reshape(starts, -1)) != [0] or \
                    list(np.reshape(ends, -1)) != [1]:
                return False
        else:
            return False
        shape = self.producer.get(node.input[0])
        if shape is None or shape.op_type != "Shape" or attributes(shape).get("start", 0):
            return False
        return self._batch_root(shape.input[0]) == self._batch_root(data)

    def _batch_root(self, name):
        """Follow Transposes that keep axis 0 upwards: they all share dim 0 with ``name``."""
        node = self.producer.get(name)
        while node is not None and node.op_type == "Transpose" and \
                list(attributes(node).get("perm", [1]))[0] == 0:
            name = node.input[0]
            node = self.producer.get(name)
        return name

    # ------------------------------------------------------------------ shapes
    def shapes(self, input_dims) -> dict:
        """Static shapes (tuples of int, None where unknown) with the image input set to
        ``input_dims`` (N may be a str, e.g. the model's own symbolic batch)."""
        image = self.image_input()
        light = weightless_copy(self.model, {image.name: helper.make_tensor_value_info(
            image.name, image.type.tensor_type.elem_type, list(input_dims))})
        for out in light.graph.output:   # name and type only: the file's shapes may be stale
            out.type.tensor_type.ClearField("shape")
        try:
            light = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
        except Exception as exc:  # onnx raises several types
            raise ModelError(f"ONNX shape inference failed at input {list(input_dims)}: "
                             f"{exc}") from None
        shapes = {}
        for value in list(light.graph.input) + list(light.graph.value_info) + \
                list(light.graph.output):
            t = value.type.tensor_type
            if t.HasField("shape"):
                shapes[value.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else
                    (d.dim_param if d.HasField("dim_param") else None) for d in t.shape.dim)
        return shapes
