"""``cyconv profile MODEL``: per-node time table, the fusions applied, peak activation memory."""
from __future__ import annotations

import numpy as np

from .run import build_feed


def add_parser(commands):
    parser = commands.add_parser("profile", help="per-node times, fusions, peak memory")
    parser.add_argument("model")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    parser.add_argument("--shape", action="append", default=[], metavar="[NAME=]1x3x224x224")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=20, help="profiled runs (median)")
    parser.add_argument("--top", type=int, default=25, help="rows of the node table (0: all)")
    parser.add_argument("--no-optimize", action="store_true", help="skip the graph passes")
    parser.add_argument("--json", metavar="TRACE.json",
                        help="also write a Chrome trace (open in Perfetto / chrome://tracing)")
    parser.set_defaults(handler=command_profile)


def command_profile(args) -> int:
    from ..engine.profiler import profile
    from ..engine.session import InferenceSession
    session = InferenceSession(args.model, threads=args.threads, optimize=not args.no_optimize)
    feed = build_feed(session, args.input, args.shape)
    result = profile(session, feed, repeats=max(1, args.repeat))
    print(f"model {args.model}: {len(result.nodes)} nodes after optimisation, "
          f"{session.threads} threads, {result.executor} executor")
    if result.executor_note:
        print(f"no native plan: {result.executor_note}")
    print(f"latency: median {np.median(result.total_ms):.3f} ms over {len(result.total_ms)} runs")
    print(f"peak activation memory: {result.peak_activation_bytes / 2**20:.2f} MiB")
    print()
    print(result.table(args.top))
    print()
    print("time by operator: " + ", ".join(f"{op} {ms:.3f} ms"
                                           for op, ms in result.by_op_type().items()))
    print(f"\nfusions applied ({len(result.fusions)}):")
    for line in result.fusions:
        print(f"  {line}")
    if args.json:
        result.write_chrome_trace(args.json)
        print(f"\nChrome trace written to {args.json}")
    return 0
