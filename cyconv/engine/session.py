"""InferenceSession: ONNX Runtime's API over a graph compiled once at load.

Load:   import (validate) -> check every op is supported (all missing ones named at once) ->
        graph passes (constant folding, BN folding, fusions; ``engine/passes``, skipped with
        ``optimize=False``) -> build each node's kernel closure once
        (attribute checks, weight preparation; an original weight the builder packed is
        dropped, so weights exist once) -> a step list with integer value slots and,
        per step, the slots that die after it (so memory is released as soon as a value is dead).
Run:    validate the feed. When every step has a native form (``run.native``, registry.py)
        the graph runs as a native plan: each op prepared for the feed's shapes, the
        intermediates at fixed offsets of one arena (plan.py), the steps called in one C
        loop without the GIL (kernels/native.pyx); made on the first run of each set of
        input shapes and kept for the next ones. Otherwise (or while another thread runs
        the native plan) one tight Python loop over the steps, every call with its own slot
        list, so many Python threads may share one session; kernels release the GIL.
        Arrays of >= 32 MiB (batched activations) come from the session's buffer cache
        (``kernels/buffers.pyx``): a run reuses the blocks the previous one freed instead
        of faulting fresh pages in.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .. import ops  # noqa: F401  (registers every operator)
from . import passes
from .._threads import resolve_threads
from ..converters.onnx_import import import_model
from ..kernels import buffers
from ..kernels.conv import fuse_inverted_residual
from ..kernels import native as _native
from ..errors import CyconvError, InputError, UnsupportedOpError
from .graph import Graph, ValueInfo
from .bands import BandChoice, bands_enabled, plan_bands, section_deps, section_memory
from .plan import assign_offsets, assign_offsets_by_plane, concats_in_place, fuse_blocks
from .registry import (ALIAS, SHAPE_ONLY, NodeContext, RunContext, build_with_attrs,
                       consumed_inputs, lookup, model_hints)

# A native plan whose activations take this many bytes or fewer in all gives each value a
# buffer of its own instead of reusing buffers whose values are dead: it costs at most one
# core's L2 (1 MiB on the Zen 4 measured), and every byte is then written by the same thread
# run after run (the pool deals each op's pieces to the same threads, gemm/pool.c), so no
# cache line has to move to the other core before it is overwritten. In process, 2 threads,
# own buffers / reused: CIFAR CNN (0.39 MB) 0.972-0.980 (near vCPUs), 0.985 (far), LeNet-5
# 1.00; above it PNet 1x3x120x160 (1.8 MB) 0.983 but PaddleOCR cls (2.3 MB) 1.034 and
# SqueezeNet (11.7 MB) 1.013-1.035 near.
PRIVATE_ARENA_BYTES = 1 << 20

# Above that, values reuse only the buffers of values of their own plane size
# (plan.py assign_offsets_by_plane: a reused line is then rewritten by the thread that
# wrote it) while that takes this many bytes or fewer; beyond, one arena shared by all.
# In process, 2 threads, by plane / shared, vCPUs near and far (placement probe):
# SqueezeNet 1.005-1.011 / 0.92, GoogLeNet 0.94 far, PaddleOCR cls 0.97 / 0.90,
# DenseNet-121 1.00 / 0.98, PNet 0.99 / 1.03, ResNet-50 (16 MiB by plane) 1.00 / 0.99.
# Grouping about doubles the arena (VGG-16: 24.5 -> 47 MiB), and the large, compute-bound
# models gained nothing from it.
PLANE_ARENA_BYTES = 12 << 20

# Most bytes of freed activation blocks a session keeps for its next run (buffers.pyx).
BUFFER_CACHE_BYTES = 1 << 30
# Native plans kept per session, one per set of input shapes (each holds its arena).
NATIVE_PLANS = 4
# Ops whose result is not a function of their inputs: never evaluated when a plan is made.
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                         "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})


def native_enabled() -> bool:
    """Native plans are on unless the environment sets ``CYCONV_NATIVE=0`` when a session is
    created (its runs then take the Python loop: for A/B measurements and tests of both)."""
    return os.environ.get("CYCONV_NATIVE", "1").strip() != "0"

class NodeArg:
    """What ``get_inputs()`` / ``get_outputs()`` return, as in ONNX Runtime."""

    def __init__(self, info: ValueInfo):
        self.name = info.name
        self.shape = list(info.shape) if info.shape is not None else None
        self.type = info.onnx_type

    def __repr__(self):
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


@dataclass
class _Step:
    run: object          # the node's kernel closure: run(ctx, *inputs)
    inputs: tuple        # slot per input, -1 for an omitted optional input
    outputs: tuple       # slot per output, -1 for an output nobody needs
    free: tuple          # slots whose last use is this step
    node_name: str
    op_type: str
    captured: tuple = ()  # per input: shape of a constant the builder consumed, else None
    args: tuple = ()      # ``inputs`` less the trailing -1s: what the run loop passes

    def __post_init__(self):
        # trailing omitted inputs are not passed (registry contract); strip them once here
        args = list(self.inputs)
        while args and args[-1] < 0:
            args.pop()
        self.args = tuple(args)


def _step_failed(step, args, exc) -> InputError:
    """The error a kernel's ValueError / IndexError / TypeError becomes: which node, on which
    input shapes."""
    shapes = ", ".join(str(getattr(a, "shape", None)) for a in args)
    return InputError(f"{step.op_type} node {step.node_name!r} failed on inputs of "
                      f"shapes [{shapes}]: {exc}")


def _python_step(step, shapes: dict, consts: dict, ctx):
    """A step with no native form as a plan step that calls its ``run`` (native.PythonOp),
    with ``(op, input value ids)``; or None when it cannot be one.

    Its output shapes are found by running it once on ones of its input shapes (constants
    as they are; ones, not zeros: a scale, divisor or log argument is valid at 1). A step
    whose output shape depends on input values is caught at run time (OutputShapeChanged)
    and the session drops the plan. Outputs must be float32, like every value of a plan;
    inputs from the plan (float32) arrive as read-only views of its buffers.
    """
    template, ins, in_shapes = [], [], []
    for i in step.args:
        if i < 0:
            template.append(None)
        elif i in consts:
            template.append(consts[i])
        else:
            template.append(_FROM_PLAN)
            ins.append(i)
            in_shapes.append(tuple(shapes[i]))
    probe = [np.ones(shape, np.float32) for shape in in_shapes]
    for array in probe:
        array.flags.writeable = False        # as the plan's views: an op may not write them
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = step.run(ctx, *_fill(template, probe))
    except Exception:     # noqa: BLE001: ones it cannot take; the Python loop runs instead
        return None
    if type(result) is not tuple and type(result) is not list:
        result = (result,)
    if len(result) != len(step.outputs) or not all(
            isinstance(r, np.ndarray) and r.dtype == np.float32 for r in result):
        return None
    run = step.run

    def call(*arrays):
        return run(ctx, *_fill(template, arrays))

    what = f"{step.op_type} {step.node_name!r} (Python)"
    return _native.PythonOp(call, in_shapes, [r.shape for r in result], what), ins


_FROM_PLAN = object()      # a _python_step argument that is a value of the plan


def _fill(template, arrays):
    """``template`` with its _FROM_PLAN entries replaced by ``arrays`` in order."""
    it = iter(arrays)
    return [next(it) if a is _FROM_PLAN else a for a in template]


class InferenceSession:
    """Run an ONNX model on the CPU.

    Parameters
    ----------
    model : str | os.PathLike | bytes | onnx.ModelProto
        The model; external data is read only from files inside the model file's folder.
    threads : int, optional
        Threads per kernel. Default: ``OMP_NUM_THREADS`` if set, else the physical cores.
    optimize : bool
        Run the graph passes at load (constant folding, BatchNormalization folding, Conv/Gemm
        epilogue fusions, ...). ``False`` runs the graph node by node as written.
    """

    def __init__(self, model, threads=None, optimize=True, **_ort_compat):
        # ORT's sess_options/providers keywords are accepted so ORT code ports unchanged.
        unknown = set(_ort_compat) - {"sess_options", "providers", "provider_options"}
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
        self._threads = resolve_threads(threads)
        graph = import_model(model)
        self._check_supported(graph)
        if optimize:
            graph = passes.optimize(graph, self._threads)
        self._graph = graph
        self._compile(graph)
        self._buffers = buffers.new_handler(BUFFER_CACHE_BYTES)
        self._native_plans = {}          # feed shapes -> NativePlan, or None (not native)
        self._native_failure = None      # why the last native plan could not be made, if
                                         # an error stopped it (the profiler reports it)
        self._native = native_enabled()
        self._bands = bands_enabled()
        self._native_lock = threading.Lock()

    # ----------------------------------------------------------------- public API
    def get_inputs(self):
        return [NodeArg(v) for v in self._graph.inputs]

    def get_outputs(self):
        return [NodeArg(v) for v in self._graph.outputs]

    def get_providers(self):
        return ["CPUExecutionProvider"]

    @property
    def threads(self) -> int:
        return self._threads

    def run(self, output_names, input_feed, run_options=None):
        """Compute ``output_names`` (None: all outputs) from ``input_feed`` {name: array}.

        Returns a list of numpy arrays, one per requested output, as ONNX Runtime does.
        """
        wanted = self._output_slots(output_names)
        feeds = self._check_feed(input_feed)
        plan = self._native_plan(feeds)
        if plan is not None and self._native_lock.acquire(blocking=False):
            try:
                outputs = plan.run([a for _, a in feeds])
            except _native.PythonStepFailed as failed:
                # A Python step raised: the Python loop runs the call and reports the error
                # as it would have (an interrupt is not an error: it goes on up). A step
                # whose output shape depends on values (not planned) keeps these shapes in
                # the Python loop from now on.
                if not isinstance(failed.error, Exception):
                    raise failed.error from None
                if isinstance(failed.error, _native.OutputShapeChanged):
                    self._native_plans[tuple(a.shape for _, a in feeds)] = None
                outputs = None
            finally:
                self._native_lock.release()
            if outputs is not None:
                return [outputs[self._output_index[s]] for s in wanted]
        outer = buffers.set_handler(self._buffers)
        try:
            slots = self._execute_plain(feeds)
            fed = [a for _, a in feeds]
            return [self._owned(slots[s], fed) for s in wanted]
        finally:
            buffers.set_handler(outer)

    def _execute_plain(self, feeds):
        """Run every step on ``feeds`` [(slot, array)]; returns the final slot list.

        The per-step work is cut to the minimum: the steps are flattened once into tuples of
        locals (no attribute lookups), a single output is stored without the tuple dance,
        and errors are mapped to their node only when one is raised (a try block costs
        nothing in Python 3.11 until it catches). It took 1.9 us a step before, as much as a
        small depthwise conv."""
        flat = self._flat_steps
        if flat is None:
            flat = self._flat_steps = [
                (st.run, st.args, st.outputs[0] if len(st.outputs) == 1 else None,
                 st.outputs, st.free) for st in self._steps]
        slots = list(self._initial_slots)
        for slot, array in feeds:
            slots[slot] = array
        ctx = RunContext(self._threads)
        ndarray = np.ndarray
        k = 0
        try:
            for k, (run, arg_slots, out, outs, free) in enumerate(flat):
                result = run(ctx, *[slots[i] if i >= 0 else None for i in arg_slots])
                if out is not None:
                    if type(result) is tuple or type(result) is list:
                        result = result[0]
                    if out >= 0:
                        slots[out] = result if type(result) is ndarray else np.asarray(result)
                else:
                    if type(result) is not tuple and type(result) is not list:
                        result = (result,)
                    for slot, value in zip(outs, result):
                        if slot >= 0:
                            slots[slot] = value if type(value) is ndarray else np.asarray(value)
                for slot in free:
                    slots[slot] = None
        except CyconvError:
            raise
        except (ValueError, IndexError, TypeError) as exc:
            step = self._steps[k]
            raise _step_failed(step, [slots[i] if i >= 0 else None for i in step.args],
                               exc) from exc
        return slots

    def _execute_observed(self, feeds, observer):
        """``_execute_plain`` with ``observer(step, seconds, slots)`` called after each step
        (before its dead values are released): the profiler's hook."""
        slots = list(self._initial_slots)
        for slot, array in feeds:
            slots[slot] = array
        ctx = RunContext(self._threads)
        clock = time.perf_counter
        for step in self._steps:
            args = [slots[i] if i >= 0 else None for i in step.args]
            start = clock()
            try:
                result = step.run(ctx, *args)
            except CyconvError:
                raise
            except (ValueError, IndexError, TypeError) as exc:
                raise _step_failed(step, args, exc) from exc
            if type(result) is not tuple and type(result) is not list:
                result = (result,)
            for slot, value in zip(step.outputs, result):
                if slot >= 0:
                    # numpy scalars (np.take with a scalar index) become 0-d tensors
                    slots[slot] = value if type(value) is np.ndarray else np.asarray(value)
            observer(step, clock() - start, slots)
            for slot in step.free:
                slots[slot] = None
        return slots

    # ----------------------------------------------------------------- native plans
    def _native_plan(self, feeds):
        """The native plan for these feeds' shapes (made on first use), or None."""
        key = tuple(a.shape for _, a in feeds)
        try:
            plan = self._native_plans[key]
        except KeyError:
            pass
        else:
            if type(plan) is BandChoice and plan.whole_only:
                plan = self._native_plans[key] = plan.whole     # no bands for these shapes
            return plan
        plan = self._build_native(feeds) if self._native else None
        if len(self._native_plans) >= NATIVE_PLANS:
            self._native_plans.clear()
        self._native_plans[key] = plan
        return plan

    def _build_native(self, feeds):
        """Prepare every step for the feeds' shapes: a NativePlan, or None when a step has no
        native form for them (the Python loop then runs, and reports any error)."""
        self._native_failure = None
        try:
            whole = self._build_native_steps(feeds)
            if whole is None or self._threads < 2 or not self._bands:
                return whole
            return BandChoice(whole, lambda: self._build_banded(feeds))
        except (CyconvError, ValueError, IndexError, TypeError) as exc:
            # a bad feed is reported by the Python loop; anything else would only show as a
            # slower run, so the reason is kept for `cyconv profile`
            self._native_failure = f"{type(exc).__name__}: {exc}"
            return None

    def _build_banded(self, feeds):
        """The plan in row bands (bands.py), or None when too little of it bands."""
        try:
            return self._build_native_steps(feeds, bands=True)
        except (CyconvError, ValueError, IndexError, TypeError) as exc:
            self._native_failure = f"bands: {type(exc).__name__}: {exc}"
            return None

    @staticmethod
    def _alias_step(st, shapes, consts, ctx, alias_of, steps) -> bool:
        """A view step (``run.native = ALIAS``): the output is input 0's buffer under the
        shape ``run`` gives it. False when it is not one for these inputs (a view of a
        constant, a shape computed at run time, a copy): it then runs as a Python step."""
        src, outs = (st.args[0] if st.args else -1), st.outputs
        if src < 0 or src in consts or len(outs) != 1 or \
                any(i >= 0 and i not in consts for i in st.args[1:]):
            return False
        probe = np.empty(shapes[src], np.float32)
        view = st.run(ctx, probe, *[consts[i] if i >= 0 else None for i in st.args[1:]])
        if not (isinstance(view, np.ndarray) and view.dtype == np.float32
                and view.size == probe.size and np.shares_memory(view, probe)):
            return False
        if outs[0] >= 0:
            shapes[outs[0]] = view.shape
            alias_of[outs[0]] = src
            steps.append((None, [src], [outs[0]]))
        return True

    def _build_native_steps(self, feeds, bands=False):
        shapes = {}
        for slot, array in feeds:
            if array.dtype != np.float32 or array.size == 0:
                return None
            shapes[slot] = array.shape
        consts = {s: v for s, v in enumerate(self._initial_slots) if v is not None}
        n_values = len(self._initial_slots)
        steps, alias_of, used_consts, nodes, python_notes = [], {}, {}, [], []
        ctx = RunContext(self._threads)
        for node, st in enumerate(self._steps):
            native = getattr(st.run, "native", None)
            if native is SHAPE_ONLY or (st.op_type not in _RANDOM_OPS and
                                        all(i < 0 or i in consts for i in st.args)):
                # known now, whatever the feed's values: evaluated once, a constant of the plan
                if any(i >= 0 and i not in consts and i not in shapes for i in st.args):
                    return None
                args = [None if i < 0 else consts[i] if i in consts
                        else np.empty(shapes[i], np.float32) for i in st.args]
                result = st.run(ctx, *args)
                if type(result) is not tuple and type(result) is not list:
                    result = (result,)
                for o, value in zip(st.outputs, result):
                    if o >= 0:
                        consts[o] = np.asarray(value)
                        shapes[o] = consts[o].shape
                continue
            for i in st.args:
                if i >= 0 and i not in shapes:
                    if i not in consts:
                        return None
                    shapes[i] = np.shape(consts[i])
            if native is ALIAS and self._alias_step(st, shapes, consts, ctx, alias_of, steps):
                nodes.append(node)
                continue
            op = None
            if native is not None and native is not ALIAS:
                op = native(tuple(shapes[i] if i >= 0 else None for i in st.args),
                            self._threads)
                if op is not None and (len(op.out_shapes) != len(st.outputs) or any(
                        i in consts and consts[i].dtype != np.float32 for i in st.args)):
                    op = None
            if op is None:
                # no native form (for these shapes): the op's own run, as a Python step
                made = _python_step(st, shapes, consts, ctx)
                if made is None:
                    return None
                op, ins = made
                python_notes.append(f"{st.op_type} {st.node_name!r} has no native form: it "
                                    f"runs in Python between the native steps")
            else:
                ins = [i for i in st.args if i >= 0]
                used_consts.update((i, np.ascontiguousarray(consts[i]))
                                   for i in ins if i in consts)
            outs = []
            for o, shape in zip(st.outputs, op.out_shapes):
                if o < 0:                 # an output nobody reads still needs a buffer
                    o, n_values = n_values, n_values + 1
                shapes[o] = tuple(shape)
                outs.append(o)
            steps.append((op, ins, outs))
            nodes.append(node)

        fed = {slot for slot, _ in feeds}
        outputs = self._graph_output_slots
        # Inverted residual blocks run as one strip-mined step (kernels/conv_block.pxi).
        fused, gone = fuse_blocks(steps, fuse_inverted_residual, lambda v: v in outputs)
        notes = python_notes + [
            f"Conv {', '.join(repr(self._steps[nodes[k]].node_name) for k in chain)} "
            f"run as one step: an inverted residual block in strips of rows"
            for _, _, _, chain in fused.values()]
        steps = [fused[k][:3] if k in fused else st for k, st in enumerate(steps)
                 if k not in gone]
        nodes = [n for k, n in enumerate(nodes) if k not in gone]
        # A batch-1 image network: one band of rows per thread (bands.py); the steps
        # below plan the rest (the tail), the section plans its own memory.
        section = None
        if bands:
            banded = plan_bands(steps, nodes, self._steps, shapes, consts, fed, outputs,
                                n_values, self._threads)
            if banded is None:
                return None
            section, tail, n_values = banded
            steps = [(op, ins, outs) for op, ins, outs, _ in tail]
            nodes = [node for _, _, _, node in tail]
        made = {v for op, _, outs in steps if op is not None for v in outs}
        # Concats whose inputs are written into the output's buffer: those steps go
        # (plan.py); `nested` values live at an offset of another value's buffer.
        nested, elided = concats_in_place(
            steps, {v: int(np.prod(shapes[v])) for v in made},
            lambda v: v in made and v not in outputs)
        notes += [f"Concat {self._steps[nodes[k]].node_name!r} runs no copy: its inputs are "
                  f"written into its buffer" for k in sorted(elided)]
        steps = [st for k, st in enumerate(steps) if k not in elided]
        nodes = [n for k, n in enumerate(nodes) if k not in elided]
        grouped = set(nested) | {root for root, _ in nested.values()}
        # In place: an element-wise step writes over an input that no later step, view or
        # graph output reads (its buffer dies there) when both have the same size; never in
        # a concat's buffer, which later steps read as a whole.
        last_read = {v: k for k, (_, ins, _) in enumerate(steps) for v in ins}
        viewed = set(alias_of.values())
        shared = {}                           # output -> the value whose buffer it takes
        for k, (op, ins, outs) in enumerate(steps):
            j = op.inplace_input if op is not None else -1
            if j < 0:
                continue
            v, o = ins[j], outs[0]
            if (v in made and v not in viewed and v not in outputs and o not in outputs
                    and v not in grouped and o not in grouped
                    and last_read[v] == k and ins.count(v) == 1
                    and np.prod(shapes[v]) == np.prod(shapes[o])):
                shared[o] = v

        def root(v):
            while v in alias_of or v in shared:
                v = alias_of[v] if v in alias_of else shared[v]
            return v

        # Lifetimes of the buffers the steps write (views and in-place outputs share their
        # root's); graph outputs get buffers of their own, fresh every run.
        first, last = {}, {}
        for k, (op, ins, outs) in enumerate(steps):
            for v in ins:
                last[root(v)] = k
            if op is not None:
                for v in outs:
                    if v not in shared:
                        first[v] = k
                    last.setdefault(root(v), k)
        for v in outputs:
            last[root(v)] = len(steps)
        # a concat's buffer lives from its first input's step to its (or a part's) last read
        for v, (buffer, _) in nested.items():
            if v in first:
                first[buffer] = min(first.get(buffer, len(steps)), first.pop(v))
            if v in last:
                last[buffer] = max(last.get(buffer, 0), last.pop(v))
        arena = {v: (first[v], last[v]) for v in first if v not in outputs}
        sizes = {v: int(np.prod(shapes[v])) for v in arena}
        if 4 * sum(sizes.values()) <= PRIVATE_ARENA_BYTES:
            arena = {v: (0, len(steps)) for v in arena}     # see PRIVATE_ARENA_BYTES
        # see PLANE_ARENA_BYTES; a batch-1 image's plane, else 0 (anywhere)
        planes = {v: int(np.prod(shapes[v][2:])) if len(shapes[v]) >= 3 and shapes[v][0] == 1
                  else 0 for v in arena}
        offsets, total = assign_offsets_by_plane(sizes, arena, planes)
        if 4 * total > PLANE_ARENA_BYTES:
            offsets, total = assign_offsets(sizes, arena)
        offsets.update({v: offsets[buffer] + at for v, (buffer, at) in nested.items()})
        offsets.update({o: offsets[root(o)] for o in shared})
        streams = deps = None
        if section is not None:
            read_after = {v for _, ins, _ in steps for v in ins} | set(outputs)
            section, band_offsets, band_total, band_notes = section_memory(
                section, shapes, outputs, read_after)
            offsets.update({v: total + o for v, o in band_offsets.items()})
            total += band_total
            streams = [band for _, _, _, band, _ in section]
            deps = section_deps(section)
            notes += band_notes + [
                f"{len(set(streams))} bands of rows, one per thread: "
                f"{len({n for *_, n in section})} nodes run on each band alone "
                f"(engine/bands.py)"]
            steps = [(op, ins, outs) for op, ins, outs, _, _ in section] + steps
            nodes = [node for *_, node in section] + nodes
        out_spec, written = [], set()
        for v in outputs:
            if v not in shapes or (v in consts and consts[v].dtype != np.float32):
                return None                 # e.g. a shape computed from the feed's, int64
            # copied out after the run: another buffer (an alias, a feed, a constant) or an
            # output listed twice (the first copy is the one the steps write)
            copy = v in alias_of or v in fed or v in consts or v in written
            written.add(v)
            if v in consts:
                used_consts[v] = np.ascontiguousarray(consts[v])
            out_spec.append((v, shapes[v], copy))
        return _native.NativePlan(steps, n_values, [slot for slot, _ in feeds], out_spec,
                                  list(used_consts.items()), list(offsets.items()), total,
                                  nodes, notes,
                                  None if section is None else (streams, deps))

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _owned(array, fed):
        # Never hand out a view of a session constant or of the caller's own feed.
        if array is None:
            raise CyconvError("internal error: an output was not computed")
        array = np.asarray(array)
        if not array.flags.writeable or any(np.may_share_memory(array, f) for f in fed):
            return array.copy()
        return array

    def _output_slots(self, output_names):
        if output_names is None:
            return self._graph_output_slots
        if isinstance(output_names, str):
            raise InputError("output_names must be a list of names or None, not a string")
        slots = []
        for name in output_names:
            slot = self._output_slot_by_name.get(name)
            if slot is None:
                raise InputError(f"unknown output name {name!r}; the model's outputs are "
                                 f"{list(self._output_slot_by_name)}")
            slots.append(slot)
        return slots

    def _check_feed(self, feed):
        if not isinstance(feed, dict):
            raise InputError(f"input_feed must be a dict {{name: numpy array}}, "
                             f"got {type(feed).__name__}")
        unknown = [n for n in feed if n not in self._input_by_name]
        if unknown:
            raise InputError(f"unknown input name(s) {unknown}; the model's inputs are "
                             f"{list(self._input_by_name)}")
        checked = []
        for info in self._graph.inputs:
            if info.name not in feed:
                raise InputError(f"missing input {info.name!r} "
                                 f"(expected {info.onnx_type} of shape {_shape_str(info.shape)})")
            checked.append((self._slot_of[info.name], _check_array(info, feed[info.name])))
        return checked

    # ----------------------------------------------------------------- compile
    @staticmethod
    def _check_supported(graph: Graph):
        unsupported = set()
        for node in graph.nodes:
            opset = graph.opsets.get(node.domain)
            if opset is None or lookup(node.domain, node.op_type, opset) is None:
                unsupported.add((node.domain, node.op_type, opset if opset is not None else -1))
        if unsupported:
            raise UnsupportedOpError(unsupported)

    @property
    def fusions(self) -> list:
        """What the graph passes did at load, one line per rewrite."""
        return list(self._graph.fusions)

    def _compile(self, graph: Graph):
        constants = graph.constants
        self._input_by_name = {v.name: v for v in graph.inputs}
        slot_of = {}

        def slot(name):
            if name not in slot_of:
                slot_of[name] = len(slot_of)
            return slot_of[name]

        for v in graph.inputs:
            slot(v.name)
        built = _build_nodes(graph)

        # Slots: graph inputs first, then constants that are still read, then node outputs.
        # A constant only builders captured gets no slot: the session does not keep it alive.
        needed = {i for _, _, reads, _ in built for i in reads if i} | \
            {v.name for v in graph.outputs}
        for name in constants:
            if name in needed:
                slot(name)
        for node, _, reads, _ in built:
            for name in reads:
                if name:
                    slot(name)
            for name in node.outputs:
                if name:
                    slot(name)
        for v in graph.outputs:
            slot(v.name)

        # Last use of each slot, so it can be released right after.
        keep = {slot_of[v.name] for v in graph.outputs} | \
            {slot_of[n] for n in constants if n in slot_of}
        last_use = {}
        for k, (_, _, reads, _) in enumerate(built):
            for name in reads:
                if name:
                    last_use[slot_of[name]] = k
        frees = [[] for _ in built]
        for s, k in last_use.items():
            if s not in keep:
                frees[k].append(s)
        used = set(last_use) | keep
        self._steps = [
            _Step(run,
                  tuple(slot_of[i] if i else -1 for i in reads),
                  tuple(slot_of[o] if o and slot_of[o] in used else -1 for o in node.outputs),
                  tuple(frees[k]), node.name, node.op_type, captured)
            for k, (node, run, reads, captured) in enumerate(built)]
        self._flat_steps = None          # _execute_plain's copy, made on the first run

        self._initial_slots = [None] * len(slot_of)
        for name, value in constants.items():
            if name in slot_of:
                self._initial_slots[slot_of[name]] = value
        # The graph stays for inspection (nodes, fusions); it must not pin the constants the
        # builders captured, or the weights would exist twice after all.
        graph.constants = {n: v for n, v in constants.items() if n in slot_of}
        self._slot_of = slot_of
        self._graph_output_slots = [slot_of[v.name] for v in graph.outputs]
        self._output_index = {s: k for k, s in reversed(list(enumerate(
            self._graph_output_slots)))}
        self._output_slot_by_name = {v.name: slot_of[v.name] for v in graph.outputs}


def _build_nodes(graph: Graph) -> list:
    """Run every node's builder; returns ``[(node, run, reads, captured)]``.

    ``reads`` is the node's input names as the step sees them at run time: ``""`` for an
    omitted input or one whose constant the builder captured (registry ``consumed_inputs``;
    the step gets None there); ``captured`` the shapes of those constants, for the profiler.
    A constant every reader captured and no graph output names leaves ``graph.constants``
    right after its last reader is built, so packing the next layers reuses its memory
    instead of adding to the load-time peak.
    """
    constants = graph.constants
    last_reader = {}
    for k, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name in constants:
                last_reader[name] = k
    still_read = {v.name for v in graph.outputs}
    hints = model_hints(graph)
    built = []
    for k, node in enumerate(graph.nodes):
        spec = lookup(node.domain, node.op_type, graph.opsets[node.domain])
        ctx = NodeContext(
            node.op_type, node.name, graph.opsets[node.domain],
            tuple(constants.get(i) if i else None for i in node.inputs),
            len(node.inputs), len(node.outputs), tuple(node.inputs), tuple(node.outputs),
            tuple(graph.value_shapes.get(i) for i in node.inputs), hints)
        run = build_with_attrs(spec, ctx, node.attrs)
        consumed = consumed_inputs(run, ctx)
        reads = tuple("" if j in consumed else name for j, name in enumerate(node.inputs))
        still_read.update(reads)
        captured = tuple(ctx.consts[j].shape if j in consumed else None
                         for j in range(len(node.inputs)))
        built.append((node, run, reads, captured))
        del ctx    # its consts would keep the arrays released below alive
        for name in set(node.inputs):
            if last_reader.get(name) == k and name not in still_read:
                del constants[name]
    return built


def _shape_str(shape):
    return "unknown" if shape is None else "[" + ", ".join(
        "?" if d is None else str(d) for d in shape) + "]"


def _check_array(info: ValueInfo, value):
    """Validate one fed value against the model's declaration; returns a C-contiguous array."""
    if isinstance(value, np.generic):   # numpy scalars are 0-d tensors, as in ORT
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise InputError(f"input {info.name!r}: expected a numpy array, "
                         f"got {type(value).__name__}")
    if info.dtype is not None and value.dtype != info.dtype:
        raise InputError(f"input {info.name!r}: expected {info.onnx_type} "
                         f"({info.dtype}), got {value.dtype}; convert with "
                         f".astype(np.{info.dtype.name})")
    if info.shape is not None:
        if value.ndim != len(info.shape):
            raise InputError(f"input {info.name!r}: expected rank {len(info.shape)} "
                             f"{_shape_str(info.shape)}, got shape {list(value.shape)}")
        for axis, (want, got) in enumerate(zip(info.shape, value.shape)):
            if isinstance(want, int) and want != got:
                raise InputError(f"input {info.name!r}: dimension {axis} must be {want} "
                                 f"(expected {_shape_str(info.shape)}), got shape "
                                 f"{list(value.shape)}")
    if not value.flags.c_contiguous or not value.flags.aligned:
        value = np.asarray(value, order="C")   # (ascontiguousarray would make 0-d 1-d)
    return value
