"""Peak resident memory of one inference, cyconv vs ONNX Runtime, each in its own process.

    python benchmarks/memory_peak.py [--model resnet50] [--batch 1] [--threads 2] [--runs 2]

The model is built once (cyconv.zoo, seeded) and saved to a temporary file; each runtime then
runs in a fresh interpreter that loads it, runs it ``--runs`` times (2: one warm-up and one
timed inference; 40: long enough for a cyconv session to have made its banded plan too,
engine/bands.py, as a server's would) and reports
``VmHWM`` (the process's resident high-water mark: weights + activations + runtime). A baseline
process that imports the same modules but loads no model is subtracted to show what the
session itself costs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, numpy as np
runtime, path, batch, threads, size, runs = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
if runtime == "cyconv":
    import cyconv
    if path != "-":
        sess = cyconv.InferenceSession(path, threads=threads)
        for _ in range(runs): sess.run(None, {"input": x})
elif runtime == "ort":
    import onnxruntime as ort
    if path != "-":
        so = ort.SessionOptions(); so.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(runs): sess.run(None, {"input": x})
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent process.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"maxrss_kib": hwm}))
"""


def measure(runtime, path, batch, threads, size, runs):
    out = subprocess.run([sys.executable, "-c", CHILD, runtime, path, str(batch), str(threads),
                          str(size), str(runs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["maxrss_kib"] / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)

    from cyconv.zoo import ZOO
    import onnx
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.model}.onnx")
        onnx.save(ZOO[args.model](input_size=args.size), path)
        size_mib = os.path.getsize(path) / 2**20
        print(f"{args.model}, batch {args.batch}, {args.threads} threads, "
              f"{args.size}x{args.size}, {args.runs} runs; model file {size_mib:.1f} MiB")
        print(f"{'runtime':<10} {'peak RSS MiB':>13} {'baseline':>9} {'session':>9}")
        for runtime in ("cyconv", "ort"):
            base = measure(runtime, "-", args.batch, args.threads, args.size, args.runs)
            peak = measure(runtime, path, args.batch, args.threads, args.size, args.runs)
            print(f"{runtime:<10} {peak:13.1f} {base:9.1f} {peak - base:9.1f}")


if __name__ == "__main__":
    main()
