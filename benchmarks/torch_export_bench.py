"""Issue 4's nets as PyTorch exports them, timed: cyconv vs ONNX Runtime and OpenVINO.

Issue 4 is judged on held-out exports of its networks, not on the zoo's graphs. This script
writes them as a user would get them: the PyTorch modules (LeNet-5, the CIFAR CNN with
BatchNorm and a softmax, SqueezeNet 1.1, DenseNet-121, MTCNN's PNet) in eval mode with
randomised BN statistics, exported with a dynamic batch

* by the TorchScript exporter (``dynamo=False``, opset 17), and
* by the dynamo exporter (``dynamo=True``, PyTorch's default since 2.9) when onnxscript is
  importable,

then times each at batch 1 on 2 threads in one process with ``cyconv bench``'s method
(cyconv.commands.bench.bench_model: interleaved blocks after idle, medians) and prints
cyconv / best peer, the max |difference| from ONNX Runtime, and how cyconv ran it: ``native``
(one C loop), ``native+N py`` (N steps without a native form run in Python inside the plan)
or ``python`` (the Python loop). The PaddleOCR classifier is a PaddlePaddle export; it is the
bundled model in ``bench_models.py``. Not a test: torch is not a test dependency. Usage::

    pip install torch==2.13.0 onnxscript     # the CPU wheel; plain `torch` pulls CUDA
    python benchmarks/torch_export_bench.py [--only lenet5,cifar_bn] [--repeat 15]
"""
from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cyconv                                                     # noqa: E402
from cyconv.commands.bench import bench_model                     # noqa: E402
from torch_export_check import (DenseNet121, SqueezeNet, _randomise_bn,   # noqa: E402
                                quiet_exporters)


class LeNet5(nn.Module):
    """The PyTorch tutorial's LeNet-5 (ReLU, max pools) on 1x32x32."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.flatten(F.max_pool2d(F.relu(self.conv2(x)), 2), 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CifarBN(nn.Module):
    """Issue 4's CIFAR-style CNN: [conv-bn-relu-pool] x 2 - fc - relu - dropout - fc - softmax."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 512), nn.ReLU(),
                                        nn.Dropout(0.5), nn.Linear(512, 10), nn.Softmax(dim=1))

    def forward(self, x):
        return self.classifier(self.features(x))


class PNet(nn.Module):
    """MTCNN's proposal net (facenet-pytorch's layout): PReLU, ceil-mode pool, two heads."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


# name -> (module, input shape without batch)
MODELS = {
    "lenet5": (LeNet5, (1, 32, 32)),
    "cifar_bn": (CifarBN, (3, 32, 32)),
    "squeezenet1_1": (SqueezeNet, (3, 224, 224)),
    "densenet121": (DenseNet121, (3, 224, 224)),
    "mtcnn_pnet": (PNet, (3, 120, 160)),
}


def export(model, shape, dynamo):
    """ONNX bytes of ``model`` with a dynamic batch dim."""
    x = torch.randn(1, *shape)
    buf = io.BytesIO()
    if dynamo:
        torch.onnx.export(model, (x,), dynamo=True, verbose=False, input_names=["input"],
                          dynamic_shapes={"x": {0: torch.export.Dim("N")}}).save(buf)
    else:
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17,
                          input_names=["input"], dynamic_axes={"input": {0: "N"}})
    return buf.getvalue()


def executor(blob, feed):
    """How cyconv runs ``blob`` on ``feed``: native, native+N py, or python."""
    sess = cyconv.InferenceSession(blob, threads=2)
    sess.run(None, feed)
    plan = sess._native_plan(sess._check_feed(feed))
    if plan is None:
        return "python"
    python_steps = sum("runs in Python" in note for note in plan.notes)
    return f"native+{python_steps} py" if python_steps else "native"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds per model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    exporters = quiet_exporters()
    import onnx
    names = [n for n in MODELS if not args.only or n in args.only.split(",")]
    print(f"{'model':14s} {'exporter':9s} {'cyconv ms':>10s} {'ort ms':>8s} {'ov ms':>8s} "
          f"{'vs best':>8s} {'max diff':>9s}  executor")
    for name in names:
        ctor, shape = MODELS[name]
        torch.manual_seed(0)
        module = ctor().eval()
        _randomise_bn(module, torch.Generator().manual_seed(1))
        for dynamo in exporters:
            blob = export(module, shape, dynamo)
            model = onnx.load_from_string(blob)
            feed = {model.graph.input[0].name:
                    np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)}
            record = bench_model(model, feed, threads=args.threads, repeat=args.repeat,
                                 name=name)
            res = {r["runtime"]: r for r in record["results"]}
            ms = {k: r["median_ms"] for k, r in res.items()}
            peers = [v for k, v in ms.items() if k != "cyconv" and v]
            diff = (res.get("ort") or {}).get("max_abs_diff")
            print(f"{name:14s} {'dynamo' if dynamo else 'torchscr':9s} {ms['cyconv']:10.4f} "
                  f"{ms.get('ort') or float('nan'):8.4f} {ms.get('openvino') or float('nan'):8.4f} "
                  f"{ms['cyconv'] / min(peers) if peers else float('nan'):8.2f} "
                  f"{diff if diff is not None else float('nan'):9.1e}  {executor(blob, feed)}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
