"""``cyconv demo``: MTCNN face detection on the bundled photo (the package's main job).

PNet, RNet and ONet all run densely (RNet/ONet through ``fc_to_conv``); the demo prints the
faces as JSON, draws them into a PNG, and times dense evaluation against crop-by-crop
evaluation of the same windows.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np


def add_parser(commands):
    demo = commands.add_parser("demo", help="MTCNN face detection on the bundled photo")
    demo.add_argument("--image", default=None, help="an 8-bit RGB PNG (default: bundled)")
    demo.add_argument("--threads", type=int, default=None)
    demo.add_argument("--output", default="cyconv_demo.png",
                      help="PNG with the boxes drawn (default: ./cyconv_demo.png)")
    demo.add_argument("--runs", type=int, default=5, help="timed detections (default 5)")
    demo.add_argument("--no-compare", action="store_true",
                      help="skip the dense vs crop-by-crop timing")
    demo.set_defaults(handler=command_demo)


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
    from ..engine.session import InferenceSession
    from ..imageio import read_png, write_png
    from ..mtcnn import DATA_DIR, MTCNN

    path = args.image or os.path.join(DATA_DIR, "astronaut.png")
    image = read_png(path)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"{path}: expected an RGB image")
    image = image[:, :, :3]
    detector = MTCNN(lambda p: InferenceSession(p, threads=args.threads))
    detector.detect(image)  # warm-up: first-run allocations are not what users pay per image
    times = []
    for _ in range(max(args.runs, 1)):
        start = time.perf_counter()
        boxes, landmarks = detector.detect(image)
        times.append((time.perf_counter() - start) * 1e3)
    faces = [{"box": [round(float(v), 1) for v in b[:4]], "score": round(float(b[4]), 4),
              "landmarks": [[round(float(v), 1) for v in p] for p in m]}
             for b, m in zip(boxes, landmarks)]
    print(json.dumps({"image": path, "faces": faces}, indent=2))
    write_png(args.output, draw_boxes(image, boxes))
    print(f"{len(faces)} face(s); boxes drawn into {args.output}")
    print(f"MTCNN (PNet pyramid + RNet + ONet, all dense) on {image.shape[1]}x{image.shape[0]}: "
          f"median {np.median(times):.1f} ms over {len(times)} runs")
    if not args.no_compare:
        trace = []
        detector.detect(image, trace=trace)
        print_comparison(detector.dense_vs_crops(trace))
    return 0


def print_comparison(rows):
    """Table of dense vs crop-by-crop time per stage, and the overall speed-up."""
    print("dense (fully convolutional) vs crop-by-crop evaluation of the same windows:")
    print(f"  {'stage':<6}{'windows':>9}{'dense ms':>11}{'crops ms':>11}{'speed-up':>10}"
          f"{'max |dprob|':>13}")
    for r in rows:
        print(f"  {r['stage']:<6}{r['windows']:>9}{r['dense_s'] * 1e3:>11.1f}"
              f"{r['crops_s'] * 1e3:>11.1f}{r['crops_s'] / r['dense_s']:>9.1f}x"
              f"{r['max_prob_diff']:>13.2g}")
    dense = sum(r["dense_s"] for r in rows)
    crops = sum(r["crops_s"] for r in rows)
    print(f"  {'total':<6}{sum(r['windows'] for r in rows):>9}{dense * 1e3:>11.1f}"
          f"{crops * 1e3:>11.1f}{crops / dense:>9.1f}x")
    print(f"dense evaluation speed-up over crop-by-crop: {crops / dense:.1f}x "
          "(PNet is exact; RNet/ONet differ where their ceil-mode pool overhangs a crop)")
