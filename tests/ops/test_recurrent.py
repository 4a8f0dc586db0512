"""Recurrent layers (cyconv/ops/recurrent.py): LSTM, GRU and RNN vs ONNX Runtime on one-node
models (directions, layouts, sequence lengths, peepholes, initial states, clip, activations),
an LSTM step written out by hand, attribute errors at load, and ONNX's node tests.

The ONNX-runtime and node-test helpers are repeated in each tests/ops/test_<family>.py on
purpose: each family's tests stay runnable on their own, and the helpers are short.
"""

import numpy as np
import pytest

import cyconv.ops  # noqa: F401  (registers the operators)
from cyconv.engine.registry import call_op
from cyconv.errors import InputError, ModelError

from op_testing import assert_same, ort_run, onnx_node_cases, run_node_case


# ----------------------------------------------------------------------------- vs ONNX Runtime

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def make_inputs(rng, op, steps=5, batch=3, n_in=4, hs=6, n_dir=1, *, bias=True, lens=None,
                init=False, peep=False, layout=0):
    g = GATES[op]
    x = rng.standard_normal((steps, batch, n_in) if not layout else (batch, steps, n_in))
    ins = [x, rng.standard_normal((n_dir, g * hs, n_in)) * 0.5,
           rng.standard_normal((n_dir, g * hs, hs)) * 0.5,
           rng.standard_normal((n_dir, 2 * g * hs)) * 0.5 if bias else None,
           np.asarray(lens, np.int32) if lens is not None else None]
    state = (n_dir, batch, hs) if not layout else (batch, n_dir, hs)
    if init:
        ins.append(rng.standard_normal(state))
        if op == "LSTM":
            ins.append(rng.standard_normal(state))
    if peep:
        ins += [None] * (7 - len(ins)) + [rng.standard_normal((n_dir, 3 * hs))]
    ins = [None if a is None else np.asarray(a, np.float32 if a.dtype.kind == "f" else a.dtype)
           for a in ins]
    while ins[-1] is None:
        ins.pop()
    return ins


CASES = [
    ("LSTM", {}, {}), ("LSTM", {"direction": "reverse"}, {}),
    ("LSTM", {"direction": "bidirectional"}, {"n_dir": 2, "init": True}),
    ("LSTM", {}, {"lens": [5, 2, 3], "init": True, "peep": True}),
    ("LSTM", {"direction": "bidirectional"}, {"n_dir": 2, "lens": [1, 5, 4]}),
    ("LSTM", {"clip": 0.7, "input_forget": 1}, {"bias": False}),
    ("GRU", {}, {}), ("GRU", {"linear_before_reset": 1}, {"init": True}),
    ("GRU", {"direction": "bidirectional"}, {"n_dir": 2, "lens": [2, 5, 3]}),
    ("RNN", {}, {}), ("RNN", {"direction": "reverse", "activations": ["Relu"]}, {"init": True}),
    ("RNN", {"activations": ["HardSigmoid"], "activation_alpha": [0.3],
             "activation_beta": [0.4]}, {}),
]


@pytest.mark.parametrize("op,attrs,kw", CASES, ids=[f"{o}-{a}-{k}" for o, a, k in CASES])
def test_recurrent_matches_onnxruntime(rng, op, attrs, kw):
    ins = make_inputs(rng, op, **kw)
    attrs = {"hidden_size": 6, **attrs}
    n_out = 3 if op == "LSTM" else 2
    got = call_op(op, ins, attrs, opset=14, num_outputs=n_out)
    want = ort_run(op, ins, attrs, 14, [np.float32] * n_out)
    for g, w in zip(got, want):
        assert_same(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_layout_1_is_layout_0_transposed(rng, op):
    # ONNX Runtime has no layout=1 (batch-first); it must be the transposed layout-0 result.
    ins = make_inputs(rng, op, n_dir=2, init=True, lens=[4, 5, 2])
    attrs = {"hidden_size": 6, "direction": "bidirectional"}
    n_out = 3 if op == "LSTM" else 2
    want = call_op(op, ins, attrs, opset=14, num_outputs=n_out)
    bf = [ins[0].transpose(1, 0, 2)] + ins[1:5] + [a.transpose(1, 0, 2) for a in ins[5:]]
    got = call_op(op, bf, {**attrs, "layout": 1}, opset=14, num_outputs=n_out)
    assert_same(got[0], want[0].transpose(2, 0, 1, 3), rtol=0, atol=0)
    for g, w in zip(got[1:], want[1:]):
        assert_same(g, w.transpose(1, 0, 2), rtol=0, atol=0)


def test_lstm_one_step_by_hand(rng):
    x, w, r, b = make_inputs(rng, "LSTM", steps=1, batch=2, n_in=3, hs=2)
    y, y_h, y_c = call_op("LSTM", [x, w, r, b], {"hidden_size": 2}, opset=14, num_outputs=3)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    z = x[0].astype(np.float64) @ w[0].T + b[0, :8] + b[0, 8:]     # h0 = c0 = 0
    i, o, f, c = np.split(z, 4, axis=1)
    cell = sig(i) * np.tanh(c)
    np.testing.assert_allclose(y_c[0], cell, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_h[0], sig(o) * np.tanh(cell), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y[0, 0], y_h[0])


def test_recurrent_errors(rng):
    ins = make_inputs(rng, "LSTM")
    with pytest.raises(ModelError, match="hidden_size is required"):
        call_op("LSTM", ins, {}, opset=14)
    with pytest.raises(ModelError, match="direction"):
        call_op("LSTM", ins, {"hidden_size": 6, "direction": "sideways"}, opset=14)
    with pytest.raises(ModelError, match="activation"):
        call_op("LSTM", ins, {"hidden_size": 6, "activations": ["Sigmoid", "Tanh", "Gelu"]},
                opset=14)
    with pytest.raises(ModelError, match="activations given"):
        call_op("GRU", ins, {"hidden_size": 6, "activations": ["Sigmoid"]}, opset=14)
    with pytest.raises(InputError, match="do not fit"):
        call_op("LSTM", ins, {"hidden_size": 5}, opset=14)


# ----------------------------------------------------------------------------- ONNX node tests

RNN_OPS = {"LSTM", "GRU", "RNN"}
NODE_CASES = onnx_node_cases(r"test_(lstm|gru|rnn|simple_rnn)_", RNN_OPS)


def test_node_cases_found():
    assert len(NODE_CASES) >= 10


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node(case):
    run_node_case(case, n_threads=2)
