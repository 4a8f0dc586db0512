"""Recurrent layers: LSTM, GRU, RNN (ONNX semantics; CRNN text recognisers end in a BiLSTM).

Shapes (layout 0; layout 1 swaps the first two axes of X, Y, Y_h, Y_c):

    X [T, N, I]   W [D, G*H, I]   R [D, G*H, H]   B [D, 2*G*H] (Wb then Rb)
    sequence_lens [N]   initial_h / initial_c [D, N, H]   P [D, 3*H] (LSTM peepholes: i, o, f)
    Y [T, D, N, H]   Y_h / Y_c [D, N, H]

D = 2 for ``direction="bidirectional"`` (forward then reverse), else 1; G = 4 gates for LSTM
(order i, o, f, c), 3 for GRU (z, r, h), 1 for RNN. Per step t (f, g, h the activations,
default sigmoid / tanh / tanh; ``clip`` bounds every gate's pre-activation):

    LSTM: i = f(x Wi' + h Ri' + Pi.c + bi)   f_ = f(x Wf' + h Rf' + Pf.c + bf)
          c~ = g(x Wc' + h Rc' + bc)         c = f_.c + i.c~    (input_forget: f_ = 1 - i)
          o = f(x Wo' + h Ro' + Po.c + bo)   h = o . h(c)
    GRU:  z = f(x Wz' + h Rz' + bz)          r = f(x Wr' + h Rr' + br)
          h~ = g(x Wh' + (r.h) Rh' + Rbh + Wbh)            (linear_before_reset=0)
          h~ = g(x Wh' + r.(h Rh' + Rbh) + Wbh)            (linear_before_reset=1)
          h = (1 - z).h~ + z.h
    RNN:  h = f(x Wi' + h Ri' + Wbi + Rbi)

The input projections of all steps are one matmul before the time loop; the loop does the
[N, H] x [H, G*H] recurrence. A batch entry past its ``sequence_lens`` keeps its state and
writes zeros to Y (reverse direction: the valid prefix is read backwards), as ONNX Runtime.
"""
from __future__ import annotations

import numpy as np

from ..engine.registry import register
from ..errors import InputError


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


# name -> (function of (x, alpha, beta), number of alpha/beta parameters it consumes)
_ACTIVATIONS = {
    "sigmoid": (lambda x, a, b: _sigmoid(x), 0),
    "tanh": (lambda x, a, b: np.tanh(x), 0),
    "relu": (lambda x, a, b: np.maximum(x, 0), 0),
    "affine": (lambda x, a, b: a * x + b, 2),
    "leakyrelu": (lambda x, a, b: np.where(x < 0, a * x, x), 1),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 2),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 2),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))), 1),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), 0),
    "softplus": (lambda x, a, b: np.logaddexp(0, x), 0),
}
# alpha/beta defaults the spec gives where the list leaves them out
_DEFAULT_AB = {"leakyrelu": (0.01, 0.0), "thresholdedrelu": (1.0, 0.0),
               "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0), "affine": (1.0, 0.0),
               "scaledtanh": (1.0, 1.0)}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_N_ACT = {"LSTM": 3, "GRU": 2, "RNN": 1}
_DEFAULT_ACT = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _bind_activations(op, names, alphas, betas, n_dir):
    """One list of ``x -> y`` callables per direction, alpha/beta consumed in order."""
    names = list(names) if names else _DEFAULT_ACT[op] * n_dir
    if len(names) == _N_ACT[op] and n_dir == 2:
        names = names * 2
    if len(names) != _N_ACT[op] * n_dir:
        raise ValueError(f"{len(names)} activations given, {op} needs {_N_ACT[op] * n_dir}")
    alphas, betas = list(alphas or []), list(betas or [])
    bound = []
    for name in names:
        key = (name.decode() if isinstance(name, bytes) else name).lower()
        if key not in _ACTIVATIONS:
            raise ValueError(f"activation {name!r} is not supported")
        fn, n_params = _ACTIVATIONS[key]
        a, b = _DEFAULT_AB.get(key, (0.0, 0.0))
        if n_params >= 1 and alphas:
            a = alphas.pop(0)
        if n_params >= 2 and betas:
            b = betas.pop(0)
        bound.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    k = _N_ACT[op]
    return [bound[d * k:(d + 1) * k] for d in range(n_dir)]


# ------------------------------------------------------------------------------------------
# reference (float64 for float inputs; also the run path: the time loop is inherently serial)

def recurrent_reference(op, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None, *,
                        hidden_size, direction="forward", activations=None,
                        activation_alpha=None, activation_beta=None, clip=None,
                        input_forget=0, linear_before_reset=0, layout=0):
    """``(Y, Y_h[, Y_c])`` of ``op`` in {"LSTM", "GRU", "RNN"} (see the module docstring)."""
    dtype = x.dtype
    f64 = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    x, w, r, b, h0, c0, p = map(f64, (x, w, r, b, h0, c0, p))
    if layout:
        x = x.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    steps, batch, _ = x.shape
    hs, g = hidden_size, _GATES[op]
    n_dir = 2 if direction == "bidirectional" else 1
    acts = _bind_activations(op, activations, activation_alpha, activation_beta, n_dir)
    lens = np.full(batch, steps, np.int64) if seq_lens is None else \
        np.asarray(seq_lens, np.int64).reshape(batch)
    y = np.zeros((steps, n_dir, batch, hs))
    y_h = np.zeros((n_dir, batch, hs))
    y_c = np.zeros((n_dir, batch, hs))
    for d in range(n_dir):
        reverse = direction == "reverse" or d == 1
        wb, rb = (b[d, :g * hs], b[d, g * hs:]) if b is not None else (np.zeros(g * hs),) * 2
        # every step's input projection at once: [T, N, G*H]
        xw = x @ w[d].T + wb
        h = h0[d].copy() if h0 is not None else np.zeros((batch, hs))
        c = c0[d].copy() if c0 is not None else np.zeros((batch, hs))
        pi, po, pf = (p[d, :hs], p[d, hs:2 * hs], p[d, 2 * hs:]) if p is not None else \
            (np.zeros(hs),) * 3
        f, gg, hh = (acts[d] + [None, None])[:3]
        cl = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
        for t in range(steps):
            live = t < lens                                           # [N]
            # reverse: entry n reads its valid prefix backwards
            src = np.where(live, lens - 1 - t, 0) if reverse else np.full(batch, t)
            xt = xw[src, np.arange(batch)]                            # [N, G*H]
            if op == "LSTM":
                z = xt + h @ r[d].T + rb
                zi, zo, zf, zc = (z[:, k * hs:(k + 1) * hs] for k in range(4))
                i_ = f(cl(zi + pi * c))
                f_ = 1.0 - i_ if input_forget else f(cl(zf + pf * c))
                c_new = f_ * c + i_ * gg(cl(zc))
                o_ = f(cl(zo + po * c_new))
                h_new = o_ * hh(c_new)
            elif op == "GRU":
                rz, rr, rh = (r[d][k * hs:(k + 1) * hs] for k in range(3))
                bz, br, bh = (rb[k * hs:(k + 1) * hs] for k in range(3))
                xz, xr, xh = (xt[:, k * hs:(k + 1) * hs] for k in range(3))
                z_ = f(cl(xz + h @ rz.T + bz))
                r_ = f(cl(xr + h @ rr.T + br))
                if linear_before_reset:
                    h_t = gg(cl(xh + r_ * (h @ rh.T + bh)))
                else:
                    h_t = gg(cl(xh + (r_ * h) @ rh.T + bh))
                h_new, c_new = (1.0 - z_) * h_t + z_ * h, c
            else:
                h_new, c_new = f(cl(xt + h @ r[d].T + rb)), c
            m = live[:, None]
            h = np.where(m, h_new, h)
            c = np.where(m, c_new, c)
            out_t = src if reverse else np.full(batch, t)
            y[out_t[live], d, np.arange(batch)[live]] = h[live]
        y_h[d], y_c[d] = h, c
    if layout:
        y = y.transpose(2, 0, 1, 3)          # [N, T, D, H]
        y_h, y_c = y_h.transpose(1, 0, 2), y_c.transpose(1, 0, 2)
    outs = (y.astype(dtype), y_h.astype(dtype))
    return outs + ((y_c.astype(dtype),) if op == "LSTM" else ())


def lstm_reference(x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None, **attrs):
    return recurrent_reference("LSTM", x, w, r, b, seq_lens, h0, c0, p, **attrs)


def gru_reference(x, w, r, b=None, seq_lens=None, h0=None, **attrs):
    return recurrent_reference("GRU", x, w, r, b, seq_lens, h0, **attrs)


def rnn_reference(x, w, r, b=None, seq_lens=None, h0=None, **attrs):
    return recurrent_reference("RNN", x, w, r, b, seq_lens, h0, **attrs)


# ------------------------------------------------------------------------------------------
# builders

def _build(op, node, hidden_size, direction, activations, activation_alpha, activation_beta,
           clip, layout, **extra):
    if hidden_size is None:
        raise node.error("attribute hidden_size is required")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction not in ("forward", "reverse", "bidirectional"):
        raise node.error(f"direction must be forward, reverse or bidirectional, got {direction!r}")
    if int(hidden_size) != hidden_size or hidden_size < 1:
        raise node.error(f"hidden_size must be a positive int, got {hidden_size!r}")
    if layout not in (0, 1):
        raise node.error(f"layout must be 0 or 1, got {layout!r}")
    if clip is not None and not float(clip) > 0:
        raise node.error(f"clip must be > 0, got {clip!r}")
    for name, v in extra.items():
        if v not in (0, 1):
            raise node.error(f"{name} must be 0 or 1, got {v!r}")
    n_dir = 2 if direction == "bidirectional" else 1
    try:
        _bind_activations(op, activations, activation_alpha, activation_beta, n_dir)
    except ValueError as exc:
        raise node.error(str(exc)) from None
    max_in = {"LSTM": 8, "GRU": 6, "RNN": 6}[op]
    if not 3 <= node.num_inputs <= max_in:
        raise node.error(f"expects 3 to {max_in} inputs, got {node.num_inputs}")
    attrs = dict(hidden_size=int(hidden_size), direction=direction, activations=activations,
                 activation_alpha=activation_alpha, activation_beta=activation_beta,
                 clip=None if clip is None else float(clip), layout=int(layout), **extra)
    g, hs = _GATES[op], int(hidden_size)
    n_out = node.num_outputs

    def run(ctx, x, w, r, *rest):
        if x.ndim != 3 or x.dtype.kind != "f":
            raise InputError(f"{op} node {node.name!r}: X must be a 3-D float tensor, got "
                             f"{x.dtype} {x.shape}")
        n_in = x.shape[2]
        if w.shape != (n_dir, g * hs, n_in) or r.shape != (n_dir, g * hs, hs):
            raise InputError(f"{op} node {node.name!r}: W {w.shape} / R {r.shape} do not fit "
                             f"{n_dir} direction(s), hidden size {hs}, input size {n_in}")
        outs = recurrent_reference(op, x, w, r, *rest, **attrs)
        return outs[0] if n_out == 1 else outs[:n_out]
    return run


@register("LSTM", reference=lstm_reference, min_opset=7)
def LSTM(node, *, hidden_size=None, direction="forward", activations=None,
         activation_alpha=None, activation_beta=None, clip=None, input_forget=0, layout=0):
    return _build("LSTM", node, hidden_size, direction, activations, activation_alpha,
                  activation_beta, clip, layout, input_forget=input_forget)


@register("GRU", reference=gru_reference, min_opset=7)
def GRU(node, *, hidden_size=None, direction="forward", activations=None,
        activation_alpha=None, activation_beta=None, clip=None, linear_before_reset=0, layout=0):
    return _build("GRU", node, hidden_size, direction, activations, activation_alpha,
                  activation_beta, clip, layout, linear_before_reset=linear_before_reset)


@register("RNN", reference=rnn_reference, min_opset=7)
def RNN(node, *, hidden_size=None, direction="forward", activations=None,
        activation_alpha=None, activation_beta=None, clip=None, layout=0):
    return _build("RNN", node, hidden_size, direction, activations, activation_alpha,
                  activation_beta, clip, layout)
