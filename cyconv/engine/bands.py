"""Row bands: a batch-1 image network run as one band of rows per thread.

Why: at batch 1 each op used to split its own work across the threads (by columns of its
GEMM, tiles of its Winograd transform), and every op's split was its own: what one thread
wrote, the other read in the next op, and wherever two threads' stretches of a channel plane
meet, the hardware prefetchers of one core pull in lines the other is about to write. On the
2-vCPU VMs these benchmarks run on, the host puts the two vCPUs now on one core complex
(a cache line goes from one to the other and back in ~60 ns), now on two dies (~330 ns;
``benchmarks/placement_states.py``), and in the far placement SqueezeNet 1.1 took 5.7 ms on
two threads against 6.6 on one, while ONNX Runtime's blocked layout took 5.4.

Here the image is cut into T bands of rows (T = threads) and each thread runs the network on
its own band, op after op, single-threaded: convolutions, pools and element-wise ops only
need the rows of their input under their own output rows, so a band borrows from its
neighbours only the few rows its windows reach across the edge (a 3x3 conv: one row each
side). Everything else a thread reads, it wrote itself, in buffers of its own. Measured on
two 1-thread sessions, each on one half of SqueezeNet's input, against the same model's
2-thread plan (2026-12-07, in process; near / far placement): 3.48 / 3.59 ms against 3.52 /
5.73. This is the spatial decomposition of stencil codes (domain decomposition with halo
exchange), applied op by op to a network.

A band step is an op prepared for its band's shapes with one thread (``run.native``, or for
ops with a window along H ``run.native_rows``, which takes the pads the band's windows meet:
the op's own at the image's edges, none inside it). Rows a band borrows are gathered into a
buffer of the band's own (``native.RowGatherOp``) before the op runs; a stem conv that reads
the feed computes the rows its pool would borrow instead (``fold_stem_gathers``). A global
average pool pools each band and weighs the means (``native.BandMeanOp``). The bands meet
again (a gather of all bands into the whole image) before the first op that needs the whole
image: a Flatten, a Gemm, a squeeze-excite scale; everything from there runs as before, each
op split across the threads.

In the native plan the band steps form a *section*: thread t runs band t's steps in order,
each once the steps it reads are done (native.pyx ``_section_task``); a step that borrows
rows waits for the neighbour step that wrote them. A thread that finds no thread on another
band (a worker that has not started, fewer cores than bands) runs that band's steps too; it
never takes a step of a band another thread runs.

Whether a run takes the banded plan or the whole-image one is :class:`BandChoice`'s call.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..kernels.native import BandMeanOp, PythonOp, RowGatherOp, pool_round_trip_ns
from .plan import assign_offsets, concats_in_place

# Ops that compute each output element from the input elements at the same (row, column):
# a band of the output needs the same band of every input. Constant inputs must not vary
# along H (per-channel scales, biases, slopes).
LOCAL_OPS = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus", "HardSigmoid",
    "HardSwish", "PRelu", "Clip", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Pow",
    "Sqrt", "Abs", "Neg", "Exp", "Log", "BatchNormalization", "Concat"})

# Means over H and W (per channel): each band pools its own rows, the tail weighs the means.
MEAN_OPS = frozenset({"GlobalAveragePool", "ReduceMean"})

# Fewest output rows a band may have: thinner bands spend more on the rows they borrow than
# they save.
MIN_BAND_ROWS = 2

# Least share of a plan's steps that must run in bands for a banded plan to be worth making
# (a MobileNetV3's squeeze-excite blocks each need the whole image: PaddleOCR's classifier
# would band only its first three convs).
MIN_BANDED_SHARE = 0.5

# Bytes left free between the threads' memory (their buffers are never adjacent): a core's
# prefetchers running past the end of its own buffer then fetch nothing the other core
# writes.
STREAM_GAP_FLOATS = 1024


def bands_enabled() -> bool:
    """Row bands are on unless the environment sets ``CYCONV_BANDS=0`` when a session is
    created (for A/B runs)."""
    return os.environ.get("CYCONV_BANDS", "1").strip() != "0"


def band_rows(height: int, bands: int) -> list:
    """``bands`` runs of rows [lo, hi) covering ``height`` rows, as even as can be."""
    return [(t * height // bands, (t + 1) * height // bands) for t in range(bands)]


def _input_rows(geometry, lo, hi, height):
    """Input rows [a, b) that the windows of output rows [lo, hi) read, clipped to the image
    of ``height`` rows; None when a window away from the image's edges would reach past them
    (the op's pads are met only at its edges). ``geometry``: ``run.rows``'s (window extent,
    stride, top pad, output rows)."""
    extent, stride, top, out_rows = geometry
    a, b = lo * stride - top, (hi - 1) * stride - top + extent
    if (lo > 0 and a < 0) or (hi < out_rows and b > height):
        return None
    a, b = max(a, 0), min(b, height)
    return (a, b) if b > a else None


class _Planner:
    """Walks a native plan's steps in order, banding every step it can."""

    def __init__(self, steps, nodes, session_steps, shapes, consts, fed, n_values, bands):
        self.steps, self.nodes, self.session_steps = steps, nodes, session_steps
        self.shapes, self.consts, self.T = shapes, consts, bands
        self.n_values = n_values
        self.band = {}            # value -> [(band value, lo, hi)] per band
        self.feeds = {v for v in fed if self._image(v)}
        self.section = []         # (op, ins, outs, band, node)
        self.tail = []            # (op, ins, outs, node)
        self.joined = set()
        self.gathered = {}        # gather output -> (image, first row, end row)
        self.windows = {}         # section index of a window op of one input -> its step,
                                  # input shapes and H geometry

    def _image(self, v):
        s = self.shapes.get(v)
        return s is not None and len(s) == 4 and s[0] == 1 and \
            s[2] >= MIN_BAND_ROWS * self.T and v not in self.consts

    def _new_value(self, shape):
        v, self.n_values = self.n_values, self.n_values + 1
        self.shapes[v] = tuple(shape)
        return v

    def _rows_of(self, v, t, a, b, node):
        """A value holding rows [a, b) of image v for band t: its band, or a gather."""
        if v in self.band:
            bv, lo, hi = self.band[v][t]
            if (lo, hi) == (a, b):
                return bv
            sources = [(bv, lo, hi) for bv, lo, hi in self.band[v] if lo < b and hi > a]
        else:                                        # a feed: cut from the whole image
            sources = [(v, 0, self.shapes[v][2])]
        _, C, _, W = self.shapes[v]
        op = RowGatherOp(C, W, a, b - a, [(lo, hi - lo) for _, lo, hi in sources])
        out = self._new_value(op.out_shapes[0])
        self.section.append((op, [s for s, _, _ in sources], [out], t, node))
        self.gathered[out] = (v, a, b)
        return out

    def _join(self, v, node):
        """Before a step that reads image v whole: gather its bands into v's own buffer."""
        if v in self.band and v not in self.joined:
            _, C, H, W = self.shapes[v]
            op = RowGatherOp(C, W, 0, H, [(lo, hi - lo) for _, lo, hi in self.band[v]])
            self.tail.append((op, [bv for bv, _, _ in self.band[v]], [v], node))
            self.joined.add(v)

    def _banded_ins(self, st, args):
        """The step's non-constant inputs, if all are images in bands (or feeds)."""
        act = [i for i in args if i >= 0 and i not in self.consts]
        if act and all(i in self.band or i in self.feeds for i in act):
            return act
        return None

    def _window(self, k, st, op, ins, outs):
        """Per band (op, ins, window) of a step with a window along H (Conv, pools), or
        None; window: (step, input shapes, H geometry) when x is its only image input."""
        rows_fn = getattr(st.run, "rows", None)
        args = st.args
        # the hooks take only shapes ``native`` took (not a Python step's)
        if rows_fn is None or isinstance(op, PythonOp) or not args or args[0] < 0 or \
                len(outs) != 1:
            return None
        x, y = args[0], outs[0]
        in_shapes = tuple(self.shapes[i] if i >= 0 else None for i in args)
        others = [i for i in args[1:] if i >= 0 and i not in self.consts]
        if self._banded_ins(st, args) is None or x not in self.band and x not in self.feeds \
                or any(i not in self.band or self.shapes[i] != self.shapes[y] for i in others):
            return None
        geometry = rows_fn(in_shapes)
        if geometry is None:
            return None
        extent, stride, top, out_rows = geometry
        H, shape_y = self.shapes[x][2], self.shapes[y]
        if len(shape_y) != 4 or shape_y[2] != out_rows or out_rows < MIN_BAND_ROWS * self.T:
            return None
        made = []
        for lo, hi in band_rows(out_rows, self.T):
            rows = _input_rows(geometry, lo, hi, H)
            if rows is None:
                return None
            a, b = rows
            band_op = st.run.native_rows(in_shapes, 1, a, b, lo, hi)
            if band_op is None or tuple(band_op.out_shapes[0]) != \
                    (1, shape_y[1], hi - lo, shape_y[3]):
                return None
            made.append((band_op, a, b))
        per_band = []
        for t, (band_op, a, b) in enumerate(made):
            band_ins = [self._rows_of(x, t, a, b, k)] + [
                self.band[i][t][0] if i in self.band else i for i in ins[1:]]
            per_band.append((band_op, band_ins, None if others else
                             (st, in_shapes, geometry)))
        return per_band

    def _local(self, k, st, op, ins, outs):
        """Per band (op, ins, None) of an element-wise step (or a Concat of channels), or
        None."""
        if st.op_type not in LOCAL_OPS or len(outs) != 1 or op is None:
            return None
        act = self._banded_ins(st, st.args)
        shape_y = self.shapes[outs[0]]
        if act is None or len(shape_y) != 4 or shape_y[0] != 1:
            return None
        for i in act:
            s = self.shapes[i]
            if len(s) != 4 or s[2:] != shape_y[2:]:
                return None
        for i in st.args:
            if i >= 0 and i in self.consts:
                c = np.shape(self.consts[i])
                if st.op_type == "Concat" or len(c) > 4 or (len(c) >= 2 and c[-2] != 1):
                    return None           # varies along H (or a constant joins a concat)
        if st.op_type == "Concat" and shape_y[1] != sum(self.shapes[i][1] for i in act):
            return None                   # not along channels
        rows = band_rows(shape_y[2], self.T)
        made = []
        for lo, hi in rows:
            in_shapes = tuple(None if i < 0 else self.shapes[i] if i in self.consts
                              else (1, self.shapes[i][1], hi - lo, shape_y[3]) for i in st.args)
            band_op = st.run.native(in_shapes, 1)
            if band_op is None or tuple(band_op.out_shapes[0]) != \
                    (1, shape_y[1], hi - lo, shape_y[3]):
                return None
            made.append(band_op)
        return [(band_op, [i if i in self.consts else self._rows_of(i, t, *rows[t], k)
                           for i in ins], None)
                for t, band_op in enumerate(made)]

    def _band_means(self, k, st, op, ins, outs):
        """A global average pool of a banded image: each band's mean in the section, their
        weighted sum after it (no join). False when the step is not one."""
        if st.op_type not in MEAN_OPS or op is None or len(outs) != 1 or not ins or \
                ins[0] not in self.band or any(i not in self.consts for i in ins[1:]):
            return False
        x = ins[0]
        _, C, H, W = self.shapes[x]
        if int(np.prod(op.out_shapes[0])) != C:
            return False                        # not a mean over both H and W
        made = []
        for bv, lo, hi in self.band[x]:
            in_shapes = tuple(None if i < 0 else self.shapes[bv] if i == x
                              else self.shapes[i] for i in st.args)
            band_op = st.run.native(in_shapes, 1)
            if band_op is None or int(np.prod(band_op.out_shapes[0])) != C:
                return False
            made.append(band_op)
        means = []
        for t, (band_op, (bv, lo, hi)) in enumerate(zip(made, self.band[x])):
            means.append(self._new_value(band_op.out_shapes[0]))
            self.section.append((band_op, [bv] + list(ins[1:]), [means[-1]], t,
                                 self.nodes[k]))
        weights = [(hi - lo) / H for _, lo, hi in self.band[x]]
        self.tail.append((BandMeanOp(weights, op.out_shapes[0]), means, list(outs),
                          self.nodes[k]))
        return True

    def fold_stem_gathers(self):
        """A gather of a band's input rows whose own band was written by a window op that
        reads rows of a feed (the stem conv before ResNet's, SqueezeNet's, GoogLeNet's first
        max pool): that op writes the gathered rows itself, from a few more rows of the
        feed, and the gather goes. The rows the neighbour wrote are computed twice (one
        row of the stem), not copied with the whole band (SqueezeNet: 0.095 ms of band 1's
        3.8)."""
        readers = {}
        for _, ins, _, _, _ in self.section:
            for v in ins:
                readers[v] = readers.get(v, 0) + 1
        for _, ins, _, _ in self.tail:
            for v in ins:
                readers[v] = readers.get(v, 0) + 1
        producer = {outs[0]: k for k, (_, _, outs, _, _) in enumerate(self.section)}
        gone = set()
        for g, (gop, gins, gouts, t, gnode) in enumerate(self.section):
            if not isinstance(gop, RowGatherOp) or gouts[0] not in self.gathered:
                continue
            x, a, b = self.gathered[gouts[0]]
            if x not in self.band:
                continue
            own = self.band[x][t][0]
            w = producer.get(own)
            if w is None or w not in self.windows or readers.get(own) != 1:
                continue
            wop, wins, _, _, wnode = self.section[w]
            f = producer.get(wins[0])
            if f is None or wins[0] not in self.gathered or readers.get(wins[0]) != 1 or \
                    self.gathered[wins[0]][0] not in self.feeds:
                continue
            st, in_shapes, geometry = self.windows[w]
            feed, H = self.gathered[wins[0]][0], in_shapes[0][2]
            rows = _input_rows(geometry, a, b, H)
            if rows is None:
                continue
            a2, b2 = rows
            band_op = st.run.native_rows(in_shapes, 1, a2, b2, a, b)
            if band_op is None or tuple(band_op.out_shapes[0]) != self.shapes[gouts[0]]:
                continue
            _, C, _, W = self.shapes[feed]
            cut = RowGatherOp(C, W, a2, b2 - a2, [(0, H)])
            self.shapes[wins[0]] = cut.out_shapes[0]
            self.section[f] = (cut, [feed], [wins[0]], t, self.section[f][4])
            self.section[w] = (band_op, wins, gouts, t, wnode)
            gone.add(g)
        self.section = [st for k, st in enumerate(self.section) if k not in gone]

    def run(self):
        for k, (op, ins, outs) in enumerate(self.steps):
            st = self.session_steps[self.nodes[k]]
            per_band = None
            if op is not None and len(outs) == 1 and self._image(outs[0]):
                per_band = self._window(k, st, op, ins, outs) or \
                    self._local(k, st, op, ins, outs)
            if per_band is None and self._band_means(k, st, op, ins, outs):
                continue
            if per_band is None:
                for v in ins:
                    self._join(v, self.nodes[k])
                self.tail.append((op, ins, outs, self.nodes[k]))
                continue
            y = outs[0]
            _, C, H, W = self.shapes[y]
            self.band[y] = []
            for t, ((band_op, band_ins, window), (lo, hi)) in enumerate(
                    zip(per_band, band_rows(H, self.T))):
                out = self._new_value((1, C, hi - lo, W))
                if window is not None:
                    self.windows[len(self.section)] = window
                self.section.append((band_op, band_ins, [out], t, self.nodes[k]))
                self.band[y].append((out, lo, hi))
        return self


def plan_bands(steps, nodes, session_steps, shapes, consts, fed, outputs, n_values, bands):
    """Split a native plan's steps into row bands (module docstring).

    Parameters
    ----------
    steps : list of (NativeOp or None, input ids, output ids), prepared for whole images
    nodes : per step, its session step index
    session_steps : the session's steps (``run`` hooks, op types, argument slots)
    shapes, consts : {value: shape}, {value: array}; ``shapes`` gains the band values
    fed, outputs : graph input and output value ids
    n_values : value ids in use; band values get new ids from here
    bands : threads (bands of rows)

    Returns
    -------
    None when no step bands (or ``bands`` < 2); else (section, tail, n_values): ``section``
    a list of (op, ins, outs, band, node), ``tail`` the steps after it (op, ins, outs, node),
    the gathers that join bands included.
    """
    if bands < 2:
        return None
    p = _Planner(steps, nodes, session_steps, shapes, consts, fed, n_values, bands).run()
    for v in outputs:                    # before the fold: a joined band is read twice
        p._join(v, nodes[-1] if nodes else 0)
    p.fold_stem_gathers()
    banded = {node for op, _, _, _, node in p.section if not isinstance(op, RowGatherOp)}
    work = {node for (op, _, _), node in zip(steps, nodes) if op is not None}
    if len(banded) < 2 or len(banded) < MIN_BANDED_SHARE * len(work):
        return None
    return p.section, p.tail, p.n_values


def section_memory(section, shapes, outputs, read_after):
    """Buffers of the band values: each band's in an arena of its own, reused along the
    band's own order (its steps run one after another on one thread), concats of channels
    written in place. A value another band reads (rows it borrows) or that steps after the
    section read (``read_after``) keeps its buffer to the section's end.

    Returns
    -------
    section : the same steps, a concat written in place turned into an alias of its first
        input (the start of its buffer), so the steps after it still wait for its inputs
    offsets : {value: offset in floats}, relative to the section's arena
    total : its size in floats
    notes : what the plan did (for profiles)
    """
    n_bands = max(b for _, _, _, b, _ in section) + 1
    section = list(section)
    offsets, base, notes = {}, 0, []
    band_of = {v: b for _, _, outs, b, _ in section for v in outs}
    foreign = {v for _, ins, _, b, _ in section for v in ins
               if v in band_of and band_of[v] != b}
    for b in range(n_bands):
        at = [k for k, s in enumerate(section) if s[3] == b]
        mine = [section[k] for k in at]
        made = {v for _, _, outs, _, _ in mine for v in outs}
        nested, elided = concats_in_place(
            [(op, ins, outs) for op, ins, outs, _, _ in mine],
            {v: int(np.prod(shapes[v])) for v in made},
            lambda v: v in made and v not in outputs)
        for k in elided:
            _, ins, outs, _, node = mine[k]
            section[at[k]] = (None, ins, outs, b, node)
        if elided and b == 0:
            notes.append(f"{len(elided)} Concats per band run no copy: their inputs are "
                         f"written into their buffers")

        def root(v):
            return nested[v][0] if v in nested else v
        first, last = {}, {}
        for k, (_, ins, outs, _, _) in enumerate(mine):
            for v in ins:
                if v in made:
                    last[root(v)] = k
            for v in outs:
                first.setdefault(root(v), k)
                last.setdefault(root(v), k)
        for v in made:
            if v in foreign or v in read_after or v in outputs:
                last[root(v)] = len(mine)
        arena = {v: (first[v], last[v]) for v in first}
        placed, total = assign_offsets({v: int(np.prod(shapes[v])) for v in arena}, arena)
        offsets.update({v: base + o for v, o in placed.items()})
        offsets.update({v: offsets[r] + o for v, (r, o) in nested.items()})
        base += total + STREAM_GAP_FLOATS
    return section, offsets, base, notes


def section_deps(section):
    """Per section step, the earlier steps it waits for: the producers of its inputs (for a
    value written in place into a concat's buffer, its own producer) and the step before it
    in its band."""
    producer, last_in_band, deps = {}, {}, []
    for k, (_, ins, outs, b, _) in enumerate(section):
        d = {producer[v] for v in ins if v in producer}
        if b in last_in_band:
            d.add(last_in_band[b])
        deps.append(sorted(d))
        for v in outs:
            producer[v] = k
        last_in_band[b] = k
    return deps


class BandChoice:
    """A whole-image plan and its banded twin for the same shapes: runs take the whole-image
    plan while the threads' cores are near each other, and the one that has been faster
    lately while they are far apart.

    Why: which wins depends on where the host has put the threads' cores, and that changes
    under the process every few seconds. In process, 2 threads (2026-12-07, banded / whole,
    vCPUs near / far): SqueezeNet 1.09-1.15 / 0.72-0.82, CIFAR CNN 1.2 / 0.87, CIFAR CNN
    with BN 1.11 / 0.70, PNet 1.02 / 0.78, LeNet-5 0.75 / 0.95. Choosing by run times alone
    (both placements) cost near: the runs given to the other plan, and after idle the run
    times are noisy enough to pick the wrong one (SqueezeNet 1.03-1.10x in benchmark blocks).

    So the choice probes the placement (a cache line's round trip to the pool's worker,
    ``native.pool_round_trip_ns``, 2-10 us, at most every ``PROBE_S``; far: over
    ``FAR_RATIO`` x the fastest probe seen). Near, the whole-image plan runs. Far, the
    banded plan is made on the first far run and is the favourite; every ``EXPLORE`` far
    runs (``EARLY_EXPLORE`` until both plans have ``WINDOW`` far times), two go to the plan
    not in favour and the next two to the favourite, the second of each pair timed (the first
    runs on caches the other plan left), and the favourite is the plan with the lower minimum
    of its last times (a run after idle is slow whichever plan it takes). A machine whose
    cores are all alike never probes far and never makes the banded plan; nor does a plan
    whose runs take under ``TINY_S`` (LeNet-5: the choosing would cost more than it saves).
    Outputs of the two plans agree within float rounding (a band's shapes may take other
    Winograd tiles).
    """

    EXPLORE = 64          # far runs per cycle once both plans have their far times
    EARLY_EXPLORE = 8     # far runs per cycle before
    WINDOW = 3            # far run times kept per plan
    PROBE_S = 0.25        # seconds between placement probes
    FAR_RATIO = 2.0
    TINY_S = 1e-4

    def __init__(self, whole, make_banded):
        self.whole, self._make_banded = whole, make_banded
        self.banded = None
        self._times = ([], [])       # far run times per plan
        self._favour = 1
        self._calls = 0              # far runs
        self._checked = 0            # near runs timed to see if the plan is tiny

    # what profiles and tests read: the whole-image plan's
    @property
    def nodes(self):
        return self.whole.nodes

    @property
    def notes(self):
        return self.whole.notes

    @property
    def arena_bytes(self):
        return self.whole.arena_bytes + (self.banded.arena_bytes if self.banded else 0)

    @property
    def whole_only(self) -> bool:
        """No banded plan could be made, or none is worth it: runs need no choosing."""
        return self.banded is None and self._make_banded is None

    def preferred(self):
        """The plan runs go to now."""
        if _placement.far and self._favour and self.banded is not None:
            return self.banded
        return self.whole

    def run(self, feeds, seconds=None):
        if not _placement.update(self.PROBE_S, self.FAR_RATIO):
            if self._checked >= 3:
                return self.whole.run(feeds, seconds)
            self._checked += 1               # the first near runs: is the plan tiny?
            start = time.perf_counter()
            out = self.whole.run(feeds, seconds)
            if time.perf_counter() - start < self.TINY_S and self.banded is None:
                self._make_banded = None     # never banded (whole_only)
            return out
        if self.banded is None:
            if self._make_banded is None:
                return self.whole.run(feeds, seconds)
            self.banded, self._make_banded = self._make_banded(), None
            if self.banded is None:
                return self.whole.run(feeds, seconds)
        times = self._times
        cycle = self.EXPLORE if min(len(times[0]), len(times[1])) >= self.WINDOW \
            else self.EARLY_EXPLORE
        phase = self._calls % cycle
        self._calls += 1
        if phase > 3:                        # most far runs: the favourite, untimed
            return (self.banded if self._favour else self.whole).run(feeds, seconds)
        # phases 0, 1: the plan not in favour; 2, 3: the favourite
        arm = 1 - self._favour if phase < 2 else self._favour
        if phase % 2 == 0:
            return (self.banded if arm else self.whole).run(feeds, seconds)
        start = time.perf_counter()
        out = (self.banded if arm else self.whole).run(feeds, seconds)
        mine = times[arm]
        mine.append(time.perf_counter() - start)
        del mine[:-self.WINDOW]
        if times[0] and times[1]:
            self._favour = int(min(times[1]) < min(times[0]))
        return out


class _Placement:
    """Where the threads' cores are, as the last probe found it (shared by all sessions:
    it is the machine's state, not a model's)."""

    def __init__(self):
        self.far, self.at, self.fastest = 0, -1e9, None

    def update(self, every_s, far_ratio) -> int:
        now = time.perf_counter()
        if now - self.at >= every_s:
            self.at = now
            ns = pool_round_trip_ns()
            if ns > 0:                  # else (worker asleep: up to 50 us) as it was
                self.fastest = ns if self.fastest is None else min(self.fastest, ns)
                self.far = int(ns > far_ratio * self.fastest)
        return self.far


_placement = _Placement()
