"""FC -> conv: rewrite a classifier's fully-connected head as convolutions so it slides.

A fully-connected layer over a flattened (C, H, W) feature map is a convolution with a
(C, H, W) kernel that has exactly one valid position; later FC layers over a K-vector are 1x1
convolutions. Written that way the network accepts larger images and returns a map of scores,
one per window position, equal to (or, with padding, close to) running the crops one by one
while sharing all their overlapping work (OverFeat; CS231n "Converting FC layers to CONV").

The rewrite walks the graph once, in order, tracking the tensors of the head:

    Flat(src, chw, perm)   (N, F) = flatten of the 4-D map ``src`` (native (C, H, W)), possibly
                           through a Transpose ``perm`` (MTCNN flattens NWHC); F = C*H*W
    Vec(rank)              (N, K) or (N, K, 1, 1) natively; (N, K, h, w) once converted

and rewrites each node that touches them:

    Flatten / Reshape(N,-1) [Transpose]   -> nothing (the map itself is the new tensor)
    Gemm / MatMul on Flat                 -> Conv, kernel (H, W), weight (K, C, H, W)
    Gemm / MatMul on Vec                  -> 1x1 Conv, weight (K, Kin, 1, 1)
    GlobalAverage/MaxPool, ReduceMean/Max over (H, W)
                                          -> AveragePool/MaxPool, kernel = native (H, W), stride 1
    Relu, PRelu, Dropout, Add-bias, ...   -> same op; per-feature constants reshaped to (K, 1, 1)
    1x1 Conv on a pooled (N, C, 1, 1) head -> unchanged (it slides with the pooling window)
    Softmax over the features (axis 1)    -> Softmax over channels (axis 1; a Transpose sandwich
                                             below opset 13, whose Softmax flattens from ``axis``)

Anything else that touches the head raises one ModelError naming every such node.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError
from .model_io import load_model
from .model_view import ModelView, attributes, node_label, weightless_copy

# Ops that act on each value alone: they commute with flatten and with the FC -> conv rewrite.
UNARY = {"Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "Tanh", "HardSigmoid",
         "HardSwish", "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Abs", "Neg", "Exp",
         "Log", "Sqrt", "Reciprocal", "Identity", "Clip", "ThresholdedRelu", "Dropout"}
# Two-operand ops allowed with one constant operand (a bias, a scale) or two head tensors.
BINARY = {"Add", "Sub", "Mul", "Div", "PRelu", "Max", "Min"}
SOFTMAX = {"Softmax", "LogSoftmax", "Hardmax"}
GLOBAL_POOL = {"GlobalAveragePool": "AveragePool", "GlobalMaxPool": "MaxPool"}
REDUCE_POOL = {"ReduceMean": "AveragePool", "ReduceMax": "MaxPool"}

# Ops that tie a network to one input size: their presence means there is a head to rewrite.
HEAD_OPS = {"Flatten", "Reshape", "Gemm", "MatMul", "ReduceMean", "ReduceMax", *GLOBAL_POOL}
NATIVE_KEY = "cyconv.native_input"   # metadata: "C,H,W" of the crop the net was built for


@dataclass(frozen=True)
class Flat:
    """(N, F) flatten of the 4-D map ``src`` whose native shape is ``chw``; ``perm`` is the
    (C, H, W) axis permutation applied before flattening (None: plain NCHW order)."""
    src: str
    chw: tuple
    perm: tuple = None

    @property
    def laid_out(self):
        """Shape of the flattened 3-D block: (C, H, W) permuted by ``perm``."""
        return tuple(self.chw[p] for p in self.perm) if self.perm else self.chw

    def to_map(self, per_feature: np.ndarray) -> np.ndarray:
        """Array (..., F) indexed like the flat features -> (..., C, H, W) like ``src``."""
        lead = per_feature.shape[:-1]
        block = per_feature.reshape(*lead, *self.laid_out)
        if self.perm:
            back = [len(lead) + a for a in np.argsort(self.perm)]
            block = block.transpose(*range(len(lead)), *back)
        return np.ascontiguousarray(block)


@dataclass(frozen=True)
class Vec:
    """Head feature vector: natively (N, K) (rank 2) or (N, K, 1, 1) (rank 4)."""
    rank: int


def fc_to_conv(model, input_shape=None) -> onnx.ModelProto:
    """Rewrite fully-connected layers as convolutions (a fully convolutional network).

    Parameters
    ----------
    model : onnx.ModelProto or str or bytes
        A CNN with one image input (N, C, H, W) whose head flattens a feature map into
        Gemm/MatMul layers and/or pools it globally. Not modified.
    input_shape : sequence of int, optional
        Native (C, H, W) (or (N, C, H, W)) input size, needed only when the model's own input
        has symbolic height/width.

    Returns
    -------
    onnx.ModelProto
        Same weights, input (N, C, "height", "width"); each head output (N, K) becomes
        (N, K, h, w): at the native size h = w = 1 and the values equal the original ones;
        on a larger image cell (i, j) scores the crop at (i*sy, j*sx) (see
        :func:`cyconv.converters.receptive_field` for the strides and when this is exact).

    Raises
    ------
    cyconv.ModelError
        The model has no single image input, its native size is unknown, or some node of the
        head cannot be rewritten (all such nodes are named).
    """
    proto, _ = load_model(model)
    view = ModelView(proto)
    image = view.image_input()
    if input_shape is None and not any(n.op_type in HEAD_OPS for n in proto.graph.node):
        out = onnx.ModelProto()
        out.CopyFrom(proto)   # already fully convolutional: nothing to rewrite
        return out
    native = _native_dims(image, input_shape)
    return _Rewrite(proto, view, image, native).run()


def _native_dims(image, input_shape):
    dims = image.type.tensor_type.shape.dim
    batch = dims[0].dim_param or (dims[0].dim_value if dims[0].HasField("dim_value") else "N")
    if input_shape is not None:
        chw = tuple(int(d) for d in input_shape)[-3:]
        if len(chw) != 3 or min(chw) <= 0:
            raise ModelError(f"input_shape {tuple(input_shape)}: expected positive (C, H, W)")
    else:
        if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
            raise ModelError(f"input {image.name!r} has symbolic channels/height/width: pass "
                             "input_shape=(C, H, W) (cyconv convert: --input-shape CxHxW), "
                             "the crop size the network was built for")
        chw = tuple(d.dim_value for d in dims[1:])
    return (batch, *chw)


class _Rewrite:
    """One pass over the nodes, emitting the converted graph (see the module docstring)."""

    def __init__(self, proto, view, image, native):
        self.proto, self.view, self.image, self.native = proto, view, image, native
        self.shapes = view.shapes(native)
        self.state = {}        # tensor name -> Flat | Vec
        self.alias = {}        # removed node's output -> tensor that now carries it
        self.nodes = []        # emitted NodeProtos, in order
        self.new_inits = []    # TensorProtos added (conv weights, reshaped constants)
        self.problems = []     # nodes that cannot be rewritten, with the reason
        self.used_names = set(view.producer) | set(view.initializers) | \
            {i.name for i in proto.graph.input}

    # ------------------------------------------------------------------ driver
    def run(self) -> onnx.ModelProto:
        for node in self.view.model.graph.node:
            self.visit(node)
        for name in self.view.graph_outputs:
            info = self.state.get(name)
            if isinstance(info, Flat):
                self.problems.append(f"graph output {name!r} is a flattened {info.chw} feature "
                                     "map, not a per-window vector: nothing to slide over")
        if self.problems:
            raise ModelError("cannot rewrite as a fully convolutional network: " +
                             "; ".join(self.problems))
        return self.build()

    def visit(self, node):
        op = node.op_type
        ins = [self.alias.get(i, i) for i in node.input]
        head = [i for i in node.input if i in self.state]
        if op == "Constant":
            self.emit(node, ins)
        elif not head and self.is_flatten(node):
            self.start_flat(node, ins[0])
        elif not head and op in GLOBAL_POOL and self.rank(node.input[0]) == 4:
            self.global_pool(node, ins[0], GLOBAL_POOL[op], keep_dims=True)
        elif not head and op in REDUCE_POOL and self.reduces_spatial(node):
            keep = attributes(node).get("keepdims", 1)
            self.global_pool(node, ins[0], REDUCE_POOL[op], keep_dims=bool(keep))
        elif not head:
            self.emit(node, ins)
        else:
            self.visit_head(node, ins, head)

    def visit_head(self, node, ins, head):
        op = node.op_type
        info = self.state[head[0]]
        if op in ("Gemm", "MatMul") and node.input[0] in self.state and len(head) == 1:
            self.fc(node, ins, info)
        elif isinstance(info, Vec) and (op == "Flatten" or self.is_flatten(node) or
                                        self.squeezes_spatial(node, info)):
            self.alias[node.output[0]] = ins[0]
            self.state[node.output[0]] = Vec(2)
        elif op in UNARY:
            self.unary(node, ins, info)
        elif op in BINARY:
            self.binary(node, ins)
        elif op in SOFTMAX and isinstance(info, Vec):
            self.softmax(node, ins, info)
        elif op == "Conv" and isinstance(info, Vec) and info.rank == 4 and \
                head == [node.input[0]] and self.is_pointwise(node):
            self.emit(node, ins)    # 1x1 conv on a pooled (N, C, 1, 1) head, e.g. MobileNetV3
            self.state[node.output[0]] = info
        elif op == "BatchNormalization" and isinstance(info, Vec) and len(head) == 1 and \
                head[0] == node.input[0]:
            self.emit(node, ins)
            self.state[node.output[0]] = info
        elif op == "Concat" and isinstance(info, Vec) and len(head) == len(node.input) and \
                all(isinstance(self.state[i], Vec) and self.state[i].rank == info.rank
                    for i in head) and attributes(node).get("axis") in (1, 1 - info.rank):
            self.emit(node, ins, axis=1)
            self.state[node.output[0]] = info
        else:
            what = "a flattened feature map" if isinstance(info, Flat) else "a head vector"
            self.problems.append(f"{node_label(node)} consumes {what} ({head[0]!r}) and has no "
                                 "convolutional equivalent")

    # ------------------------------------------------------------------ pattern checks
    def rank(self, name):
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def is_flatten(self, node) -> bool:
        """Flatten(axis=1) or Reshape to (N, -1) / (N, C*H*W) of a rank-4 tensor."""
        if not node.input or self.rank(node.input[0]) != 4:
            return False
        if node.op_type == "Flatten":
            return attributes(node).get("axis", 1) in (1, -3)
        if node.op_type != "Reshape":
            return False
        n, *chw = self.shapes[node.input[0]]
        features = int(np.prod(chw)) if all(isinstance(d, int) for d in chw) else None
        target = self.view.reshape_target(node.input[1], node.input[0])
        if target is None or len(target) != 2:
            return False
        lead, last = target
        lead_ok = lead == "batch" or lead == 0 or (isinstance(n, int) and lead == n) or \
            (lead == -1 and last == features)
        return lead_ok and last in (-1, features)

    def is_pointwise(self, node) -> bool:
        """Conv with a 1x1 kernel, stride 1 and no padding: per-window on any map."""
        attrs = attributes(node)
        weight = self.view.initializers.get(node.input[1])
        kernel = attrs.get("kernel_shape") or (list(weight.dims[2:]) if weight else None)
        return kernel is not None and all(k == 1 for k in kernel) and \
            all(s == 1 for s in attrs.get("strides", [1])) and \
            not any(attrs.get("pads", [0])) and \
            attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET", b"VALID", "VALID")

    def reduces_spatial(self, node) -> bool:
        """ReduceMean/ReduceMax over exactly axes (2, 3) of a rank-4 tensor."""
        if self.rank(node.input[0]) != 4:
            return False
        axes = attributes(node).get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.view.constant(node.input[1])
        return axes is not None and sorted(int(a) % 4 for a in np.reshape(axes, -1)) == [2, 3]

    def squeezes_spatial(self, node, info) -> bool:
        if node.op_type != "Squeeze" or info.rank != 4:
            return False
        axes = attributes(node).get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.view.constant(node.input[1])
        return axes is not None and sorted(int(a) % 4 for a in np.reshape(axes, -1)) == [2, 3]

    # ------------------------------------------------------------------ rewrites
    def start_flat(self, node, x):
        """Flatten of a map: record it; the consuming FC reads the map directly."""
        perm, src = None, x
        producer = self.view.producer.get(node.input[0])
        if producer is not None and producer.op_type == "Transpose":
            p = list(attributes(producer).get("perm", [3, 2, 1, 0]))
            if p[0] == 0:   # batch stays first: fold the permutation into the kernel
                perm, src = tuple(a - 1 for a in p[1:]), self.alias.get(producer.input[0],
                                                                         producer.input[0])
        shape = self.shapes.get(producer.input[0] if perm else node.input[0])
        if shape is None or not all(isinstance(d, int) for d in shape[1:]):
            self.problems.append(f"{node_label(node)}: the shape of the flattened map is "
                                 "unknown at the native input size")
            return
        chw = tuple(shape[1:])
        if chw[1:] == (1, 1):   # a 1x1 map flattens to its channel vector in any order
            self.alias[node.output[0]] = src
            self.state[node.output[0]] = Vec(2)
        else:
            self.state[node.output[0]] = Flat(src, chw, perm)

    def global_pool(self, node, x, pool_op, keep_dims):
        """Global pool over the native (H, W) -> a window of that size sliding at stride 1."""
        _, _, h, w = self.shapes.get(node.input[0], (None,) * 4)
        if not (isinstance(h, int) and isinstance(w, int)):
            self.problems.append(f"{node_label(node)}: feature map size unknown at the native "
                                 "input size")
            return
        out = node.output[0] if keep_dims else self.fresh(node.output[0] + "_pooled")
        self.nodes.append(helper.make_node(pool_op, [x], [out], name=node.name or out,
                                           kernel_shape=[h, w], strides=[1, 1]))
        if not keep_dims:
            self.alias[node.output[0]] = out
        self.state[node.output[0]] = Vec(4 if keep_dims else 2)

    def fc(self, node, ins, info):
        """Gemm/MatMul(head, W[, b]) -> Conv(map, W as (K, C, kh, kw)[, b])."""
        attrs = attributes(node)
        wshape, load = self._weight(node.input[1])
        if wshape is None or len(wshape) != 2 or attrs.get("transA", 0):
            self.problems.append(f"{node_label(node)}: needs a constant 2-D weight and "
                                 "transA=0 to become a convolution")
            return
        # Gemm: Y = alpha * A @ op(B) + beta * C; MatMul: Y = A @ B. Conv weight: W (K, F).
        trans_b = node.op_type == "Gemm" and attrs.get("transB", 0)
        alpha = float(attrs.get("alpha", 1.0))
        k, features = wshape if trans_b else wshape[::-1]
        if isinstance(info, Flat):
            if features != int(np.prod(info.chw)):
                self.problems.append(f"{node_label(node)}: weight has {features} inputs, the "
                                     f"flattened map {info.chw} has {int(np.prod(info.chw))}")
                return
            shape, src = (k, *info.chw), self.alias.get(info.src, info.src)    # (K, C, H, W)
        else:
            shape, src = (k, features, 1, 1), ins[0]
        name = self.fresh(node.output[0] + "_conv_weight")
        tensor = self.view.initializers.get(node.input[1])
        if trans_b and alpha == 1.0 and not getattr(info, "perm", None) and \
                tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT:
            # Same bytes, new dims: copy the TensorProto (VGG's 400 MB: no numpy round trip).
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            del copy.dims[:]
            copy.dims.extend(shape)
            copy.name = name
            self.new_inits.append(copy)
        else:
            weight = load()
            w = (weight if trans_b else weight.T).astype(np.float32) * np.float32(alpha)
            kernel = info.to_map(w) if isinstance(info, Flat) else w.reshape(shape)
            self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(kernel), name))
        inputs = [src, name]
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            bias = self.view.constant(node.input[2])
            if bias is None or bias.size not in (1, k) or \
                    (bias.ndim == 2 and bias.shape[0] != 1):
                self.problems.append(f"{node_label(node)}: bias must be a constant of shape "
                                     f"(K,) or (1, K) to become a conv bias")
                return
            bias = np.broadcast_to(bias.reshape(-1), (k,)) * np.float32(attrs.get("beta", 1.0))
            inputs.append(self.add_init(node.output[0] + "_conv_bias", bias))
        self.nodes.append(helper.make_node(
            "Conv", inputs, [node.output[0]], name=node.name or node.output[0],
            kernel_shape=list(shape[2:]), strides=[1, 1], pads=[0, 0, 0, 0]))
        self.state[node.output[0]] = Vec(2)

    def _weight(self, name):
        """(shape or None, loader of the array): initializer dims without reading the bytes."""
        tensor = self.view.initializers.get(name)
        if tensor is not None and tensor.data_location != onnx.TensorProto.EXTERNAL:
            return tuple(tensor.dims), lambda: self.view.constant(name)
        value = self.view.constant(name)
        return (None if value is None else value.shape), lambda: value

    def unary(self, node, ins, info):
        """Per-value op: on a Flat it moves before the flatten, onto the map."""
        extra_outputs = [o for o in node.output[1:] if o and self.view.consumers.get(o)]
        extra_inputs = [self.view.constant(i) for i in node.input[1:] if i]
        if extra_outputs or any(c is None or c.size != 1 for c in extra_inputs):
            self.problems.append(f"{node_label(node)}: only the per-value form (scalar extra "
                                 "inputs, no mask output) can be rewritten")
            return
        if isinstance(info, Flat):
            ins = [self.alias.get(info.src, info.src)] + ins[1:]
            self.emit(node, ins, outputs=[node.output[0]])
            self.state[node.output[0]] = Flat(node.output[0], info.chw, info.perm)
        else:
            self.emit(node, ins, outputs=[node.output[0]])
            self.state[node.output[0]] = info

    def binary(self, node, ins):
        """Bias/scale/PRelu slope: per-feature constants follow the features into (K, 1, 1)."""
        head = [i for i in node.input if i in self.state]
        infos = [self.state[i] for i in head]
        if len(head) == 2:
            if not all(isinstance(i, Vec) for i in infos) or infos[0] != infos[1]:
                self.problems.append(f"{node_label(node)}: combines two head tensors of "
                                     "different layouts")
                return
            self.emit(node, ins)
            self.state[node.output[0]] = infos[0]
            return
        info = infos[0]
        new_ins = []
        for name, renamed in zip(node.input, ins):
            if name in self.state:
                new_ins.append(self.alias.get(info.src, info.src) if isinstance(info, Flat)
                               else renamed)
                continue
            const = self.view.constant(name)
            if const is None:
                self.problems.append(f"{node_label(node)} mixes the head with the feature map "
                                     f"{name!r} (e.g. squeeze-excitation): a window of fixed "
                                     "size cannot see global context")
                return
            new_ins.append(self.reshaped_constant(node, name, const, info))
        if None in new_ins:
            return
        self.emit(node, new_ins)
        self.state[node.output[0]] = Flat(node.output[0], info.chw, info.perm) \
            if isinstance(info, Flat) else info

    def reshaped_constant(self, node, name, const, info):
        """A constant broadcast against the head, re-laid for the converted (N, K, h, w)."""
        if const.size == 1:
            return name
        if isinstance(info, Flat):
            if const.shape[-1] != int(np.prod(info.chw)) or const.size != const.shape[-1]:
                self.problems.append(f"{node_label(node)}: constant {const.shape} does not "
                                     "broadcast per feature")
                return None
            return self.add_init(f"{name}_as_map", info.to_map(const.reshape(-1)))
        if info.rank == 4:      # already (K, 1, 1) or (1, K, 1, 1): broadcasts on any h, w
            return name
        if const.size != const.shape[-1]:
            self.problems.append(f"{node_label(node)}: constant {const.shape} does not "
                                 "broadcast per feature")
            return None
        return self.add_init(f"{name}_as_map", const.reshape(-1, 1, 1))   # (K, 1, 1)

    def softmax(self, node, ins, info):
        """Softmax over the features -> over channels, each window normalised on its own."""
        opset = self.view.opset
        axis = attributes(node).get("axis", 1 if opset < 13 else -1)
        if axis % info.rank != 1:
            self.problems.append(f"{node_label(node)}: axis {axis} is not the feature axis")
            return
        if opset >= 13:
            self.emit(node, ins, axis=1)
        else:
            # Before opset 13, Softmax(axis=a) normalises over all dims from a on (flattened):
            # on (N, K, h, w) that would mix windows. Channels-last, axis 3 is exactly K.
            last = self.fresh(node.output[0] + "_nhwc")
            done = self.fresh(node.output[0] + "_nhwc_out")
            self.nodes.append(helper.make_node("Transpose", [ins[0]], [last], perm=[0, 2, 3, 1],
                                               name=last))
            self.nodes.append(helper.make_node(node.op_type, [last], [done], axis=3,
                                               name=node.name or done))
            self.nodes.append(helper.make_node("Transpose", [done], [node.output[0]],
                                               perm=[0, 3, 1, 2], name=node.output[0]))
        self.state[node.output[0]] = info

    # ------------------------------------------------------------------ emitting
    def fresh(self, base):
        name, k = base, 0
        while name in self.used_names:
            k += 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        return name

    def add_init(self, base, array):
        name = self.fresh(base)
        self.new_inits.append(numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def emit(self, node, inputs, outputs=None, **attrs):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(inputs)
        if outputs is not None:
            del copy.output[:]
            copy.output.extend(outputs)
        for key, value in attrs.items():
            for a in list(copy.attribute):
                if a.name == key:
                    copy.attribute.remove(a)
            copy.attribute.append(helper.make_attribute(key, value))
        self.nodes.append(copy)

    def build(self) -> onnx.ModelProto:
        src = self.proto
        out = onnx.ModelProto()
        for field in ("ir_version", "producer_name", "producer_version", "domain",
                      "model_version", "doc_string"):
            setattr(out, field, getattr(src, field))
        out.opset_import.extend(src.opset_import)
        out.functions.extend(src.functions)
        out.metadata_props.extend(p for p in src.metadata_props if p.key != NATIVE_KEY)
        out.metadata_props.add(key=NATIVE_KEY, value=",".join(str(d) for d in self.native[1:]))
        graph = out.graph
        graph.name, graph.doc_string = src.graph.name, src.graph.doc_string

        # Graph outputs whose producer was removed get an Identity from their new carrier.
        for o in src.graph.output:
            if o.name in self.alias:
                self.nodes.append(helper.make_node("Identity", [self.alias[o.name]], [o.name],
                                                   name=self.fresh(o.name + "_identity")))
        nodes = _live_nodes(self.nodes, {o.name for o in src.graph.output})
        graph.node.extend(nodes)
        needed = {i for n in nodes for i in n.input}
        graph.initializer.extend(t for t in src.graph.initializer if t.name in needed)
        graph.initializer.extend(t for t in self.new_inits if t.name in needed)

        for value in src.graph.input:
            if value.name == self.image.name:
                graph.input.append(_dynamic_image(value))
            elif value.name in needed or value.name not in self.view.initializers:
                graph.input.append(value)
        batch = self.image.type.tensor_type.shape.dim[0]
        for o in src.graph.output:
            graph.output.append(self.output_info(o, batch))
        try:   # structure and symbolic shapes; the weights are ours or the caller's
            onnx.checker.check_model(weightless_copy(out), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise ModelError(f"the rewritten model is not valid ONNX: {exc}") from None
        return out

    def output_info(self, value, batch):
        """Head outputs become (N, K, h, w) with h, w unknown until the image size is."""
        elem = value.type.tensor_type.elem_type
        if value.name not in self.state:
            return helper.make_tensor_value_info(value.name, elem, None)
        shape = self.shapes.get(value.name)
        k = shape[1] if shape is not None and len(shape) >= 2 and isinstance(shape[1], int) \
            else None
        info = helper.make_tensor_value_info(value.name, elem, [None, k, None, None])
        info.type.tensor_type.shape.dim[0].CopyFrom(batch)
        return info


def _dynamic_image(value):
    """Copy of the image input with symbolic height and width."""
    out = onnx.ValueInfoProto()
    out.CopyFrom(value)
    dims = out.type.tensor_type.shape.dim
    for d, name in zip(dims[2:], ("height", "width")):
        if not d.HasField("dim_param"):
            d.Clear()
            d.dim_param = name
    return out


def _live_nodes(nodes, outputs):
    """The nodes the graph outputs depend on, in their order (dead heads and shape chains go)."""
    needed, live = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    return live[::-1]
