"""The ``cyconv`` command line: ``run`` and ``demo`` (see ``cyconv --help``)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from .errors import CyconvError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cyconv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a model once; print outputs and latency")
    run.add_argument("model")
    run.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                     help="feed an input from a .npy file (repeatable)")
    run.add_argument("--shape", action="append", default=[], metavar="[NAME=]1x3x224x224",
                     help="shape of a random input (default: the model's static shape)")
    run.add_argument("--threads", type=int, default=None)
    run.add_argument("--repeat", type=int, default=10, help="timed runs after the first")
    run.set_defaults(handler=command_run)

    demo = commands.add_parser("demo", help="MTCNN face detection on the bundled photo")
    demo.add_argument("--image", default=None, help="an 8-bit RGB PNG (default: bundled)")
    demo.add_argument("--threads", type=int, default=None)
    demo.add_argument("--output", default="cyconv_demo.png",
                      help="PNG with the boxes drawn (default: ./cyconv_demo.png)")
    demo.set_defaults(handler=command_demo)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CyconvError, OSError, ValueError) as exc:
        print(f"cyconv {args.command}: error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------ run
def _parse_shape(text: str) -> tuple:
    try:
        return tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad shape {text!r}: expected e.g. 1x3x224x224") from None


def build_feed(session, input_args, shape_args, rng=None) -> dict:
    """Feed from ``NAME=FILE.npy`` files, else random data of ``--shape`` or the static shape."""
    rng = rng or np.random.default_rng(0)
    inputs = session.get_inputs()
    files = dict(arg.split("=", 1) for arg in input_args)
    shapes = {}
    for arg in shape_args:
        name, _, text = arg.rpartition("=")
        shapes[name or (inputs[0].name if len(inputs) == 1 else "")] = _parse_shape(text)
    if "" in shapes:
        raise ValueError("the model has several inputs: write --shape NAME=1x3x224x224")
    feed = {}
    for info in inputs:
        if info.name in files:
            feed[info.name] = np.load(files[info.name])
            continue
        shape = shapes.get(info.name)
        if shape is None:
            if info.shape is None or not all(isinstance(d, int) for d in info.shape[1:]):
                raise ValueError(f"input {info.name!r} has dynamic shape {info.shape}: "
                                 f"pass --shape {info.name}=1x...")
            shape = tuple(d if isinstance(d, int) else 1 for d in info.shape)
        element = info.type[len("tensor("):-1]   # e.g. "float", "double", "int64"
        dtype = np.dtype({"float": "float32", "double": "float64"}.get(element, element))
        feed[info.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                           else np.zeros(shape, dtype))
    return feed


def command_run(args) -> int:
    from .engine.session import InferenceSession
    start = time.perf_counter()
    session = InferenceSession(args.model, threads=args.threads)
    load_ms = (time.perf_counter() - start) * 1e3
    feed = build_feed(session, args.input, args.shape)
    start = time.perf_counter()
    outputs = session.run(None, feed)
    first_ms = (time.perf_counter() - start) * 1e3
    times = []
    for _ in range(max(0, args.repeat)):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    print(f"model {args.model}: loaded in {load_ms:.1f} ms, {session.threads} threads")
    for name, x in feed.items():
        print(f"  input  {name}: {list(x.shape)} {x.dtype}")
    for info, y in zip(session.get_outputs(), outputs):
        flat = y.reshape(-1)
        top = np.argsort(-flat, kind="stable")[:5] if y.dtype.kind in "fiu" else []
        tops = ", ".join(f"[{i}]={flat[i]:.4g}" for i in top)
        print(f"  output {info.name}: {list(y.shape)} {y.dtype}  top: {tops}")
    median = f", median of {len(times)} runs {np.median(times):.3f} ms" if times else ""
    print(f"latency: first run {first_ms:.3f} ms{median}")
    return 0


# ----------------------------------------------------------------------------------- demo
def draw_boxes(image: np.ndarray, boxes, colour=(255, 32, 32), width=3) -> np.ndarray:
    out = image.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in np.round(np.asarray(boxes)[:, :4]).astype(int):
        x1, x2 = np.clip([x1, x2], 0, w - 1)
        y1, y2 = np.clip([y1, y2], 0, h - 1)
        out[y1:y1 + width, x1:x2 + 1] = colour
        out[max(y2 - width + 1, 0):y2 + 1, x1:x2 + 1] = colour
        out[y1:y2 + 1, x1:x1 + width] = colour
        out[y1:y2 + 1, max(x2 - width + 1, 0):x2 + 1] = colour
    return out


def command_demo(args) -> int:
    from .engine.session import InferenceSession
    from .imageio import read_png, write_png
    from .mtcnn import DATA_DIR, MTCNN

    path = args.image or os.path.join(DATA_DIR, "astronaut.png")
    image = read_png(path)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"{path}: expected an RGB image")
    image = image[:, :, :3]
    detector = MTCNN(lambda p: InferenceSession(p, threads=args.threads))
    detector.detect(image)  # warm-up: first-run allocations are not what users pay per image
    times = []
    for _ in range(5):
        start = time.perf_counter()
        boxes, landmarks = detector.detect(image)
        times.append((time.perf_counter() - start) * 1e3)
    faces = [{"box": [round(float(v), 1) for v in b[:4]], "score": round(float(b[4]), 4),
              "landmarks": [[round(float(v), 1) for v in p] for p in m]}
             for b, m in zip(boxes, landmarks)]
    print(json.dumps({"image": path, "faces": faces}, indent=2))
    write_png(args.output, draw_boxes(image, boxes))
    print(f"{len(faces)} face(s); boxes drawn into {args.output}")
    print(f"MTCNN (PNet pyramid + RNet + ONet) on {image.shape[1]}x{image.shape[0]}: "
          f"median {np.median(times):.1f} ms over {len(times)} runs")
    return 0
