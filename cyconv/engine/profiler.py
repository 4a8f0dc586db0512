"""Per-node timing and peak activation memory of an InferenceSession run.

The profiler times what ``run`` executes. A session running natively (a NativePlan for the
feed's shapes, kernels/native.pyx) is timed step by step inside the plan's C loop, and its
activation memory is the plan's arena plus the feeds and outputs. Otherwise the profiler
drives the Python loop with an observer (``InferenceSession._execute_observed``, the same
steps as ``run``'s ``_execute_plain``); memory is then, after each step, the bytes of every
live run-time tensor (feeds and computed values; constants excluded), counting a buffer once
even when several values view it, the peak over the run being the high-water mark.
``total_ms`` times ``run`` itself. Shapes come from one observed run in either case; steps a
native plan evaluated when it was made (shape arithmetic) or skipped (a Concat whose inputs
were written in place, engine/plan.py) show 0 ms.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from ..kernels import buffers


@dataclass
class NodeTiming:
    name: str
    op_type: str
    input_shapes: list
    output_shapes: list
    times_ms: list = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.times_ms))


@dataclass
class Profile:
    nodes: list            # NodeTiming per step, in execution order
    total_ms: list         # wall time of each plain (unobserved) run
    peak_activation_bytes: int
    fusions: list
    executor: str = "python"   # "native" (one C loop, kernels/native.pyx) or "python"
    executor_note: str = ""    # python: the error that stopped the native plan, if any

    def table(self, top: int = 0) -> str:
        """Nodes sorted by median time: share of the total, shapes."""
        rows = sorted(self.nodes, key=lambda n: -n.median_ms)
        if top:
            rows = rows[:top]
        node_sum = sum(n.median_ms for n in self.nodes) or 1.0
        lines = [f"{'node':<36} {'op':<18} {'ms':>9} {'share':>6}  output shape"]
        for n in rows:
            shapes = ", ".join("x".join(map(str, s)) for s in n.output_shapes)
            lines.append(f"{n.name[:36]:<36} {n.op_type[:18]:<18} {n.median_ms:9.4f} "
                         f"{100 * n.median_ms / node_sum:5.1f}%  {shapes}")
        return "\n".join(lines)

    def by_op_type(self) -> dict:
        totals = {}
        for n in self.nodes:
            totals[n.op_type] = totals.get(n.op_type, 0.0) + n.median_ms
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def chrome_trace(self) -> dict:
        """Chrome-trace JSON (viewable in Perfetto): one 'X' event per node, median times."""
        events, ts = [], 0.0
        for n in self.nodes:
            dur = n.median_ms * 1e3
            events.append({"name": n.name, "cat": "Node", "ph": "X", "ts": round(ts, 3),
                           "dur": round(dur, 3), "pid": 0, "tid": 0,
                           "args": {"op_name": n.op_type,
                                    "input_type_shape": [list(s) for s in n.input_shapes],
                                    "output_type_shape": [list(s) for s in n.output_shapes]}})
            ts += dur
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "metadata": {"peak_activation_bytes": self.peak_activation_bytes,
                             "fusions": self.fusions}}

    def write_chrome_trace(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)


def profile(session, feed: dict, repeats: int = 10, warmup: int = 1) -> Profile:
    """Run ``session`` on ``feed`` ``warmup + repeats`` times, timing every node, then
    ``repeats`` times unobserved for ``total_ms``: the hooks (shapes, live bytes) cost time
    per step that a plain run does not pay (17 ms over DenseNet-121's 300 steps)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"profile: repeats must be >= 1 and warmup >= 0, got repeats="
                         f"{repeats}, warmup={warmup}")
    feeds = session._check_feed(feed)
    constant_ids = {id(v) for v in session._initial_slots if v is not None}
    timings = [NodeTiming(step.node_name, step.op_type, [], []) for step in session._steps]
    peak = 0
    totals = []

    # the session's buffer cache, as run() installs it: without it every big tensor
    # faults its pages in again and the profile blames the kernels for it
    outer = buffers.set_handler(session._buffers)
    try:
        for run_index in range(warmup + repeats):
            record = run_index >= warmup
            position = iter(range(len(session._steps)))

            first = run_index == warmup      # shapes and live memory are the same every run
            plan = None

            def observe(step, seconds, slots):
                nonlocal peak
                k = next(position)
                if not record:
                    return
                timing = timings[k]
                timing.times_ms.append(seconds * 1e3)
                if first:
                    timing.input_shapes = [_input_shape(slots, i, shape) for i, shape in
                                           zip(step.inputs, step.captured)]
                    timing.output_shapes = [list(np.shape(slots[o])) for o in step.outputs
                                            if o >= 0 and slots[o] is not None]
                    peak = max(peak, _live_bytes(slots, constant_ids))

            session._execute_observed(feeds, observe)
            plan = session._native_plan(feeds)
            if plan is not None and record:
                break                       # shapes known: the native plan is timed below
        executor = "python"
        if plan is not None:
            executor = "native"
            if hasattr(plan, "preferred"):      # a BandChoice: the plan runs go to now
                plan = plan.preferred()
            arrays = [a for _, a in feeds]
            seconds = np.zeros(len(plan.nodes))
            for t in timings:
                t.times_ms = []
            for run_index in range(warmup + repeats):
                with session._native_lock:      # the plan's buffers: one run at a time
                    outputs = plan.run(arrays, seconds)
                if run_index >= warmup:
                    # a node run as several steps (bands of rows, their gathers): the sum,
                    # its time on all the threads together
                    per_node = {}
                    for j, k in enumerate(plan.nodes):
                        per_node[k] = per_node.get(k, 0.0) + seconds[j]
                    for k, spent in per_node.items():
                        timings[k].times_ms.append(spent * 1e3)
            for t in timings:
                if not t.times_ms:
                    t.times_ms = [0.0]      # evaluated when the plan was made, or elided
            peak = plan.arena_bytes + sum(a.nbytes for a in arrays) + \
                sum(o.nbytes for o in outputs)
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feed)
            totals.append((time.perf_counter() - start) * 1e3)
    finally:
        buffers.set_handler(outer)
    # the graph passes' fusions, and what the native plan did for these shapes
    fusions = list(session.fusions) + (list(plan.notes) if plan is not None else [])
    note = "" if executor == "native" else (session._native_failure or "")
    return Profile(timings, totals, peak, fusions, executor, note)


def _input_shape(slots, slot, captured) -> list:
    # a weight its builder consumed has no slot: the session kept its shape for the trace
    if slot >= 0 and slots[slot] is not None:
        return list(np.shape(slots[slot]))
    return list(captured) if captured is not None else []


def _live_bytes(slots, constant_ids) -> int:
    seen, total = set(), 0
    for value in slots:
        if value is None or id(value) in constant_ids:
            continue
        base = value
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        if id(base) in seen or id(base) in constant_ids:
            continue
        seen.add(id(base))
        total += base.nbytes if isinstance(base, np.ndarray) else np.asarray(value).nbytes
    return total
