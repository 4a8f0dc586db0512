"""A small ONNX graph builder for the zoo: one method per layer, seeded weights, exporter-like
nodes.

Every architecture file describes its network layer by layer with :class:`NetBuilder`, so the
file reads like the table of the paper. The builder mirrors what PyTorch's ONNX exporter emits
for the same ``nn.Module`` in eval mode (Conv with optional bias, BatchNormalization with the
four running tensors, Relu, Clip with min/max *inputs* for ReLU6, MaxPool with ``ceil_mode``,
Flatten(axis=1) + Gemm(transB=1) classifiers, Concat along channels, residual Add).

Weights are seeded He-normal. BatchNormalization gets random but *consistent* running
statistics: the builder tracks an estimate of each tensor's mean square (``ms``, a scalar per
tensor, propagated analytically layer by layer) and draws the running variance around it. A
BN layer then really normalises, as in a trained network, and activations stay O(1) even
through ResNet-50 or DenseNet-121; with unrelated random statistics they would grow or shrink
geometrically with depth and the accuracy checks would compare overflowed or vanished values.

Shapes are tracked per tensor without the batch dim: ``(C, H, W)`` for feature maps, ``(F,)``
after Flatten/Gemm.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

MIN_OPSET = 11  # Clip takes min/max as inputs from opset 11 on (ReLU6 needs that form)


def pool_out(size, k, stride, pad_begin, pad_end, ceil_mode, dilation=1):
    """Output length of a pooling/conv window along one axis, PyTorch/ONNX rule.

    With ``ceil_mode`` the last window is dropped when it would start in the end padding
    (PyTorch's rule, which ONNX Runtime also follows), so ``(H + pads - k) / s`` rounds up
    only while the window still starts inside the input or the begin padding.
    """
    span = size + pad_begin + pad_end - dilation * (k - 1) - 1
    if span < 0:
        raise ValueError(f"window {k} (dilation {dilation}) larger than padded input {size}")
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad_begin:
            out -= 1
    else:
        out = span // stride + 1
    return out


class NetBuilder:
    """Accumulate nodes and initializers of one ONNX graph with auto-generated names.

    Parameters
    ----------
    name : str
        Graph name.
    seed : int
        Seed of the weight generator; the same seed gives bit-identical weights.
    opset : int
        Default-domain opset of the model (>= 11).
    batch : str or int
        Batch dimension of the input and output: a symbolic name (dynamic) or a fixed size.
    """

    def __init__(self, name, seed=0, opset=17, batch="N"):
        if opset < MIN_OPSET:
            raise ValueError(f"opset {opset} < {MIN_OPSET} is not supported by the zoo")
        self.name = name
        self.opset = int(opset)
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.initializers = []
        self.inputs = []
        self.shape = {}   # tensor name -> shape without batch
        self.ms = {}      # tensor name -> estimated mean square of its values
        self._counts = {}

    # ------------------------------------------------------------------ plumbing
    def _fresh(self, prefix):
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def _param(self, prefix, array):
        name = self._fresh(prefix)
        self.initializers.append((name, np.asarray(array, order="C")))  # 0-d stays 0-d
        return name

    def _node(self, op_type, inputs, shape, ms, **attrs):
        out = self._fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out + "_node",
                                           **attrs))
        self.shape[out] = tuple(int(s) for s in shape)
        self.ms[out] = float(ms)
        return out

    def _normal(self, shape, std):
        return (self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    def _uniform(self, shape, low, high):
        return self.rng.uniform(low, high, size=shape).astype(np.float32)

    def input(self, name, shape):
        """Declare a float input ``[batch, *shape]`` with mean square 1 (standardised data)."""
        dims = [self.batch, *shape]
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        self.shape[name] = tuple(shape)
        self.ms[name] = 1.0
        return name

    # ------------------------------------------------------------------ layers
    def conv(self, x, cout, k, stride=1, pad=0, group=1, bias=True, dilation=1, gain=2.0):
        """Conv2d: weight ``(cout, cin/group, k, k)`` He-normal ``std = sqrt(gain / fan_in)``.

        ``pad`` is symmetric (int). The bias, when present, is PyTorch's default
        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
        """
        cin, h, w = self.shape[x]
        if cin % group or cout % group:
            raise ValueError(f"channels {cin}->{cout} not divisible by group {group}")
        fan_in = cin // group * k * k
        weight = self._normal((cout, cin // group, k, k), math.sqrt(gain / fan_in))
        inputs = [x, self._param("conv_w", weight)]
        bound = 1.0 / math.sqrt(fan_in)
        if bias:
            inputs.append(self._param("conv_b", self._uniform((cout,), -bound, bound)))
        ho = pool_out(h, k, stride, pad, pad, False, dilation)
        wo = pool_out(w, k, stride, pad, pad, False, dilation)
        ms = gain * self.ms[x] + (bound * bound / 3 if bias else 0.0)
        return self._node("Conv", inputs, (cout, ho, wo), ms,
                          dilations=[dilation, dilation], group=group,
                          kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride])

    def bn(self, x, eps=1e-5, gamma=(0.5, 1.5)):
        """BatchNormalization (eval) with running stats drawn around the tracked statistics.

        running_var = ms(x) * U(0.7, 1.3) so the layer normalises roughly to unit variance;
        running_mean ~ N(0, 0.1 sqrt(ms)); scale ~ U(*gamma); bias ~ N(0, 0.1).
        """
        c = self.shape[x][0]
        ms = max(self.ms[x], 1e-6)
        scale = self._uniform((c,), *gamma)
        shift = self._normal((c,), 0.1)
        mean = self._normal((c,), 0.1 * math.sqrt(ms))
        var = (ms * self._uniform((c,), 0.7, 1.3)).astype(np.float32)
        inputs = [x, self._param("bn_scale", scale), self._param("bn_bias", shift),
                  self._param("bn_mean", mean), self._param("bn_var", var)]
        ms_out = float(np.mean(scale ** 2) + 0.01)
        return self._node("BatchNormalization", inputs, self.shape[x], ms_out, epsilon=eps,
                          momentum=0.9)

    def relu(self, x):
        """Relu; halves the mean square of a zero-mean symmetric input."""
        return self._node("Relu", [x], self.shape[x], self.ms[x] / 2)

    def relu6(self, x):
        """ReLU6 as PyTorch exports it from opset 11: Clip(x, min=0, max=6), bounds as inputs."""
        lo = self._param("clip_min", np.array(0.0, np.float32))
        hi = self._param("clip_max", np.array(6.0, np.float32))
        return self._node("Clip", [x, lo, hi], self.shape[x], min(self.ms[x] / 2, 36.0))

    def tanh(self, x):
        """Tanh (LeNet-5's squashing function)."""
        return self._node("Tanh", [x], self.shape[x], min(self.ms[x], 0.6))

    def _pool(self, op, x, k, stride, pad, ceil_mode, ms, **extra):
        c, h, w = self.shape[x]
        shape = (c, pool_out(h, k, stride, pad, pad, ceil_mode),
                 pool_out(w, k, stride, pad, pad, ceil_mode))
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], **extra)
        if pad:
            attrs["pads"] = [pad] * 4
        if ceil_mode:
            attrs["ceil_mode"] = 1
        return self._node(op, [x], shape, ms, **attrs)

    def maxpool(self, x, k, stride=None, pad=0, ceil_mode=False):
        """MaxPool; the max of k*k samples has a larger mean square (about x(1 + ln k^2)/2)."""
        stride = k if stride is None else stride
        grow = (1.0 + math.log(k * k)) / 2 if k > 1 else 1.0
        return self._pool("MaxPool", x, k, stride, pad, ceil_mode, self.ms[x] * max(grow, 1.0))

    def avgpool(self, x, k, stride=None, pad=0, ceil_mode=False, count_include_pad=False):
        """AveragePool (PyTorch's AvgPool2d default: count_include_pad=True; say so explicitly)."""
        stride = k if stride is None else stride
        extra = {"count_include_pad": 1} if count_include_pad else {}
        return self._pool("AveragePool", x, k, stride, pad, ceil_mode, self.ms[x], **extra)

    def global_avgpool(self, x):
        """GlobalAveragePool -> (C, 1, 1); averaging removes most of the zero-mean part."""
        c = self.shape[x][0]
        return self._node("GlobalAveragePool", [x], (c, 1, 1), self.ms[x] / 2)

    def adaptive_avgpool(self, x, out):
        """AdaptiveAvgPool2d((out, out)) as PyTorch's exporter writes it.

        Output 1x1 -> GlobalAveragePool; an input that is a multiple of ``out`` -> AveragePool
        with kernel = stride = size/out (kernel 1 when the sizes already agree, as for VGG at 224);
        anything else is not exportable and raises ValueError.
        """
        c, h, w = self.shape[x]
        if out == 1:
            return self.global_avgpool(x)
        if h % out or w % out:
            raise ValueError(f"adaptive pool {h}x{w} -> {out}x{out} is not exportable to ONNX: "
                             "choose input_size so the feature map is a multiple of "
                             f"{out}")
        kh, kw = h // out, w // out
        return self._node("AveragePool", [x], (c, out, out), self.ms[x],
                          kernel_shape=[kh, kw], strides=[kh, kw])

    def concat(self, xs):
        """Concat along channels (torch.cat(xs, 1)); one input is allowed, as torch exports it."""
        shapes = [self.shape[x] for x in xs]
        if any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(f"concat of mismatched spatial shapes {shapes}")
        c = sum(s[0] for s in shapes)
        ms = sum(self.ms[x] * s[0] for x, s in zip(xs, shapes)) / c
        return self._node("Concat", list(xs), (c, *shapes[0][1:]), ms, axis=1)

    def add(self, a, b):
        """Residual Add of two same-shape tensors."""
        if self.shape[a] != self.shape[b]:
            raise ValueError(f"add of {self.shape[a]} and {self.shape[b]}")
        return self._node("Add", [a, b], self.shape[a], self.ms[a] + self.ms[b])

    def flatten(self, x):
        """torch.flatten(x, 1) -> Flatten(axis=1): (C, H, W) -> (C*H*W,)."""
        return self._node("Flatten", [x], (int(np.prod(self.shape[x])),), self.ms[x], axis=1)

    def dropout(self, x, p=0.5):
        """Dropout in inference mode (identity); the ratio is an input from opset 12 on."""
        if self.opset >= 12:
            ratio = self._param("dropout_ratio", np.array(p, np.float32))
            return self._node("Dropout", [x, ratio], self.shape[x], self.ms[x])
        return self._node("Dropout", [x], self.shape[x], self.ms[x], ratio=float(p))

    def gemm(self, x, nout, gain=2.0, bias=True):
        """nn.Linear as Gemm(x, W, b, transB=1): W ``(nout, fan_in)`` He-normal."""
        (fan_in,) = self.shape[x]
        inputs = [x, self._param("fc_w", self._normal((nout, fan_in),
                                                       math.sqrt(gain / fan_in)))]
        bound = 1.0 / math.sqrt(fan_in)
        if bias:
            inputs.append(self._param("fc_b", self._uniform((nout,), -bound, bound)))
        ms = gain * self.ms[x] + (bound * bound / 3 if bias else 0.0)
        return self._node("Gemm", inputs, (nout,), ms, alpha=1.0, beta=1.0, transB=1)

    def softmax(self, x):
        """Softmax over the features of a (C,) value (nn.Softmax(dim=1) on (N, C))."""
        (n,) = self.shape[x]
        return self._node("Softmax", [x], (n,), 1.0 / n, axis=1)

    # ------------------------------------------------------------------ composites
    def conv_bn_relu(self, x, cout, k, stride=1, pad=0, group=1, eps=1e-5, relu6=False):
        """Conv(bias=False) + BatchNorm + ReLU/ReLU6: torchvision's Conv2dNormActivation."""
        y = self.bn(self.conv(x, cout, k, stride, pad, group, bias=False), eps=eps)
        return self.relu6(y) if relu6 else self.relu(y)

    def conv_relu(self, x, cout, k, stride=1, pad=0, group=1):
        """Conv(bias=True) + ReLU, the BN-free nets' unit (AlexNet, VGG, SqueezeNet, NiN)."""
        return self.relu(self.conv(x, cout, k, stride, pad, group, bias=True))

    # ------------------------------------------------------------------ output
    def build(self, output, output_name="output", doc=""):
        """Finish the graph: rename ``output`` to ``output_name``, return the ModelProto."""
        # Rename the producing node's output so the graph output has the exporter's name.
        for node in self.nodes:
            for i, o in enumerate(node.output):
                if o == output:
                    node.output[i] = output_name
            for i, o in enumerate(node.input):
                if o == output:
                    node.input[i] = output_name
        out_info = helper.make_tensor_value_info(
            output_name, TensorProto.FLOAT, [self.batch, *self.shape[output]])
        # Fill the ModelProto in place: make_graph + make_model would copy VGG's 550 MB of
        # weights twice more.
        model = onnx.ModelProto()
        model.ir_version = onnx.IR_VERSION
        model.producer_name = "cyconv.zoo"
        model.opset_import.append(helper.make_opsetid("", self.opset))
        graph = model.graph
        graph.name, graph.doc_string = self.name, doc
        graph.node.extend(self.nodes)
        graph.input.extend(self.inputs)
        graph.output.append(out_info)
        for name, array in self.initializers:
            t = graph.initializer.add()
            t.name = name
            t.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
            t.dims.extend(array.shape)
            t.raw_data = array.tobytes()
        # Keep the IR version readable by older runtimes: the lowest IR that carries this opset.
        model.ir_version = min(model.ir_version, _ir_for_opset(self.opset))
        return model


def _ir_for_opset(opset):
    """Lowest IR version that supports ``opset`` (onnx.helper.VERSION_TABLE)."""
    for _release, ir, op, *_ in onnx.helper.VERSION_TABLE:
        if op >= opset:
            return ir
    return onnx.IR_VERSION
