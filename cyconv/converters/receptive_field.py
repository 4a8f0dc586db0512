"""Receptive field of a CNN: which input window each output cell sees, at what stride.

Per image axis, each tensor on the path from the input carries (stride S, start o, size R):
its cell i depends on input pixels [o + i*S, o + i*S + R). A window op with kernel k,
stride s, dilation d and begin padding p maps (S, o, R) to

    S' = S * s,    o' = o - p * S,    R' = R + (k - 1) * d * S

A flatten before an FC layer, or a global pool, is the window op whose kernel is the whole
incoming map (stride 1), exactly what fc_to_conv turns it into. Branches that meet (Add,
Concat) must share the stride; their windows join.

When does the dense map equal the explicit crops? Cell (i, j) of the dense map is computed
from the same input pixels, through the same weights, as the network run on the native crop
at (i*sy, j*sx). The values agree exactly unless the crop run reads something that is not
one of its pixels: zero padding (a Conv or pool with pads > 0 reads zeros at the crop's
border where the dense run reads the neighbouring pixels) or a ceil-mode window hanging over
the crop's edge (it pools fewer samples in the crop run). ``ReceptiveField.exact`` is True
when no layer does either at the native size; ``reasons`` names those that do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from .fc_to_conv import NATIVE_KEY
from .model_io import load_model
from .model_view import ModelView, attributes, node_label

WINDOW_OPS = {"Conv", "MaxPool", "AveragePool", "LpPool"}
GLOBAL_OPS = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
# Ops that keep each spatial position where it is (per-value, per-channel, head layers).
KEEP_OPS = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "Tanh",
            "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Abs",
            "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Identity", "Clip", "ThresholdedRelu",
            "Dropout", "BatchNormalization", "InstanceNormalization", "LRN", "Softmax",
            "LogSoftmax", "Hardmax", "Cast", "Gemm", "MatMul", "Squeeze", "Unsqueeze",
            "Transpose"}
MERGE_OPS = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Concat"}


@dataclass(frozen=True)
class ReceptiveField:
    """Where each output cell of a (dense) network looks in the input, per axis (y, x).

    Attributes
    ----------
    stride : (int, int)
        Input pixels between neighbouring output cells.
    size : (int, int)
        Window: the input pixels one output cell depends on.
    offset : (int, int)
        Top-left of cell (0, 0)'s window; negative when it reaches into zero padding.
    native : (int, int)
        Height and width of the crop the network was built for (cell (i, j) of the dense map
        scores the native crop at (i*stride[0], j*stride[1])).
    exact : bool
        Dense map == explicit crops (no padding or ceil-mode overhang at the native size).
    reasons : tuple of str
        The layers that make it approximate, with what they do.
    """
    stride: tuple
    size: tuple
    offset: tuple
    native: tuple
    exact: bool
    reasons: tuple = ()

    def grid(self, height: int, width: int) -> tuple:
        """Number of whole native crops (rows, cols) of a (height, width) image at the stride."""
        return tuple(max((n - c) // s + 1, 0)
                     for n, c, s in zip((height, width), self.native, self.stride))


@dataclass
class _Axis:
    """One image axis of a tensor: receptive field (stride, start, size) and native length."""
    stride: int
    start: int
    size: int
    length: int


def receptive_field(model, input_shape=None, output=None) -> ReceptiveField:
    """Total stride, window size and offset of ``model``, and whether dense evaluation is exact.

    Parameters
    ----------
    model : onnx.ModelProto or str or bytes
        The classifier as trained (FC head) or after :func:`fc_to_conv`, or any fully
        convolutional net.
    input_shape : sequence of int, optional
        Native (C, H, W) crop size when the model's input height/width are symbolic and it
        was not produced by fc_to_conv (which records it). Default for a plain fully
        convolutional net: its window size.
    output : str, optional
        Output to describe (default: the first).

    Returns
    -------
    ReceptiveField

    Raises
    ------
    cyconv.ModelError
        An op on the spatial path has no fixed window (Resize, a reshape other than
        flatten, ...), or branches with different strides meet.
    """
    proto, _ = load_model(model)
    view = ModelView(proto)
    native = _native_size(proto, view, input_shape)
    if native is None:   # fully convolutional with dynamic H/W: native crop = the window
        probe = _walk(view, None, output)
        native = probe[0].size, probe[1].size
    reasons = []
    axes = _walk(view, native, output, reasons)
    return ReceptiveField(stride=(axes[0].stride, axes[1].stride),
                          size=(axes[0].size, axes[1].size),
                          offset=(axes[0].start, axes[1].start), native=tuple(native),
                          exact=not reasons, reasons=tuple(reasons))


def _native_size(proto, view, input_shape):
    if input_shape is not None:
        return tuple(int(d) for d in input_shape)[-2:]
    for prop in proto.metadata_props:
        if prop.key == NATIVE_KEY:
            return tuple(int(d) for d in prop.value.split(","))[-2:]
    dims = view.image_input().type.tensor_type.shape.dim[2:]
    if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        return tuple(d.dim_value for d in dims)
    return None


def _walk(view, native, output, reasons=None):
    """Propagate (y, x) _Axis pairs from the image input to ``output``. With ``native`` None,
    lengths are unknown: only window ops are allowed (no flatten / global pool)."""
    image = view.image_input().name
    lengths = native if native is not None else (None, None)
    state = {image: tuple(_Axis(1, 0, 1, n) for n in lengths)}
    collapsed = set()   # tensors past a flatten / global pool: their windows are final
    for node in view.model.graph.node:
        spatial = [i for i in node.input if i in state]
        if not spatial:
            continue
        op = node.op_type
        src = state[spatial[0]]
        if op in WINDOW_OPS and spatial == [node.input[0]]:
            if spatial[0] in collapsed and op != "Conv":
                raise ModelError(f"{node_label(node)} pools after the head was flattened")
            issues = []
            out = tuple(_window(view, node, a, axis, issues) for axis, a in enumerate(src))
            if issues and reasons is not None:
                reasons.append(f"{node_label(node)} " + "; ".join(dict.fromkeys(issues)))
        elif op in GLOBAL_OPS or (op in ("Flatten", "Reshape") and spatial[0] not in collapsed
                                  and _is_flatten(view, node)):
            out = tuple(_collapse(node, a) for a in src)
            collapsed.add(node.output[0])
        elif op in ("ReduceMean", "ReduceMax") and _reduces_spatial(view, node):
            out = tuple(_collapse(node, a) for a in src)
            collapsed.add(node.output[0])
        elif op in ("Flatten", "Reshape") and spatial[0] in collapsed:
            out = src
        elif op in KEEP_OPS:
            if op == "Transpose" and list(attributes(node).get("perm", [1]))[0] != 0:
                raise ModelError(f"{node_label(node)} moves the batch axis")
            out = src
        elif op in MERGE_OPS:
            if 0 < sum(i in collapsed for i in spatial) < len(spatial):
                raise ModelError(f"{node_label(node)} mixes globally pooled context back into "
                                 "the feature map (squeeze-excitation?): no fixed window")
            out = _merge(node, [state[i] for i in spatial])
        elif op in ("Shape", "Size"):
            continue    # reads sizes, not pixels
        else:
            raise ModelError(f"{node_label(node)}: no fixed receptive window through this op "
                             "(only convolutions, pools, per-value ops, merges and the FC "
                             "head are understood)")
        for name in node.output[:1]:
            state[name] = out
            if any(i in collapsed for i in spatial):
                collapsed.add(name)
    name = output or view.model.graph.output[0].name
    if name not in state:
        raise ModelError(f"output {name!r} does not depend on the image input")
    return state[name]


def _window(view, node, a: _Axis, axis: int, reasons) -> _Axis:
    attrs = attributes(node)
    kernel = attrs.get("kernel_shape")
    if kernel is None and node.op_type == "Conv":
        kernel = list(view.initializers[node.input[1]].dims[2:]) \
            if node.input[1] in view.initializers else None
    if kernel is None or len(kernel) != 2:
        raise ModelError(f"{node_label(node)}: needs a 2-D kernel_shape")
    k = int(kernel[axis])
    s = int(attrs.get("strides", [1, 1])[axis])
    d = int(attrs.get("dilations", [1, 1])[axis])
    pads = attrs.get("pads", [0, 0, 0, 0])
    begin, end = int(pads[axis]), int(pads[axis + 2])
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER") and a.length is not None:
        total = max((-(-a.length // s) - 1) * s + (k - 1) * d + 1 - a.length, 0)
        small, big = total // 2, total - total // 2
        begin, end = (small, big) if auto == "SAME_UPPER" else (big, small)
    length = None
    if a.length is not None:
        length = _out_length(node, a.length, k, s, d, begin, end, bool(attrs.get("ceil_mode")))
        if begin or end:
            reasons.append(f"pads {begin},{end} (the crop reads padding where the dense map "
                           "reads neighbouring pixels)")
        reach = (length - 1) * s + (k - 1) * d + 1
        if reach > a.length + begin + end:
            reasons.append(f"ceil-mode window overhangs the map by {reach - a.length - begin - end}"
                           " (it pools fewer samples in the crop than in the dense map)")
    return _Axis(a.stride * s, a.start - begin * a.stride, a.size + (k - 1) * d * a.stride,
                 length)


def _out_length(node, n, k, s, d, begin, end, ceil_mode):
    """Output length of a window op (ONNX/PyTorch rule: a ceil-mode window must start
    inside the input or the begin padding)."""
    span = n + begin + end - (k - 1) * d - 1
    if span < 0:
        raise ModelError(f"{node_label(node)}: window {k} larger than its padded input {n} at "
                         "the native size")
    out = span // s + 1
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + begin:
            out -= 1
    return out


def _collapse(node, a: _Axis) -> _Axis:
    """Flatten or global pool: a window over the whole native map, stride 1."""
    if a.length is None:
        raise ModelError(f"{node_label(node)} reduces the whole map: pass input_shape, the "
                         "native crop size")
    return _Axis(a.stride, a.start, a.size + (a.length - 1) * a.stride, 1)


def _merge(node, parts) -> tuple:
    out = []
    for axis in range(2):
        axes = [p[axis] for p in parts]
        if len({a.stride for a in axes}) != 1:
            raise ModelError(f"{node_label(node)} joins branches with strides "
                             f"{sorted({a.stride for a in axes})}: no single output grid")
        start = min(a.start for a in axes)
        stop = max(a.start + a.size for a in axes)
        out.append(_Axis(axes[0].stride, start, stop - start, axes[0].length))
    return tuple(out)


def _is_flatten(view, node) -> bool:
    if node.op_type == "Flatten":
        return attributes(node).get("axis", 1) in (1, -3)
    target = view.reshape_target(node.input[1], node.input[0])
    return target is not None and len(target) == 2


def _reduces_spatial(view, node) -> bool:
    axes = attributes(node).get("axes")
    if axes is None and len(node.input) > 1:
        axes = view.constant(node.input[1])
    return axes is not None and sorted(int(v) % 4 for v in np.reshape(axes, -1)) == [2, 3]
