"""Data-movement operators: shapes, views, gathers, casts and constants.

These ops move or relabel data instead of computing on it, so numpy is both their reference
and their implementation. Every output is C-contiguous (a fresh array or a contiguous view of
an input) because compiled kernels downstream take contiguous buffers; outputs may share
memory with inputs (Reshape, Flatten, Squeeze, Unsqueeze, Identity), as in ONNX Runtime, and
callers must not write into them.

Shape legend: ``r`` is the rank of the data input, ``d[i]`` its dims.

The small attribute helpers at the top (``attr_str``, ``attr_ints``, ``attr_tensor``,
``norm_axis``, ``run_error``) are shared by the other data-movement families (pad, reduce,
resize): attributes arrive either from the importer (decoded ``str`` / ``ndarray``) or raw from
``onnx.helper.get_attribute_value`` (``bytes`` / ``TensorProto``) in tests and ``run_node``.
"""
from __future__ import annotations

import math

import numpy as np

from ..engine.registry import ALIAS, SHAPE_ONLY, natively, register
from ..kernels import native as _kn
from ..errors import InputError

INT64_MAX = np.iinfo(np.int64).max


# ----------------------------------------------------------------------------- attribute helpers

def attr_str(value) -> str | None:
    """A string attribute as ``str`` (``bytes`` from onnx.helper are decoded)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def attr_ints(node, name: str, value) -> list[int] | None:
    """A list-of-ints attribute, validated; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise node.error(f"attribute {name!r} must be a list of ints, got {value!r}") from None


def attr_int(node, name: str, value) -> int:
    """An int attribute, validated (bools and integral floats are accepted)."""
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise node.error(f"attribute {name!r} must be an int, got {value!r}") from None
    if out != value:
        raise node.error(f"attribute {name!r} must be an int, got {value!r}")
    return out


def attr_tensor(node, name: str, value) -> np.ndarray:
    """A tensor attribute as a numpy array (``TensorProto`` from onnx.helper is converted)."""
    if isinstance(value, np.ndarray):
        return value
    if type(value).__name__ == "TensorProto":
        from onnx import numpy_helper
        return numpy_helper.to_array(value)
    raise node.error(f"attribute {name!r} must be a tensor, got {type(value).__name__}")


def run_error(node, message: str) -> InputError:
    """An InputError naming the node, for data that the op cannot accept at run time."""
    return InputError(f"{node.op_type} node {node.name!r}: {message}")


def norm_axis(node, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)`` mapped to ``[0, rank)``; run-time error otherwise."""
    if not -rank <= axis < rank:
        raise run_error(node, f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def norm_axes(node, axes, rank: int, what: str = "axes") -> list[int]:
    """Each axis normalised with :func:`norm_axis`; duplicates are an error."""
    out = [norm_axis(node, int(a), rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise run_error(node, f"{what} {list(axes)} repeat an axis")
    return out


def int_list(node, array, what: str) -> list[int]:
    """A 0-D/1-D integer tensor input as a list of Python ints."""
    a = np.asarray(array)
    if a.ndim > 1 or not (a.dtype.kind in "iu" or a.size == 0):
        raise run_error(node, f"{what} must be a 1-D integer tensor, got {a.dtype} {a.shape}")
    return [int(v) for v in a.reshape(-1)]


def _contiguous(x: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    return np.asarray(x, order="C")


def _single(outputs):
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


# ----------------------------------------------------------------------------- Flatten / Reshape

def flatten_reference(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Flatten to 2-D: ``(prod(d[:axis]), prod(d[axis:]))``; ``axis`` in ``[-r, r]``."""
    r = x.ndim
    if axis < 0:
        axis += r
    if not 0 <= axis <= r:
        raise ValueError(f"axis out of range for rank {r}")
    # Explicit dims instead of -1: -1 is ambiguous when a dim is 0.
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Flatten", reference=flatten_reference)
def Flatten(node, *, axis=1):
    axis = attr_int(node, "axis", axis)
    if axis < 0 and node.opset < 11:
        raise node.error(f"negative axis {axis} needs opset 11 (model has {node.opset})")

    def run(ctx, x):
        if not -x.ndim <= axis <= x.ndim:
            raise run_error(node, f"axis {axis} out of range for rank {x.ndim}")
        return flatten_reference(_contiguous(x), axis)
    return natively(run, ALIAS)


def reshape_target(in_shape, shape, allowzero: int = 0) -> tuple:
    """The output shape of Reshape: 0 copies the input dim (unless ``allowzero``), -1 is inferred.

    Raises ValueError when the request is invalid for ``in_shape``.
    """
    shape = [int(s) for s in shape]
    if shape.count(-1) > 1:
        raise ValueError(f"shape {shape} has more than one -1")
    if any(s < -1 for s in shape):
        raise ValueError(f"shape {shape} has a negative dim other than -1")
    if allowzero and 0 in shape and -1 in shape:
        raise ValueError(f"shape {shape}: with allowzero=1, 0 and -1 cannot both appear")
    out = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise ValueError(f"shape {shape}: 0 at index {i} copies a dim the input lacks")
            s = in_shape[i]
        out.append(s)
    total = math.prod(in_shape)
    if -1 in out:
        known = math.prod(s for s in out if s != -1)
        if known == 0 or total % known:
            raise ValueError(f"cannot infer -1 in {shape} for input shape {tuple(in_shape)}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise ValueError(f"cannot reshape {tuple(in_shape)} to {shape}")
    return tuple(out)


def reshape_reference(x: np.ndarray, shape, allowzero: int = 0) -> np.ndarray:
    """Reshape with ONNX's 0 / -1 conventions (see :func:`reshape_target`)."""
    return x.reshape(reshape_target(x.shape, shape, allowzero))


@register("Reshape", reference=reshape_reference)
def Reshape(node, *, allowzero=0, shape=None):
    allowzero = attr_int(node, "allowzero", allowzero)
    if allowzero not in (0, 1):
        raise node.error(f"allowzero must be 0 or 1, got {allowzero}")
    if allowzero and node.opset < 14:
        raise node.error("allowzero needs opset 14")
    # Reshape-1 took the target shape as an attribute; from opset 5 it is the second input.
    attr_shape = attr_ints(node, "shape", shape)
    if node.opset < 5 and attr_shape is None:
        raise node.error("Reshape-1 needs the 'shape' attribute")
    if node.opset >= 5 and attr_shape is not None:
        raise node.error("'shape' is an input from opset 5, not an attribute")

    if attr_shape is None and node.const(1) is not None:
        attr_shape = int_list(node, node.const(1), "shape")   # a constant target: parse once
    resolved = {}   # input shape -> output shape, when the target is constant

    def run(ctx, x, shape_in=None):
        if attr_shape is not None:
            out = resolved.get(x.shape)
            if out is None:
                if len(resolved) >= 64:
                    resolved.clear()
                try:
                    out = resolved[x.shape] = reshape_target(x.shape, attr_shape, allowzero)
                except ValueError as exc:
                    raise run_error(node, str(exc)) from None
            return _contiguous(x).reshape(out)
        target = int_list(node, shape_in, "shape")
        try:
            return reshape_reference(_contiguous(x), target, allowzero)
        except ValueError as exc:
            raise run_error(node, str(exc)) from None
    return natively(run, ALIAS)


# ----------------------------------------------------------------------------- Transpose

def transpose_reference(x: np.ndarray, perm=None) -> np.ndarray:
    """Permute axes; ``perm`` defaults to reversing them."""
    return _contiguous(np.transpose(x, perm))


@register("Transpose", reference=transpose_reference)
def Transpose(node, *, perm=None):
    perm = attr_ints(node, "perm", perm)
    if perm is not None and sorted(perm) != list(range(len(perm))):
        raise node.error(f"perm {perm} is not a permutation of 0..{len(perm) - 1}")

    def run(ctx, x):
        if perm is not None and len(perm) != x.ndim:
            raise run_error(node, f"perm {perm} does not match rank {x.ndim}")
        return transpose_reference(x, perm)

    def native(in_shapes, n_threads):
        shape = tuple(in_shapes[0])
        p = tuple(perm) if perm is not None else tuple(reversed(range(len(shape))))
        if len(p) != len(shape) or not 1 <= len(shape) <= _kn.TRANSPOSE_MAX_RANK:
            return None
        return _kn.TransposeOp(shape, p)
    return natively(run, native)


# ----------------------------------------------------------------------------- Concat / Split

def concat_reference(inputs, axis: int) -> np.ndarray:
    """Join along ``axis`` (negative counts from the end)."""
    return np.concatenate(inputs, axis=axis)


@register("Concat", reference=concat_reference)
def Concat(node, *, axis=None):
    if axis is None:
        if node.opset >= 4:
            raise node.error("attribute 'axis' is required from opset 4")
        axis = 1  # Concat-1 default
    axis = attr_int(node, "axis", axis)
    if axis < 0 and node.opset < 11:
        raise node.error(f"negative axis {axis} needs opset 11")
    if node.num_inputs < 1:
        raise node.error("needs at least one input")

    def run(ctx, *xs):
        x0 = xs[0]
        ax = norm_axis(node, axis, x0.ndim)
        for x in xs[1:]:
            if x.dtype != x0.dtype:
                raise run_error(node, f"inputs have different dtypes {x0.dtype} and {x.dtype}")
            if x.ndim != x0.ndim or any(a != b for i, (a, b) in
                                       enumerate(zip(x.shape, x0.shape)) if i != ax):
                raise run_error(node, f"shapes {x0.shape} and {x.shape} differ off axis {ax}")
        return concat_reference(xs, ax)

    def native(in_shapes, n_threads):
        shapes = [tuple(s) for s in in_shapes if s is not None]
        if len(shapes) != len(in_shapes):
            return None
        ax = norm_axis(node, axis, len(shapes[0]))
        if any(len(s) != len(shapes[0]) or s[:ax] + s[ax + 1:] != shapes[0][:ax] + shapes[0][ax + 1:]
               for s in shapes):
            raise run_error(node, f"shapes {shapes} differ off axis {ax}")
        return _kn.ConcatOp(shapes, ax)
    return natively(run, native)


def split_sizes(dim: int, n: int) -> list[int]:
    """Sizes of ``n`` chunks of ``dim``: ``ceil(dim/n)`` each, the last one smaller (opset 18)."""
    chunk = -(-dim // n)
    sizes = []
    left = dim
    for _ in range(n):
        sizes.append(max(min(chunk, left), 0))
        left -= sizes[-1]
    return sizes


def split_reference(x: np.ndarray, sizes, axis: int = 0) -> list:
    """Cut ``x`` along ``axis`` into consecutive pieces of the given ``sizes``."""
    offsets = np.cumsum([0] + list(sizes))
    index = [slice(None)] * x.ndim
    out = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        index[axis] = slice(int(a), int(b))
        out.append(_contiguous(x[tuple(index)]))
    return out


@register("Split", reference=split_reference)
def Split(node, *, axis=0, split=None, num_outputs=None):
    axis = attr_int(node, "axis", axis)
    if axis < 0 and node.opset < 11:
        raise node.error(f"negative axis {axis} needs opset 11")
    attr_split = attr_ints(node, "split", split)
    if attr_split is not None and node.opset >= 13:
        raise node.error("'split' is an input from opset 13, not an attribute")
    if num_outputs is not None:
        if node.opset < 18:
            raise node.error("attribute 'num_outputs' needs opset 18")
        num_outputs = attr_int(node, "num_outputs", num_outputs)
        if num_outputs != node.num_outputs:
            raise node.error(f"num_outputs={num_outputs} but the node has {node.num_outputs} outputs")
    if attr_split is not None and len(attr_split) != node.num_outputs:
        raise node.error(f"split {attr_split} has {len(attr_split)} parts for {node.num_outputs} outputs")
    has_split_input = node.opset >= 13 and node.num_inputs >= 2
    if node.opset >= 18 and not has_split_input and num_outputs is None:
        raise node.error("needs either the 'split' input or the 'num_outputs' attribute")
    if has_split_input and num_outputs is not None:
        raise node.error("'split' input and 'num_outputs' attribute are exclusive")

    def run(ctx, x, split_in=None):
        ax = norm_axis(node, axis, x.ndim)
        dim = x.shape[ax]
        n = node.num_outputs
        if split_in is not None:
            sizes = int_list(node, split_in, "split")
        elif attr_split is not None:
            sizes = attr_split
        elif node.opset >= 18:
            sizes = split_sizes(dim, n)
        else:
            # Before opset 18 an even split had to be exact.
            if dim % n:
                raise run_error(node, f"dim {dim} does not split evenly into {n} outputs")
            sizes = [dim // n] * n
        if len(sizes) != n or sum(sizes) != dim or min(sizes, default=0) < 0:
            raise run_error(node, f"split {sizes} does not cut dim {dim} into {n} outputs")
        return _single(split_reference(x, sizes, ax))
    return run


# ----------------------------------------------------------------------------- Slice

def slice_reference(x: np.ndarray, starts, ends, axes=None, steps=None) -> np.ndarray:
    """ONNX Slice: per listed axis, ``x[start:end:step]`` with ONNX's clamping rules.

    Negative starts/ends count from the end; then for ``step > 0`` both clamp to ``[0, d]``,
    for ``step < 0`` start clamps to ``[0, d-1]`` and end to ``[-1, d-1]`` (-1 meaning "past
    the front", which a Python slice spells ``None``). INT64_MAX / INT64_MIN mean "to the end".
    """
    r = x.ndim
    if axes is None:
        axes = range(len(starts))
    if steps is None:
        steps = [1] * len(starts)
    index = [slice(None)] * r
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + r if axis < 0 else axis
        d = x.shape[axis]
        if step == 0:
            raise ValueError("slice step cannot be 0")
        if start < 0:
            start += d
        if end < 0:
            end += d
        if step > 0:
            start = min(max(start, 0), d)
            end = min(max(end, 0), d)
        else:
            start = min(max(start, 0), d - 1)
            end = min(max(end, -1), d - 1)
        index[axis] = slice(start, end if end >= 0 else None, step)
    return _contiguous(x[tuple(index)])


@register("Slice", reference=slice_reference)
def Slice(node, *, starts=None, ends=None, axes=None):
    # Slice-1 carried starts/ends/axes as attributes; from opset 10 they are inputs.
    attrs = [attr_ints(node, n, v) for n, v in (("starts", starts), ("ends", ends), ("axes", axes))]
    if node.opset >= 10:
        if any(a is not None for a in attrs):
            raise node.error("starts/ends/axes are inputs from opset 10, not attributes")
        if node.num_inputs < 3:
            raise node.error("needs inputs data, starts, ends")
    else:
        if attrs[0] is None or attrs[1] is None:
            raise node.error("Slice-1 needs attributes 'starts' and 'ends'")
        if len(attrs[0]) != len(attrs[1]) or (attrs[2] is not None and len(attrs[2]) != len(attrs[0])):
            raise node.error("starts, ends and axes must have the same length")

    def run(ctx, x, starts_in=None, ends_in=None, axes_in=None, steps_in=None):
        if node.opset >= 10:
            st = int_list(node, starts_in, "starts")
            en = int_list(node, ends_in, "ends")
            ax = int_list(node, axes_in, "axes") if axes_in is not None else None
            sp = int_list(node, steps_in, "steps") if steps_in is not None else None
        else:
            st, en, ax, sp = attrs[0], attrs[1], attrs[2], None
        n = len(st)
        if len(en) != n or (ax is not None and len(ax) != n) or (sp is not None and len(sp) != n):
            raise run_error(node, "starts, ends, axes and steps must have the same length")
        ax = norm_axes(node, ax if ax is not None else range(n), x.ndim)
        if sp is not None and 0 in sp:
            raise run_error(node, "steps cannot be 0")
        return slice_reference(x, st, en, ax, sp)
    return run


# ----------------------------------------------------------------------------- Squeeze / Unsqueeze

def squeeze_reference(x: np.ndarray, axes=None) -> np.ndarray:
    """Drop the listed size-1 axes (all size-1 axes when ``axes`` is None)."""
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    drop = {a + x.ndim if a < 0 else a for a in axes}
    return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])


def unsqueeze_reference(x: np.ndarray, axes) -> np.ndarray:
    """Insert size-1 axes at the listed positions of the output (rank ``r + len(axes)``)."""
    out_rank = x.ndim + len(axes)
    axes = {a + out_rank if a < 0 else a for a in axes}
    dims = iter(x.shape)
    return x.reshape([1 if i in axes else next(dims) for i in range(out_rank)])


def _axes_attr_or_input(node, name, axes, input_from):
    """Axes of (Un)Squeeze/Reduce*: an attribute before ``input_from``, then an input."""
    axes = attr_ints(node, name, axes)
    if axes is not None and node.opset >= input_from:
        raise node.error(f"'{name}' is an input from opset {input_from}, not an attribute")
    if axes is not None and node.opset < 11 and any(a < 0 for a in axes):
        raise node.error(f"negative {name} {axes} need opset 11")
    return axes


@register("Squeeze", reference=squeeze_reference)
def Squeeze(node, *, axes=None):
    attr_axes = _axes_attr_or_input(node, "axes", axes, 13)

    def run(ctx, x, axes_in=None):
        ax = int_list(node, axes_in, "axes") if axes_in is not None else attr_axes
        if ax is not None:
            ax = norm_axes(node, ax, x.ndim)
            bad = [a for a in ax if x.shape[a] != 1]
            if bad:
                raise run_error(node, f"cannot squeeze axes {bad} of shape {x.shape}")
        return squeeze_reference(_contiguous(x), ax)
    return natively(run, ALIAS)


@register("Unsqueeze", reference=unsqueeze_reference)
def Unsqueeze(node, *, axes=None):
    attr_axes = _axes_attr_or_input(node, "axes", axes, 13)
    if node.opset < 13 and attr_axes is None:
        raise node.error("attribute 'axes' is required before opset 13")

    def run(ctx, x, axes_in=None):
        ax = int_list(node, axes_in, "axes") if axes_in is not None else attr_axes
        if ax is None:
            raise run_error(node, "input 'axes' is required")
        norm_axes(node, ax, x.ndim + len(ax))
        return unsqueeze_reference(_contiguous(x), ax)
    return natively(run, ALIAS)


# ----------------------------------------------------------------------------- Identity / Dropout

def identity_reference(x):
    """The input itself (tensors, sequences and optionals alike)."""
    return x


@register("Identity", reference=identity_reference)
def Identity(node):
    def run(ctx, x=None):
        return x
    return natively(run, ALIAS)


def dropout_reference(x: np.ndarray, ratio: float = 0.5, training_mode: bool = False,
                      rng=None):
    """Dropout: identity at inference; in training, zero a ``ratio`` share and rescale.

    Returns ``(output, mask)``; ``mask`` is True where the input was kept.
    """
    if not training_mode or ratio == 0:
        return x, np.ones(x.shape, dtype=bool)
    rng = rng if rng is not None else np.random.default_rng()
    mask = rng.uniform(size=x.shape) >= ratio
    return (x * mask / (1.0 - ratio)).astype(x.dtype), mask


@register("Dropout", reference=dropout_reference)
def Dropout(node, *, ratio=None, seed=None, is_test=None, consumed_inputs=None):
    # Opset < 12: `ratio` attribute and always inference (ONNX Runtime ignores is_test too).
    # Opset >= 12: ratio and training_mode are inputs; `seed` seeds the training mask.
    if ratio is not None:
        if node.opset >= 12:
            raise node.error("'ratio' is an input from opset 12, not an attribute")
        ratio = float(ratio)
    if seed is not None:
        if node.opset < 12:
            raise node.error("attribute 'seed' needs opset 12")
        seed = attr_int(node, "seed", seed)
    # Opsets 7-9 typed the mask like the data; from 10 it is bool.
    mask_dtype = None if node.opset < 10 else np.bool_

    def run(ctx, x, ratio_in=None, training_in=None):
        r = 0.5 if ratio is None else ratio
        if ratio_in is not None:
            r = float(np.asarray(ratio_in).reshape(-1)[0])
        training = bool(np.asarray(training_in).reshape(-1)[0]) if training_in is not None else False
        if training and not 0 <= r < 1:
            raise run_error(node, f"ratio must be in [0, 1), got {r}")
        # A fresh generator per run: with `seed` every run draws the same mask, which keeps
        # run() thread-safe without a shared generator.
        out, mask = dropout_reference(x, r, training, np.random.default_rng(seed))
        if node.num_outputs < 2:
            return out
        return out, mask.astype(mask_dtype or x.dtype)
    # inference (x itself) is a view for a native plan; training makes a new array, and a
    # mask output a second one: those keep the Python loop
    return natively(run, ALIAS)


# ----------------------------------------------------------------------------- Constant(s)

@register("Constant")
def Constant(node, *, value=None, sparse_value=None, value_float=None, value_floats=None,
             value_int=None, value_ints=None, value_string=None, value_strings=None):
    given = {k: v for k, v in (("value", value), ("sparse_value", sparse_value),
                               ("value_float", value_float), ("value_floats", value_floats),
                               ("value_int", value_int), ("value_ints", value_ints),
                               ("value_string", value_string), ("value_strings", value_strings))
             if v is not None}
    if len(given) != 1:
        raise node.error(f"needs exactly one value attribute, got {sorted(given) or 'none'}")
    (name, v), = given.items()
    if name == "sparse_value":
        raise node.error("sparse_value constants are not supported")
    if name == "value":
        array = np.array(attr_tensor(node, name, v))
    elif name in ("value_float", "value_floats"):
        array = np.array(v, dtype=np.float32)
    elif name in ("value_int", "value_ints"):
        array = np.array(v, dtype=np.int64)
    else:
        decoded = attr_str(v) if name == "value_string" else [attr_str(s) for s in v]
        array = np.array(decoded, dtype=object)

    def run(ctx):
        return array.copy()
    return run


def constant_of_shape_reference(shape, value: np.ndarray | None = None) -> np.ndarray:
    """A tensor of ``shape`` filled with the one element of ``value`` (default float32 0)."""
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    return np.full(tuple(shape), value.reshape(-1)[0], dtype=value.dtype)


@register("ConstantOfShape", reference=constant_of_shape_reference)
def ConstantOfShape(node, *, value=None):
    if value is not None:
        value = attr_tensor(node, "value", value)
        if value.size != 1:
            raise node.error(f"'value' must hold one element, got shape {value.shape}")

    def run(ctx, shape):
        dims = int_list(node, shape, "shape")
        if any(d < 0 for d in dims):
            raise run_error(node, f"negative dim in shape {dims}")
        return constant_of_shape_reference(dims, value)
    return run


# ----------------------------------------------------------------------------- Shape / Size

def shape_reference(x: np.ndarray, start: int = 0, end: int | None = None) -> np.ndarray:
    """``x.shape[start:end]`` as int64; Python slicing clamps exactly as ONNX asks."""
    return np.array(x.shape[start:end], dtype=np.int64)


@register("Shape", reference=shape_reference)
def Shape(node, *, start=None, end=None):
    if (start is not None or end is not None) and node.opset < 15:
        raise node.error("attributes start/end need opset 15")
    start = 0 if start is None else attr_int(node, "start", start)
    end = None if end is None else attr_int(node, "end", end)

    def run(ctx, x):
        return shape_reference(x, start, end)
    return natively(run, SHAPE_ONLY)


@register("Size")
def Size(node):
    def run(ctx, x):
        return np.array(x.size, dtype=np.int64)
    return natively(run, SHAPE_ONLY)


# ----------------------------------------------------------------------------- Gather

def gather_reference(x: np.ndarray, indices: np.ndarray, axis: int = 0) -> np.ndarray:
    """``out[i..., j..., k...] = x[i..., indices[j...], k...]``; negative indices count back."""
    axis = axis + x.ndim if axis < 0 else axis
    idx = np.where(indices < 0, indices + x.shape[axis], indices)
    return np.asarray(np.take(x, idx, axis=axis))   # a 0-d array, not a numpy scalar


@register("Gather", reference=gather_reference)
def Gather(node, *, axis=0):
    axis = attr_int(node, "axis", axis)
    if axis < 0 and node.opset < 11:
        raise node.error(f"negative axis {axis} needs opset 11")

    def run(ctx, x, indices):
        ax = norm_axis(node, axis, x.ndim)
        if indices.dtype.kind not in "iu":
            raise run_error(node, f"indices must be integers, got {indices.dtype}")
        d = x.shape[ax]
        if indices.size and (indices.min() < -d or indices.max() >= d):
            raise run_error(node, f"indices out of range [{-d}, {d - 1}]")
        return gather_reference(x, indices, ax)
    return run


# ----------------------------------------------------------------------------- Cast

# ONNX element types without a plain numpy dtype: out of scope for this runtime.
_UNSUPPORTED_CAST = {"BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                     "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "UINT4", "INT4", "FLOAT4E2M1",
                     "UINT2", "INT2", "COMPLEX64", "COMPLEX128", "UNDEFINED"}


def onnx_dtype(node, to) -> np.dtype:
    """numpy dtype of an ONNX TensorProto element type number (node.error when unsupported)."""
    from onnx import TensorProto, helper
    try:
        name = TensorProto.DataType.Name(int(to))
    except (ValueError, TypeError):
        raise node.error(f"unknown element type {to!r}") from None
    if name in _UNSUPPORTED_CAST:
        raise node.error(f"element type {name} is not supported")
    return np.dtype(helper.tensor_dtype_to_np_dtype(int(to)))


def cast_reference(x: np.ndarray, dtype) -> np.ndarray:
    """Convert to ``dtype``: C-style conversion for numbers, decimal text for strings."""
    dtype = np.dtype(dtype)
    if dtype == object:
        # ONNX prints floats in the shortest round-trip form, as numpy's str() does.
        return np.array([str(v) for v in x.reshape(-1)], dtype=object).reshape(x.shape)
    if x.dtype == object or x.dtype.kind in "SU":
        # Text -> number: float() parses "INF", "-inf", "NaN", "1e-3"; ints go through float
        # only when the text is not an integer literal.
        def parse(s):
            s = s.decode() if isinstance(s, bytes) else str(s)
            if dtype.kind == "b":
                return float(s) != 0
            try:
                return int(s) if dtype.kind in "iu" else float(s)
            except ValueError:
                return float(s)
        flat = [parse(v) for v in x.reshape(-1)]
        return np.array(flat, dtype=np.float64 if dtype.kind == "f" else None).astype(dtype).reshape(x.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(dtype)


@register("Cast", reference=cast_reference)
def Cast(node, *, to=None, saturate=1, round_mode="up"):
    # `saturate` (opset 19) and `round_mode` (opset 23+) only change float8/float4 targets,
    # which are rejected below, so they are accepted and have no effect.
    if to is None:
        raise node.error("attribute 'to' is required")
    dtype = onnx_dtype(node, to)

    def run(ctx, x):
        return cast_reference(x, dtype)
    return run


@register("CastLike", min_opset=15)
def CastLike(node, *, saturate=1, round_mode="up"):
    def run(ctx, x, target):
        # float8/bfloat16/int4 arrays (ml_dtypes) are not numpy built-ins (some even claim
        # kind "f"): out of scope as in Cast.
        if target.dtype.isbuiltin != 1 or target.dtype.kind not in "biufO":
            raise run_error(node, f"element type {target.dtype} is not supported")
        return cast_reference(x, target.dtype)
    return run


# ----------------------------------------------------------------------------- Range / Expand / Tile

def range_reference(start, limit, delta) -> np.ndarray:
    """``start + i * delta`` for ``i < max(ceil((limit - start) / delta), 0)``, in start's dtype."""
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    dtype = start.dtype
    if dtype.kind in "iu":
        # Exact integer ceil-division; float64 would lose precision beyond 2**53.
        s, l, d = int(start), int(limit), int(delta)
        n = max(-((s - l) // d), 0)
        return (s + np.arange(n, dtype=np.int64) * d).astype(dtype)
    s, l, d = float(start), float(limit), float(delta)
    n = max(math.ceil((l - s) / d), 0)
    return (s + np.arange(n, dtype=np.float64) * d).astype(dtype)


@register("Range", reference=range_reference)
def Range(node):
    def run(ctx, start, limit, delta):
        if not start.dtype == limit.dtype == delta.dtype:
            raise run_error(node, "start, limit and delta must share one dtype")
        if np.asarray(delta).reshape(-1)[0] == 0:
            raise run_error(node, "delta cannot be 0")
        return range_reference(start, limit, delta)
    return run


def expand_reference(x: np.ndarray, shape) -> np.ndarray:
    """Broadcast ``x`` against ``shape`` (numpy rules, both ways: dims of 1 in ``shape`` keep x's)."""
    out_shape = np.broadcast_shapes(x.shape, tuple(shape))
    return _contiguous(np.broadcast_to(x, out_shape))


@register("Expand", reference=expand_reference)
def Expand(node):
    def run(ctx, x, shape):
        dims = int_list(node, shape, "shape")
        try:
            return expand_reference(x, dims)
        except ValueError:
            raise run_error(node, f"cannot broadcast {x.shape} to {dims}") from None
    return run


def tile_reference(x: np.ndarray, repeats) -> np.ndarray:
    """Repeat ``x`` ``repeats[i]`` times along each axis ``i``."""
    return np.tile(x, repeats)


# Tile-1 took (input, tiles, axis) with a different meaning; exporters write opset 6+.
@register("Tile", reference=tile_reference, min_opset=6)
def Tile(node):
    def run(ctx, x, repeats):
        reps = int_list(node, repeats, "repeats")
        if len(reps) != x.ndim or any(r < 0 for r in reps):
            raise run_error(node, f"repeats {reps} must be {x.ndim} non-negative ints")
        return tile_reference(x, reps)
    return run
