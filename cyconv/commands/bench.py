"""``cyconv bench MODEL``: cyconv side by side with ONNX Runtime / OpenVINO / PyTorch.

Per runtime: median and p90 latency, effective GFLOP/s (``cyconv.zoo.flops``: 2 x the
multiply-adds of Conv/Gemm/MatMul), % of the machine's peak, and max |output - cyconv's| for
each peer. Method: every runtime is loaded in this process with the same thread count (default
2), warmed up, then timed round-robin (each round runs every runtime in turn, the order rotated
every round) so that load from other processes falls on all of them alike. In a round each
runtime runs a block of ``--block`` calls back to back and the first is not timed: runtimes
whose idle threads spin after a call (ONNX Runtime for ~55 ms, cyconv for 50 ms, OpenVINO's
TBB for ~1 ms) would otherwise slow the next runtime's calls, which measures the neighbour, not
the runtime (measured: OpenVINO's MobileNetV2 4.5 ms alone, 9.4 ms in one-call rounds), so
each block also starts after 100 ms of idle time; ``--json`` prints the whole record
(schema in :func:`bench_model`'s docstring). MODEL is an ONNX file or a ``cyconv.zoo`` name
(``resnet18``, ...) built on the fly with seeded weights.

Peak: measured, not nominal: ``threads x`` the best one-thread GFLOP/s of numpy's OpenBLAS
sgemm (M = N = K = 1024) in a child process with ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``
unset (these machines set them, halving OpenBLAS). One thread, scaled, because a shared machine
rarely leaves every core idle for the probe at once. ``--peak GFLOPS`` overrides it; if the
measurement fails, the nominal ``threads x 2 FMA units x 16 lanes x 2 flops x GHz`` (the OS's
clock, which turbo exceeds) is used.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from .bench_peers import LOADERS, NAMES, PeerUnavailable

DEFAULT_COMPARE = "ort,openvino"
# Idle time before each block: the threads of the runtime that ran last spin for a while
# (measured as CPU time burnt while idle after a call: ONNX Runtime ~55 ms, cyconv 50 ms,
# OpenVINO ~1 ms) and would take the cores from the next one's timed calls on a small
# machine. With 20 ms, ONNX Runtime's spinning worker still held one of two cores during
# cyconv's block: CIFAR CNN read 1.96x ONNX Runtime there and 1.47x with 100 ms.
BLOCK_GAP_S = 0.1


def add_parser(commands):
    p = commands.add_parser("bench", help="latency vs ONNX Runtime / OpenVINO / PyTorch")
    p.add_argument("model", help="ONNX file, or a cyconv.zoo name (resnet18, vgg16, ...)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", default=DEFAULT_COMPARE,
                   help=f"comma-separated peers among {','.join(LOADERS)} "
                        f"(default {DEFAULT_COMPARE}; '' for none)")
    p.add_argument("--shape", action="append", default=[], metavar="[NAME=]1x3x224x224",
                   help="input shape (files with dynamic dims other than the batch)")
    p.add_argument("--size", type=int, default=None, help="zoo models: input side")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs of each runtime")
    p.add_argument("--repeat", type=int, default=20, help="timed rounds")
    p.add_argument("--block", type=int, default=4,
                   help="calls per runtime per round, the first untimed (1: one timed call)")
    p.add_argument("--peak", type=float, default=None, metavar="GFLOPS",
                   help="machine peak for the %% column (default: measured sgemm peak)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(handler=command_bench)


# ------------------------------------------------------------------------------- inputs

def load_model(spec, batch, size=None):
    """``(ModelProto, name)`` from a file path or a zoo name (zoo: static batch ``batch``)."""
    import onnx

    from .. import zoo
    if spec in zoo.ZOO and not os.path.exists(spec):
        channels, side = zoo.DEFAULT_INPUT[spec]
        return zoo.ZOO[spec](batch=batch, input_size=size or side), spec
    if not os.path.exists(spec):
        raise ValueError(f"{spec!r} is neither a file nor a zoo model ({', '.join(zoo.ZOO)})")
    return onnx.load(spec), os.path.basename(spec)


def make_feed(model, batch, shape_args=(), seed=0):
    """Seeded standard-normal float32 inputs: the model's static dims, dim 0 = ``batch``."""
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    shapes = {}
    for arg in shape_args:
        name, _, text = arg.rpartition("=")
        shapes[name or inputs[0].name] = tuple(int(d) for d in text.lower().split("x"))
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in inputs:
        if inp.name in shapes:
            shape = shapes[inp.name]
        else:
            dims = [d.dim_value if d.HasField("dim_value") else None
                    for d in inp.type.tensor_type.shape.dim]
            if dims and dims[0] not in (None, batch):
                raise ValueError(f"input {inp.name!r} has a fixed batch of {dims[0]}; "
                                 f"--batch {batch} does not fit")
            if dims:
                dims[0] = batch
            if any(d is None for d in dims):
                raise ValueError(f"input {inp.name!r} has dynamic dims {dims}: "
                                 f"pass --shape {inp.name}=...")
            shape = tuple(dims)
        feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


# ------------------------------------------------------------------------------- peak

_SGEMM_PROBE = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
b = a.T.copy(); c = a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(25))
print(2 * 1024**3 / best / 1e9)
"""


def nominal_peak(threads):
    """``threads x 2 FMA units x 16 lanes (AVX-512) x 2 flops x GHz`` from the OS's clock."""
    ghz = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    ghz = float(line.split(":")[1]) / 1e3
                    break
    except OSError:
        pass
    ghz = ghz or 3.0
    return threads * 2 * 16 * 2 * ghz, f"nominal: {threads} cores x 2 FMA x 16 lanes x 2 x {ghz:.2f} GHz"


def machine_peak(threads):
    """``(GFLOP/s, how it was derived)``: measured OpenBLAS sgemm peak, else nominal."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
    try:
        out = subprocess.run([sys.executable, "-c", _SGEMM_PROBE], env=env, timeout=120,
                             capture_output=True, text=True, check=True).stdout
        one = float(out.split()[-1])
        return threads * one, (f"measured: {threads} x {one:.0f}, the best of 25 one-thread "
                               f"numpy/OpenBLAS sgemm 1024^3")
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return nominal_peak(threads)


# ------------------------------------------------------------------------------- timing

def _stats(times_ms):
    t = np.asarray(times_ms)
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
            "min_ms": float(t.min()), "runs": len(t)}


def _max_diff(outs, ref):
    if len(outs) != len(ref):
        return float("inf")
    d = 0.0
    for a, b in zip(outs, ref):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return float("inf")
        if a.size:
            d = max(d, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return d


def load_peers(model_bytes, feed, threads, compare):
    """The peers of ``compare`` loaded for ``feed``: ({peer: run(feed)}, {peer: version},
    {peer: why it is unavailable}); ValueError for a name not in LOADERS."""
    runners, versions, reasons = {}, {}, {}
    for peer in compare:
        if peer not in LOADERS:
            raise ValueError(f"unknown peer {peer!r}: choose among {', '.join(LOADERS)}")
        try:
            runners[peer], versions[peer] = LOADERS[peer](model_bytes, feed, threads)
        except PeerUnavailable as exc:
            reasons[peer] = str(exc)
    return runners, versions, reasons


def time_block(run, feed, block):
    """Times in ms of ``block`` calls of ``run(feed)`` back to back, the first not timed
    (unless it is the only one): it pays for the threads that slept through the idle gap."""
    times = []
    for b in range(block):
        start = time.perf_counter()
        run(feed)
        if b > 0 or block == 1:
            times.append((time.perf_counter() - start) * 1e3)
    return times


def bench_model(model, feed, threads=2, compare=("ort", "openvino"), warmup=3, repeat=20,
                peak=None, name="model", block=4):
    """Time cyconv and its peers on one model and feed, interleaved.

    Returns
    -------
    dict, the ``--json`` schema::

        {"model": str, "batch": int, "threads": int,
         "inputs": {name: [dims]}, "gflop": float (per run, whole batch),
         "peak_gflops": float, "peak_source": str, "warmup": int, "repeat": int,
         "block": int,
         "machine": {"cpu": str, "logical_cpus": int, "pool_isa": str, "gemm_isa": str},
         "results": [{"runtime": "cyconv" | "ort" | "openvino" | "torch", "name": str,
                      "available": bool, "reason": str | None, "version": str | None,
                      "median_ms", "p90_ms", "min_ms": float | None, "runs": int,
                      "gflops": float | None, "pct_peak": float | None,
                      "max_abs_diff": float | None (vs cyconv; None for cyconv itself),
                      "ratio": float | None (cyconv median / this runtime's median)}]}
    """
    from .. import __version__, zoo
    from ..engine.session import InferenceSession
    model_bytes = model.SerializeToString()
    batch = int(next(iter(feed.values())).shape[0]) if feed else 1
    gflop = zoo.flops(model, {k: v.shape for k, v in feed.items()}) / 1e9
    if peak is None:
        peak, peak_source = machine_peak(threads)
    else:
        peak_source = "given (--peak)"
    session = InferenceSession(model, threads=threads)
    runners, versions, reasons = load_peers(model_bytes, feed, threads, compare)
    runners = {"cyconv": lambda f: session.run(None, f), **runners}
    versions["cyconv"] = __version__
    # Warm-up (first-run allocations, JIT / plan caches), and the outputs compared.
    outputs = {}
    for key, run in list(runners.items()):
        try:
            for _ in range(max(1, warmup)):
                outputs[key] = run(feed)
        except Exception as exc:   # noqa: BLE001: a peer failing at run time is reported
            if key == "cyconv":
                raise
            reasons[key] = f"failed to run: {exc}"
            del runners[key]
    keys = list(runners)
    times = {k: [] for k in keys}
    block = max(1, block)
    for r in range(max(1, repeat)):
        order = keys[r % len(keys):] + keys[:r % len(keys)]   # rotate who goes first
        for key in order:
            if block > 1:
                time.sleep(BLOCK_GAP_S)    # let the last runtime's spinning threads settle
            times[key] += time_block(runners[key], feed, block)
    base = float(np.median(times["cyconv"]))
    results = []
    for key in ["cyconv", *compare]:
        row = {"runtime": key, "name": NAMES[key], "available": key in runners,
               "reason": reasons.get(key), "version": versions.get(key) if key in runners
               else None, "median_ms": None, "p90_ms": None, "min_ms": None, "runs": 0,
               "gflops": None, "pct_peak": None, "max_abs_diff": None, "ratio": None}
        if key in runners:
            row.update(_stats(times[key]))
            row["gflops"] = gflop / (row["median_ms"] / 1e3)
            row["pct_peak"] = 100.0 * row["gflops"] / peak
            row["ratio"] = base / row["median_ms"]
            if key != "cyconv":
                row["max_abs_diff"] = _max_diff(outputs[key], outputs["cyconv"])
        results.append(row)
    from ..kernels import pool as _pool
    from ..kernels.gemm import _gemm
    return {"model": name, "batch": batch, "threads": threads,
            "inputs": {k: list(v.shape) for k, v in feed.items()}, "gflop": gflop,
            "peak_gflops": peak, "peak_source": peak_source, "warmup": warmup,
            "repeat": repeat, "block": block,
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "logical_cpus": os.cpu_count(), "pool_isa": _pool.isa(),
                        "gemm_isa": _gemm.isa()},
            "results": results}


def format_table(record):
    """The record as a plain-text table (one row per runtime)."""
    lines = [f"{record['model']}: batch {record['batch']}, {record['threads']} threads, "
             f"{record['gflop']:.3f} GFLOP/run, peak {record['peak_gflops']:.0f} GFLOP/s "
             f"({record['peak_source']})",
             f"{'runtime':<14}{'median ms':>11}{'p90 ms':>10}{'GFLOP/s':>10}{'% peak':>8}"
             f"{'cyconv/x':>10}{'max|diff|':>11}"]
    for row in record["results"]:
        if not row["available"]:
            lines.append(f"{row['name']:<14}  not available: {row['reason']}")
            continue
        diff = "" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}"
        lines.append(f"{row['name']:<14}{row['median_ms']:>11.3f}{row['p90_ms']:>10.3f}"
                     f"{row['gflops']:>10.1f}{row['pct_peak']:>7.1f}%{row['ratio']:>10.2f}"
                     f"{diff:>11}")
    lines.append("cyconv/x: cyconv's median over this runtime's (< 1: cyconv is faster)")
    return "\n".join(lines)


def command_bench(args) -> int:
    if args.batch < 1 or args.threads < 1:
        raise ValueError("--batch and --threads must be >= 1")
    compare = [p.strip() for p in args.compare.split(",") if p.strip()]
    model, name = load_model(args.model, args.batch, args.size)
    feed = make_feed(model, args.batch, args.shape)
    record = bench_model(model, feed, args.threads, compare, args.warmup, args.repeat,
                         args.peak, name, block=args.block)
    print(json.dumps(record, indent=2) if args.json else format_table(record))
    return 0
