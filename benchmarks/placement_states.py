"""Latency of cyconv and its peers split by where the host has put this VM's vCPUs.

    python benchmarks/placement_states.py [--models squeezenet1_1,cifar_cnn] [--rounds 30]

Why: on the 2-vCPU cloud VMs these benchmarks run on, a cache line passed from one vCPU to
the other takes one of two times, and the host switches between them every few seconds to
minutes, on its own:

- *near*: ~60 ns a round trip (both vCPUs on one core complex, sharing its L3);
- *far*: ~330 ns (on different dies).

It switches to far mostly while both vCPUs are kept busy for a second or more (a benchmark's
steady state), and back after the machine idles. One thread runs at the same speed in both;
two threads lose whatever they pass between their cores, so a small net at batch 1 can run
1.8x slower in the far state (SqueezeNet 1.1 at 2 threads: 3.4 ms near, 6.2 ms far; one
thread: 6.3 ms in both). A plain median mixes the two in whatever proportion the run happened
to meet, which is why the same table row moves by 10-20% between runs.

Method: as ``cyconv bench`` (same process, warmed up, runtimes interleaved in blocks whose
first call is not timed, 100 ms idle before each block), with a probe of the state 60 ms into
each idle gap: the median round trip of a cache line between this thread and one started for
the probe and joined after it (``cyconv.kernels.gemm._gemm._round_trip_ns``, 0.2 ms; it leaves
no thread spinning). Odd rounds start after 1 s of idle and even rounds after 2 s of
back-to-back cyconv calls, so that both states are met. Each block is then counted as far when
its probe is 1.3x the 10th percentile of all probes or more (if both states hold 10% of the
blocks or more), and each state gets its own medians and ratio.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_models import build  # noqa: E402

from cyconv import InferenceSession  # noqa: E402
from cyconv.commands.bench import BLOCK_GAP_S, load_peers, time_block  # noqa: E402
from cyconv.kernels.gemm import _gemm  # noqa: E402

PROBE_ROUNDS = 2000
PROBE_AT_S = 0.06


def round_trip_ns():
    """Median cross-core round trip of a cache line (cyconv's probe, gemm/probe.h)."""
    return _gemm._round_trip_ns(PROBE_ROUNDS)


def split_states(probes, ratio=1.3):
    """The probe value from which a block counts as far: ``ratio`` x the 10th percentile of
    all probes (near ~60 ns, far ~330 ns here), or None when fewer than 10% of the blocks
    fall on either side (one state met, or too few of the other to compare)."""
    p = np.asarray(probes, dtype=float)
    cut = ratio * float(np.percentile(p, 10))
    far = int((p >= cut).sum())
    if min(far, len(p) - far) < max(3, len(p) // 10):
        return None
    return cut


def measure(name, batch, threads, compare, rounds, block):
    model, feed = build(name, batch)
    model_bytes = model.SerializeToString()
    session = InferenceSession(model, threads=threads)
    peers, _, reasons = load_peers(model_bytes, feed, threads, compare)
    for peer, why in reasons.items():
        print(f"    {peer}: {why}")
    runners = {"cyconv": lambda f: session.run(None, f), **peers}
    for run in runners.values():
        for _ in range(3):
            run(feed)
    keys = list(runners)
    blocks = {k: [] for k in keys}      # (probe ns, block median ms)
    for r in range(rounds):
        if r % 2:
            time.sleep(1.0)
        else:
            end = time.perf_counter() + 2.0
            while time.perf_counter() < end:
                session.run(None, feed)
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for key in order:
            # the probe in the middle of the idle gap: after the last block's spinning threads
            # (cyconv 50 ms, ONNX Runtime ~35 ms) and 40 ms before the next block (a probe
            # right before cyconv's block slowed its first calls)
            time.sleep(PROBE_AT_S)
            probe = round_trip_ns()
            time.sleep(BLOCK_GAP_S - PROBE_AT_S)
            blocks[key].append((probe, float(np.median(time_block(runners[key], feed, block)))))
    return keys, {k: np.asarray(v) for k, v in blocks.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="squeezenet1_1,cifar_cnn")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", default="ort,openvino")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--block", type=int, default=6, help="calls per runtime per round, "
                   "the first untimed")
    args = p.parse_args(argv)
    compare = [c for c in args.compare.split(",") if c]
    print(f"{datetime.date.today()}  {args.threads} threads, batch {args.batch}; probe: "
          f"median cross-core round trip before each block")
    print(f"{'model':<14}{'state':>6}{'blocks':>9}{'probe ns':>9}{'cyconv ms':>11}"
          + "".join(f"{c + ' ms':>13}" for c in compare) + f"{'vs best':>9}")
    for name in args.models.split(","):
        keys, blocks = measure(name, args.batch, args.threads, compare, args.rounds,
                               max(2, args.block))
        probes = np.concatenate([b[:, 0] for b in blocks.values()])
        far_from = split_states(probes)
        for state in ("all", "near", "far"):
            if state != "all" and far_from is None:
                continue
            sel = {k: (np.ones(len(b), bool) if state == "all" else
                       (b[:, 0] >= far_from) == (state == "far")) for k, b in blocks.items()}
            if not all(m.any() for m in sel.values()):
                continue
            cy = float(np.median(blocks["cyconv"][sel["cyconv"], 1]))
            cells, peers = "", []
            for c in compare:
                if c in blocks:
                    v = float(np.median(blocks[c][sel[c], 1]))
                    peers.append(v)
                    cells += f"{v:>13.3f}"
                else:
                    cells += f"{'n/a':>13}"
            ratio = f"{cy / min(peers):>9.2f}" if peers else f"{'-':>9}"
            counts = "/".join(str(int(m.sum())) for m in sel.values())
            print(f"{name:<14}{state:>6}{counts:>9}"
                  f"{float(np.median(blocks['cyconv'][sel['cyconv'], 0])):>9.0f}{cy:>11.3f}"
                  f"{cells}{ratio}", flush=True)
    print("vs best: cyconv median / best peer median over the blocks of that state "
          "(< 1: cyconv faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
