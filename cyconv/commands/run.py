"""``cyconv run MODEL``: run once (+ timed repeats); print outputs' shapes, top values, latency."""
from __future__ import annotations

import time

import numpy as np


def add_parser(commands):
    run = commands.add_parser("run", help="run a model once; print outputs and latency")
    run.add_argument("model")
    run.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                     help="feed an input from a .npy file (repeatable)")
    run.add_argument("--shape", action="append", default=[], metavar="[NAME=]1x3x224x224",
                     help="shape of a random input (default: the model's static shape)")
    run.add_argument("--threads", type=int, default=None)
    run.add_argument("--repeat", type=int, default=10, help="timed runs after the first")
    run.set_defaults(handler=command_run)


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
    from ..engine.session import InferenceSession
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
