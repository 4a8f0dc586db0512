"""Convolution layers of the target networks: cyconv vs ONNX Runtime, same process.

Each layer is a 1-node ONNX model (Conv / ConvTranspose / Gemm with seeded weights) run through
``cyconv.InferenceSession`` and ``onnxruntime.InferenceSession`` (default optimisation level,
so ORT may use its NCHWc kernels), interleaved round-robin in blocks, median of many calls
(see bench_gemm.interleaved).

    python benchmarks/bench_conv_layers.py [--threads 1,2] [--rounds 11] [--filter dw]

Columns: median ms of each, ratio cyconv / ORT (< 1: cyconv faster), cyconv GFLOP/s.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cyconv  # noqa: E402
from bench_gemm import interleaved, load_note  # noqa: E402

# name, x shape, op, W shape, attrs. Legend: x (N, C, H, W); Conv W (M, C/g, KH, KW);
# ConvTranspose W (C, M/g, KH, KW); Gemm W (N_out, K) with transB.
LAYERS = [
    ("resnet conv1 7x7 s2 3->64", (1, 3, 224, 224), "Conv", (64, 3, 7, 7),
     dict(strides=[2, 2], pads=[3, 3, 3, 3])),
    ("3x3 64->64 56x56", (1, 64, 56, 56), "Conv", (64, 64, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("3x3 128->128 28x28", (1, 128, 28, 28), "Conv", (128, 128, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("3x3 256->256 14x14", (1, 256, 14, 14), "Conv", (256, 256, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("3x3 512->512 7x7", (1, 512, 7, 7), "Conv", (512, 512, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("3x3 s2 64->128 56x56", (1, 64, 56, 56), "Conv", (128, 64, 3, 3),
     dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    ("1x1 256->64 56x56", (1, 256, 56, 56), "Conv", (64, 256, 1, 1), {}),
    ("1x1 64->256 56x56", (1, 64, 56, 56), "Conv", (256, 64, 1, 1), {}),
    ("1x1 s2 256->512 56x56", (1, 256, 56, 56), "Conv", (512, 256, 1, 1), dict(strides=[2, 2])),
    # small planes, one image: MobileNetV2's and ResNet-50's late 1x1 convs
    ("1x1 96->576 14x14", (1, 96, 14, 14), "Conv", (576, 96, 1, 1), {}),
    ("1x1 576->96 14x14", (1, 576, 14, 14), "Conv", (96, 576, 1, 1), {}),
    ("1x1 160->960 7x7", (1, 160, 7, 7), "Conv", (960, 160, 1, 1), {}),
    ("1x1 960->160 7x7", (1, 960, 7, 7), "Conv", (160, 960, 1, 1), {}),
    ("1x1 256->1024 14x14", (1, 256, 14, 14), "Conv", (1024, 256, 1, 1), {}),
    ("1x1 1024->256 14x14", (1, 1024, 14, 14), "Conv", (256, 1024, 1, 1), {}),
    ("1x1 512->2048 7x7", (1, 512, 7, 7), "Conv", (2048, 512, 1, 1), {}),
    ("1x1 2048->512 7x7", (1, 2048, 7, 7), "Conv", (512, 2048, 1, 1), {}),
    ("3x3 64->64 56x56 batch 8", (8, 64, 56, 56), "Conv", (64, 64, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("dw 3x3 32 112x112", (1, 32, 112, 112), "Conv", (32, 1, 3, 3),
     dict(pads=[1, 1, 1, 1], group=32)),
    ("dw 3x3 s2 96 112x112", (1, 96, 112, 112), "Conv", (96, 1, 3, 3),
     dict(strides=[2, 2], pads=[1, 1, 1, 1], group=96)),
    ("dw 3x3 144 56x56", (1, 144, 56, 56), "Conv", (144, 1, 3, 3),
     dict(pads=[1, 1, 1, 1], group=144)),
    ("dw 3x3 s2 144 56x56", (1, 144, 56, 56), "Conv", (144, 1, 3, 3),
     dict(strides=[2, 2], pads=[1, 1, 1, 1], group=144)),
    ("dw 3x3 960 7x7", (1, 960, 7, 7), "Conv", (960, 1, 3, 3),
     dict(pads=[1, 1, 1, 1], group=960)),
    ("grouped 3x3 g32 128 56x56", (1, 128, 56, 56), "Conv", (128, 4, 3, 3),
     dict(pads=[1, 1, 1, 1], group=32)),
    ("grouped 3x3 g2 96->256 27x27", (1, 96, 27, 27), "Conv", (256, 48, 5, 5),
     dict(pads=[2, 2, 2, 2], group=2)),
    ("convT 4x4 s2 64->32 28x28", (1, 64, 28, 28), "ConvTranspose", (64, 32, 4, 4),
     dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    ("convT 2x2 s2 256->128 14x14 b8", (8, 256, 14, 14), "ConvTranspose", (256, 128, 2, 2),
     dict(strides=[2, 2])),
    ("FC 4096->1000 batch 1", (1, 4096), "Gemm", (1000, 4096), dict(transB=1)),
    ("FC 4096->1000 batch 8", (8, 4096), "Gemm", (1000, 4096), dict(transB=1)),
    ("FC 9216->4096 batch 1", (1, 9216), "Gemm", (4096, 9216), dict(transB=1)),
]


def flops(xs, op, ws, attrs, ys):
    if op == "Gemm":
        return 2.0 * xs[0] * ws[0] * ws[1]
    if op == "Conv":
        return 2.0 * np.prod(ys) * np.prod(ws[1:])
    return 2.0 * np.prod(xs) * np.prod(ws[1:])          # ConvTranspose: per input pixel


def model(xs, op, ws, attrs, rng):
    w = (rng.standard_normal(ws) / np.sqrt(np.prod(ws[1:]))).astype(np.float32)
    nb = ws[0] if op in ("Conv", "Gemm") else ws[1] * attrs.get("group", 1)
    b = rng.standard_normal(nb).astype(np.float32)
    node = helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)
    g = helper.make_graph([node], "layer",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xs))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"# {load_note()}; ORT {ort.__version__}, default optimisation level")
    print(f"{'layer':<34}{'thr':>4}{'cyconv ms':>11}{'ORT ms':>9}{'cy/ORT':>8}{'cy GF/s':>9}")
    for nt in [int(t) for t in args.threads.split(",")]:
        for name, xs, op, ws, attrs in LAYERS:
            if args.filter and args.filter not in name:
                continue
            m = model(xs, op, ws, attrs, rng)
            x = rng.standard_normal(xs).astype(np.float32)
            so = ort.SessionOptions()
            so.intra_op_num_threads = nt
            so.inter_op_num_threads = 1
            rs = ort.InferenceSession(m.SerializeToString(), so,
                                      providers=["CPUExecutionProvider"])
            cs = cyconv.InferenceSession(m, threads=nt)
            y_ort = rs.run(None, {"x": x})[0]
            y_cy = cs.run(None, {"x": x})[0]
            err = float(np.max(np.abs(y_ort - y_cy)) / max(1e-30, np.max(np.abs(y_ort))))
            t = interleaved({"cy": lambda: cs.run(None, {"x": x}),
                             "ort": lambda: rs.run(None, {"x": x})}, rounds=args.rounds,
                            min_time=0.005)
            gf = flops(xs, op, ws, attrs, y_ort.shape) / 1e9
            flag = "" if err < 1e-4 else f"  MISMATCH {err:.1e}"
            print(f"{name:<34}{nt:>4}{t['cy'] * 1e3:>11.3f}{t['ort'] * 1e3:>9.3f}"
                  f"{t['cy'] / t['ort']:>8.2f}{gf / t['cy']:>9.1f}{flag}", flush=True)
    print(f"# after: {load_note()}")


if __name__ == "__main__":
    main()
