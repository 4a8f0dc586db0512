"""Inverted residual blocks fused into one native step (kernels/conv_block.pxi, plan.py's
fuse_blocks): 1x1 expand -> depthwise -> 1x1 project (+ residual), run strip by strip.

The fused step computes every output element as the three steps do, in the same order, so
it must equal the Python loop (which runs them one by one) bitwise, for any batch, thread
count, stride, padding and kernel size; and ONNX Runtime within float rounding."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv
from cyconv.engine.plan import fuse_blocks

FUSED_NOTE = "inverted residual block"


def _block_model(cin, cexp, cout, hw, stride=1, kernel=3, pads=None, expand=True,
                 residual=None, dw_act="Clip", expand_act="Clip", expanded_output=False):
    """x -> [1x1 expand, act] -> depthwise kxk stride s, act -> 1x1 project [+ x]."""
    rng = np.random.default_rng(cin * 1000 + cexp + cout + hw[0] + stride + kernel)
    inits, nodes = [], []

    def tensor(name, *shape, scale=0.3):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def act(kind, src, dst):
        if kind == "Clip":
            if "lo" not in [t.name for t in inits]:
                inits.append(numpy_helper.from_array(np.float32(0), "lo"))
                inits.append(numpy_helper.from_array(np.float32(6), "hi"))
            nodes.append(helper.make_node("Clip", [src, "lo", "hi"], [dst]))
        elif kind == "PRelu":
            nodes.append(helper.make_node("PRelu", [src, tensor(dst + "_s", cexp, 1, 1)],
                                          [dst]))
        elif kind is None:
            nodes.append(helper.make_node("Identity", [src], [dst]))
        else:
            nodes.append(helper.make_node(kind, [src], [dst]))

    src = "x"
    if expand:
        nodes.append(helper.make_node("Conv", ["x", tensor("we", cexp, cin, 1, 1),
                                               tensor("be", cexp)], ["e0"]))
        act(expand_act, "e0", "e")
        src = "e"
    else:
        assert cexp == cin
    p = kernel // 2
    nodes.append(helper.make_node(
        "Conv", [src, tensor("wd", cexp, 1, kernel, kernel), tensor("bd", cexp)], ["d0"],
        group=cexp, strides=[stride, stride], pads=pads or [p, p, p, p]))
    act(dw_act, "d0", "d")
    nodes.append(helper.make_node("Conv", ["d", tensor("wp", cout, cexp, 1, 1),
                                           tensor("bp", cout)], ["p"]))
    if residual is None:
        residual = stride == 1 and cin == cout
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if residual:
        nodes.append(helper.make_node("Add", ["p", "x"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["p"], ["y"]))
    if expanded_output:
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       ["N", cin, hw[0], hw[1]])],
        outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8).SerializeToString()


def check_block(spec, threads, batches=(1, 2, 3)):
    """The native plan (fused where it applies) against the Python loop (bitwise) and ONNX
    Runtime; returns the notes of the plans made."""
    model = _block_model(**spec)
    native = cyconv.InferenceSession(model, threads=threads)
    before = os.environ.get("CYCONV_NATIVE")
    os.environ["CYCONV_NATIVE"] = "0"
    try:
        python = cyconv.InferenceSession(model, threads=threads)
    finally:
        if before is None:
            del os.environ["CYCONV_NATIVE"]
        else:
            os.environ["CYCONV_NATIVE"] = before
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    h, w = spec["hw"]
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, spec["cin"], h, w),
                                                         dtype=np.float32)
        for got, want, peer in zip(native.run(None, {"x": x}), python.run(None, {"x": x}),
                                   ref.run(None, {"x": x})):
            np.testing.assert_array_equal(got, want, err_msg=f"{spec} batch {batch}")
            np.testing.assert_allclose(got, peer, rtol=1e-4, atol=1e-4)
    assert len(native._native_plans) == len(set(batches))
    return [p.notes for p in native._native_plans.values()]


BLOCKS = {
    # MobileNetV2's blocks at their input sizes: 112x112 stride 2, 56x56 with a residual
    "expand s2 112": dict(cin=16, cexp=48, cout=24, hw=(112, 112), stride=2),
    "expand s1 residual": dict(cin=24, cexp=72, cout=24, hw=(56, 56)),
    "no expand": dict(cin=32, cexp=32, cout=16, hw=(64, 60), expand=False),
    "smallest fused plane": dict(cin=16, cexp=48, cout=16, hw=(28, 28)),
    "odd sides s2": dict(cin=8, cexp=40, cout=12, hw=(61, 67), stride=2),
    "asymmetric pads s2": dict(cin=8, cexp=24, cout=8, hw=(58, 58), stride=2,
                               pads=[0, 0, 1, 1]),
    "5x5 Relu": dict(cin=8, cexp=32, cout=8, hw=(57, 56), kernel=5, dw_act="Relu",
                     expand_act="Relu"),
    "no activations": dict(cin=16, cexp=32, cout=16, hw=(56, 59), dw_act=None,
                           expand_act=None, residual=False),
}


@pytest.mark.parametrize("threads", (1, 2, 3))
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_fused_block_equals_three_steps(name, threads):
    for notes in check_block(BLOCKS[name], threads):
        assert sum(FUSED_NOTE in note for note in notes) == 1, notes


@pytest.mark.parametrize("cap", ["avx2", "generic"])
def test_capped_isa_variants(cap):
    # each variant in a fresh process (the ISA is chosen once): the generic one reads the
    # project's input packed (no row offsets) and runs the scalar depthwise kernel, which
    # fuses only ReLU (Clip blocks then stay three steps; either way the results match)
    code = ("import sys; sys.path.insert(0, %r); import test_conv_block as t; "
            "[t.check_block(t.BLOCKS[name], threads, (1, 2)) for name in sorted(t.BLOCKS) "
            "for threads in (1, 2)]" % os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CYCONV_GEMM_ISA=cap,
               PYTHONPATH=os.path.dirname(os.path.dirname(cyconv.__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]


def test_fused_block_results_do_not_depend_on_threads():
    model = _block_model(cin=24, cexp=72, cout=24, hw=(56, 56))
    x = np.random.default_rng(0).standard_normal((1, 24, 56, 56), dtype=np.float32)
    results = [cyconv.InferenceSession(model, threads=t).run(None, {"x": x})[0]
               for t in (1, 2, 4)]
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize("case", ["expanded value is an output", "depthwise PRelu",
                                  "small plane"])
def test_blocks_that_stay_three_steps(case):
    spec = dict(cin=16, cexp=32, cout=16, hw=(56, 56))
    if case == "expanded value is an output":
        spec["expanded_output"] = True
    elif case == "depthwise PRelu":
        spec["dw_act"] = "PRelu"           # its epilogue runs outside the depthwise kernel
    else:
        spec["hw"] = (27, 27)              # intermediates stay in cache: not worth fusing
    (notes,) = check_block(spec, 2, batches=(2,))
    fused = [note for note in notes if FUSED_NOTE in note]
    if case == "expanded value is an output":
        # the expand's output must be written: only depthwise -> project fuse
        assert len(fused) == 1 and fused[0].count("', '") == 1, fused
    else:
        assert fused == []


class _Op:
    def __init__(self, name):
        self.name = name


def test_fuse_blocks_chain_rules():
    # steps: 0: a -> e, 1: e -> d, 2: d, a -> y (residual a), 3: y -> z, 4: z -> w,
    # 5: w -> u; 6 reads w too, so 4 -> 5 is not a chain (w has two readers)
    names = ["expand", "dw", "project", "expand2", "dw2", "project2", "other"]
    steps = [(_Op(n), ins, outs) for n, ins, outs in [
        ("expand", [0], [1]), ("dw", [1], [2]), ("project", [2, 0], [3]),
        ("expand2", [3], [4]), ("dw2", [4], [5]), ("project2", [5], [6]),
        ("other", [5], [7])]]
    calls = []

    def fuse(first, middle, last):
        calls.append(tuple(op.name if op else None for op in (first, middle, last)))
        if middle.name.startswith("dw") and last.name.startswith("project"):
            return ("fused", first, middle, last)
        return None

    fused, gone = fuse_blocks(steps, fuse, keep=lambda v: False)
    assert set(fused) == {2} and gone == {0, 1}
    op, ins, outs, chain = fused[2]
    assert ins == [0, 0] and outs == [3] and chain == [0, 1, 2]
    assert [c for c in calls if c[2] == "project2"] == []    # dw2's output has two readers
    # a step already fused (project, the last of the first chain) starts no other chain
    assert ("project", "expand2", "dw2") not in calls
    # a kept intermediate (a graph output) breaks the chain; the shorter one may still fuse
    fused, gone = fuse_blocks(steps, fuse, keep=lambda v: v == 1)
    assert fused[2][3] == [1, 2] and fused[2][1] == [1, 0] and gone == {1}
    # fuse declines: nothing changes
    assert fuse_blocks(steps, lambda *ops: None, keep=lambda v: False) == ({}, set())
