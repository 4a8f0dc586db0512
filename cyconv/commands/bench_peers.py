"""The runtimes ``cyconv bench`` compares against: ONNX Runtime, OpenVINO, PyTorch.

Each ``load_<name>(model_bytes, feed, threads)`` returns ``(run, version)`` where ``run(feed)``
returns the outputs as a list of numpy arrays in graph-output order, or raises
:class:`PeerUnavailable` (not installed, or cannot run this model) with the reason. They are
optional bench extras (``pip install ".[bench]"``), imported only here, and only ever used to
*compare* with cyconv: cyconv never calls them to compute its own answers.

Settings, chosen for a fair fp32 latency comparison on ``threads`` cores:

* ONNX Runtime: CPU provider, all graph optimisations, ``intra_op_num_threads = threads``,
  ``inter_op_num_threads = 1``, sequential execution; spinning left on (its default: latency).
* OpenVINO: CPU plugin, ``INFERENCE_PRECISION_HINT = f32`` (its default on AVX512-BF16 CPUs is
  bf16, not an fp32 comparison), ``INFERENCE_NUM_THREADS = threads``, ``PERFORMANCE_HINT =
  LATENCY``, one stream; the model reshaped to the feed's static shapes before compiling.
* PyTorch: there is no ONNX importer in torch, so the graph is run node by node with
  ``torch.nn.functional`` in eager mode under ``torch.inference_mode()`` (what a torchvision
  model's ``forward`` calls, module by module); ``torch.set_num_threads(threads)``. Models using
  ops outside the small table below are reported as unavailable.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


class PeerUnavailable(Exception):
    """The peer is not installed or cannot run this model; the message says why."""


# ------------------------------------------------------------------------------- ONNX Runtime

def load_ort(model_bytes, feed, threads):
    try:
        import onnxruntime as ort
    except ImportError:
        raise PeerUnavailable("onnxruntime not installed (pip install onnxruntime)") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as exc:   # noqa: BLE001 (any load failure makes the peer unavailable)
        raise PeerUnavailable(f"onnxruntime cannot load the model: {exc}") from None
    return (lambda f: sess.run(None, f)), ort.__version__


# ------------------------------------------------------------------------------- OpenVINO

def load_openvino(model_bytes, feed, threads):
    try:
        import openvino as ov
    except ImportError:
        raise PeerUnavailable("openvino not installed (pip install openvino)") from None
    core = ov.Core()
    try:
        model = core.read_model(model_bytes, b"")
        model.reshape({name: list(x.shape) for name, x in feed.items()})
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        })
    except Exception as exc:   # noqa: BLE001
        raise PeerUnavailable(f"openvino cannot compile the model: {exc}") from None
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if "f32" not in precision and "float32" not in precision:
        raise PeerUnavailable(f"openvino ignored the f32 hint (runs {precision})")
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(f):
        result = request.infer(f)
        return [np.array(result[o]) for o in outputs]
    return run, ov.__version__


# ------------------------------------------------------------------------------- PyTorch

def load_torch(model_bytes, feed, threads):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise PeerUnavailable("torch not installed (pip install torch==2.13.0, the CPU "
                              "build)") from None
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
              for t in graph.initializer}
    steps = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            consts[node.output[0]] = torch.from_numpy(
                numpy_helper.to_array(attrs["value"]).copy())
            continue
        fn = _TORCH_OPS.get(node.op_type)
        if fn is None:
            raise PeerUnavailable(f"torch runner has no {node.op_type} (the bench runs ONNX "
                                  f"graphs in torch eager through a small op table)")
        steps.append((fn, list(node.input), node.output[0], attrs))
    out_names = [o.name for o in graph.output]
    torch.set_num_threads(threads)

    def run(f):
        with torch.inference_mode():
            env = dict(consts)
            env.update((k, torch.from_numpy(v)) for k, v in f.items())
            for fn, ins, out, attrs in steps:
                env[out] = fn(F, torch, [env[i] if i else None for i in ins], attrs)
            return [env[n].numpy() for n in out_names]
    try:
        run(feed)   # surfaces shape/attribute problems now, as unavailability
    except PeerUnavailable:
        raise
    except Exception as exc:   # noqa: BLE001
        raise PeerUnavailable(f"torch runner failed on this model: {exc}") from None
    return run, torch.__version__


def _pads2d(attrs, op):
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise PeerUnavailable(f"torch runner: {op} auto_pad")
    if pads[:2] != pads[2:]:
        raise PeerUnavailable(f"torch runner: {op} with asymmetric pads {pads}")
    return pads[:2]


def _conv(F, torch, a, at):
    return F.conv2d(a[0], a[1], a[2] if len(a) > 2 else None, tuple(at.get("strides", (1, 1))),
                    tuple(_pads2d(at, "Conv")), tuple(at.get("dilations", (1, 1))),
                    at.get("group", 1))


def _pool(F, torch, a, at, is_max):
    k = tuple(at["kernel_shape"])
    kw = dict(stride=tuple(at.get("strides", (1, 1))), padding=tuple(_pads2d(at, "pool")),
              ceil_mode=bool(at.get("ceil_mode", 0)))
    if is_max:
        return F.max_pool2d(a[0], k, dilation=tuple(at.get("dilations", (1, 1))), **kw)
    return F.avg_pool2d(a[0], k, count_include_pad=bool(at.get("count_include_pad", 0)), **kw)


def _gemm(F, torch, a, at):
    x = a[0].t() if at.get("transA", 0) else a[0]
    w = a[1].t() if at.get("transB", 0) else a[1]
    y = torch.matmul(x, w) * at.get("alpha", 1.0)
    if len(a) > 2 and a[2] is not None:
        y = y + a[2] * at.get("beta", 1.0)
    return y


def _clip(F, torch, a, at):
    lo = a[1] if len(a) > 1 and a[1] is not None else at.get("min")
    hi = a[2] if len(a) > 2 and a[2] is not None else at.get("max")
    return torch.clamp(a[0], None if lo is None else float(lo), None if hi is None else float(hi))


def _prelu(F, torch, a, at):
    return torch.where(a[0] < 0, a[0] * a[1], a[0])


def _softmax(F, torch, a, at):
    return F.softmax(a[0], dim=at.get("axis", -1))


_TORCH_OPS = {
    "Conv": _conv,
    "BatchNormalization": lambda F, t, a, at: F.batch_norm(a[0], a[3], a[4], a[1], a[2], False,
                                                            0.0, at.get("epsilon", 1e-5)),
    "Relu": lambda F, t, a, at: F.relu(a[0]),
    "Clip": _clip,
    "Tanh": lambda F, t, a, at: t.tanh(a[0]),
    "Sigmoid": lambda F, t, a, at: t.sigmoid(a[0]),
    "HardSigmoid": lambda F, t, a, at: t.clamp(a[0] * at.get("alpha", 0.2) + at.get("beta", 0.5),
                                               0.0, 1.0),
    "PRelu": _prelu,
    "MaxPool": lambda F, t, a, at: _pool(F, t, a, at, True),
    "AveragePool": lambda F, t, a, at: _pool(F, t, a, at, False),
    "GlobalAveragePool": lambda F, t, a, at: F.adaptive_avg_pool2d(a[0], 1),
    "LRN": lambda F, t, a, at: F.local_response_norm(a[0], at["size"], at.get("alpha", 1e-4),
                                                     at.get("beta", 0.75), at.get("bias", 1.0)),
    "Concat": lambda F, t, a, at: t.cat(a, dim=at["axis"]),
    "Add": lambda F, t, a, at: a[0] + a[1],
    "Sub": lambda F, t, a, at: a[0] - a[1],
    "Mul": lambda F, t, a, at: a[0] * a[1],
    "Div": lambda F, t, a, at: a[0] / a[1],
    "Flatten": lambda F, t, a, at: t.flatten(a[0], at.get("axis", 1)),
    "Reshape": lambda F, t, a, at: t.reshape(a[0], [int(d) if d else a[0].shape[i]
                                                    for i, d in enumerate(a[1].tolist())]),
    "Dropout": lambda F, t, a, at: a[0],
    "Identity": lambda F, t, a, at: a[0],
    "Gemm": _gemm,
    "MatMul": lambda F, t, a, at: t.matmul(a[0], a[1]),
    "Softmax": _softmax,
}

LOADERS = {"ort": load_ort, "openvino": load_openvino, "torch": load_torch}
NAMES = {"cyconv": "cyconv", "ort": "ONNX Runtime", "openvino": "OpenVINO", "torch": "PyTorch"}
