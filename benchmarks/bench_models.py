"""Whole-model latency: cyconv vs ONNX Runtime, OpenVINO (and PyTorch when installed).

Builds each network with ``cyconv.zoo`` (seeded weights, static batch) and times every runtime
in this process, interleaved round-robin after a warm-up (``cyconv.commands.bench.bench_model``
does the measuring; its docstring has the method and the per-runtime settings). Prints, per
model and batch: each runtime's median latency, cyconv's median over the best peer's
(``vs best``: < 1 means cyconv is faster), cyconv's GFLOP/s and % of the machine peak.

    python benchmarks/bench_models.py                           # the 6 issue models, batch 1 and 8
    python benchmarks/bench_models.py --models resnet18,vgg16 --batches 1 --repeat 10
    python benchmarks/bench_models.py --small                   # the small nets instead
    python benchmarks/bench_models.py --json results.json --peak 450

Not a test (nothing asserts on speed). On a shared machine, run it when the load is low and
keep the interleaving: it spreads the other processes' load over all runtimes alike.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cyconv import zoo                                         # noqa: E402
from cyconv.commands.bench import bench_model, machine_peak    # noqa: E402

MODELS = ["resnet18", "resnet50", "vgg16", "mobilenet_v2", "googlenet", "alexnet"]
# The small nets of issue 4: zoo builders, and the bundled real models with their usual input.
SMALL = ["lenet5", "cifar_cnn", "cifar_bn", "squeezenet1_1", "densenet121", "mtcnn_pnet", "ppocr_cls"]
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cyconv", "data")
BUNDLED = {"mtcnn_pnet": ("mtcnn_pnet.onnx", (3, 120, 160)),
           "ppocr_cls": ("ppocr_mobile_v2_cls.onnx", (3, 48, 192))}


def build(name, batch):
    """``(model, feed)`` for a zoo name or a bundled model, seeded input of the batch."""
    rng = np.random.default_rng(0)
    if name in BUNDLED:
        file, chw = BUNDLED[name]
        model = onnx.load(os.path.join(DATA, file))
        inp = [i for i in model.graph.input
               if i.name not in {t.name for t in model.graph.initializer}][0]
        return model, {inp.name: rng.standard_normal((batch, *chw)).astype(np.float32)}
    channels, side = zoo.DEFAULT_INPUT[name]
    model = zoo.ZOO[name](batch=batch, input_size=side)
    return model, {"input": rng.standard_normal((batch, channels, side, side))
                   .astype(np.float32)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help=f"comma list (default {','.join(MODELS)})")
    p.add_argument("--small", action="store_true", help=f"the small nets: {','.join(SMALL)}")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", default="ort,openvino,torch",
                   help="peers (missing ones are reported, not fatal)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=15, help="timed rounds per model and batch")
    p.add_argument("--block", type=int, default=4,
                   help="calls per runtime per round, the first untimed (see cyconv bench)")
    p.add_argument("--peak", type=float, default=None,
                   help="machine peak GFLOP/s (default: measured one-thread sgemm x threads)")
    p.add_argument("--json", metavar="FILE", help="also write every record to FILE")
    args = p.parse_args(argv)
    names = args.models.split(",") if args.models else (SMALL if args.small else MODELS)
    batches = [int(b) for b in args.batches.split(",")]
    compare = [c for c in args.compare.split(",") if c]
    if args.peak is None:
        peak, source = machine_peak(args.threads)
    else:
        peak, source = args.peak, "given (--peak)"
    print(f"{datetime.date.today()}  {args.threads} threads, peak {peak:.0f} GFLOP/s ({source})")
    head = (f"{'model':<14}{'batch':>6}{'cyconv ms':>11}" +
            "".join(f"{c + ' ms':>13}" for c in compare) +
            f"{'vs best':>9}{'GFLOP/s':>9}{'% peak':>8}{'max|diff|':>11}")
    print(head)
    records = []
    for name in names:
        for batch in batches:
            model, feed = build(name, batch)
            rec = bench_model(model, feed, args.threads, compare, args.warmup, args.repeat,
                              peak, name, block=args.block)
            rec["peak_source"] = source
            records.append(rec)
            rows = {r["runtime"]: r for r in rec["results"]}
            cy = rows["cyconv"]
            peers = [rows[c]["median_ms"] for c in compare if rows[c]["available"]]
            best = min(peers) if peers else None
            cells = "".join(f"{rows[c]['median_ms']:>13.2f}" if rows[c]["available"]
                            else f"{'n/a':>13}" for c in compare)
            ratio = f"{cy['median_ms'] / best:>9.2f}" if best else f"{'-':>9}"
            diffs = [rows[c]["max_abs_diff"] for c in compare if rows[c]["available"]]
            diff = f"{max(diffs):>11.1e}" if diffs else f"{'-':>11}"
            print(f"{name:<14}{batch:>6}{cy['median_ms']:>11.2f}{cells}{ratio}"
                  f"{cy['gflops']:>9.1f}{cy['pct_peak']:>7.1f}%{diff}", flush=True)
            for c in compare:
                if not rows[c]["available"]:
                    print(f"    {c}: {rows[c]['reason']}")
    print("vs best: cyconv median / best peer median (< 1: cyconv faster); "
          "max|diff|: largest |peer - cyconv| over the peers")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": str(datetime.date.today()), "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
