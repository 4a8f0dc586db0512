"""Reading model files safely: bytes -> ModelProto, and tensors -> numpy arrays.

The checks follow ONNX's own CVEs on external data (path traversal with ``..`` or absolute
paths, symlinks, offsets past the end of a file) and size bombs (dims that overflow, raw data
shorter than the dims claim, huge allocations): each raises a ModelError before any memory is
allocated for the tensor.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from ..errors import ModelError

# Largest total of constant tensors a model may ask us to allocate (bytes).
MAX_CONSTANT_BYTES = int(os.environ.get("CYCONV_MAX_CONSTANT_BYTES", 16 << 30))

_UNSUPPORTED_TENSOR_TYPES = {
    TensorProto.UNDEFINED, TensorProto.COMPLEX64, TensorProto.COMPLEX128,
}


def load_model(model) -> tuple:
    """``model`` (path | bytes | ModelProto) -> (ModelProto, folder for external data or None)."""
    if isinstance(model, onnx.ModelProto):
        return model, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        return parse_model_bytes(bytes(model)), None
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ModelError(f"cannot read model file {path!r}: {exc.strerror or exc}") from None
        return parse_model_bytes(data, path), os.path.dirname(os.path.realpath(path))
    raise ModelError(f"model must be a file path, bytes or onnx.ModelProto, "
                     f"got {type(model).__name__}")


def parse_model_bytes(data: bytes, where: str = "<bytes>") -> onnx.ModelProto:
    if not data:
        raise ModelError(f"model {where} is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(f"model {where} is not a valid ONNX protobuf "
                         f"(truncated or corrupt): {exc}") from None
    if not proto.HasField("graph") or not proto.graph.node and not proto.graph.output:
        raise ModelError(f"model {where} has no graph (is it an ONNX model file?)")
    return proto


def numpy_dtype(elem_type: int, what: str) -> np.dtype:
    if elem_type in _UNSUPPORTED_TENSOR_TYPES:
        raise ModelError(f"{what}: tensor element type "
                         f"{TensorProto.DataType.Name(elem_type)} is not supported")
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        raise ModelError(f"{what}: unknown tensor element type {elem_type}") from None


class ConstantBudget:
    """Counts the bytes of constants so a model cannot make us allocate without bound."""

    def __init__(self, limit: int = MAX_CONSTANT_BYTES):
        self.limit, self.used = limit, 0

    def take(self, nbytes: int, what: str):
        self.used += nbytes
        if self.used > self.limit:
            raise ModelError(f"{what}: constants exceed {self.limit} bytes in total "
                             f"(set CYCONV_MAX_CONSTANT_BYTES to allow more)")


def tensor_to_array(tensor: TensorProto, base_dir, budget: ConstantBudget) -> np.ndarray:
    """Validate and convert one TensorProto (initializer or Constant value); read-only result."""
    what = f"tensor {tensor.name!r}" if tensor.name else "constant tensor"
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise ModelError(f"{what}: negative dimension in shape {dims}")
    count = 1
    for d in dims:  # Python ints: no overflow; the budget bounds the product
        count *= d
    dtype = numpy_dtype(tensor.data_type, what)
    if tensor.data_type == TensorProto.STRING:
        nbytes = sum(len(s) for s in tensor.string_data)
    else:
        nbytes = count * dtype.itemsize
    budget.take(nbytes, what)

    if tensor.data_location == TensorProto.EXTERNAL:
        array = _read_external(tensor, base_dir, dtype, count, what)
    else:
        packed = tensor.data_type == TensorProto.STRING or _packed_bits(tensor.data_type)
        if tensor.HasField("raw_data") and not packed and len(tensor.raw_data) != nbytes:
            raise ModelError(f"{what}: raw_data holds {len(tensor.raw_data)} bytes but "
                             f"shape {dims} of {dtype} needs {nbytes}")
        # Typed fields (float_data, ...) are checked by the size test after decoding.
        try:
            array = onnx.numpy_helper.to_array(tensor)
        except Exception as exc:  # onnx raises assorted types on corrupt tensors
            raise ModelError(f"{what}: cannot decode: {exc}") from None
    array = np.asarray(array)
    if array.size != count:
        raise ModelError(f"{what}: has {array.size} values but shape {dims} needs {count}")
    array = array.reshape(dims)
    array.flags.writeable = False
    return array


def _packed_bits(elem_type):
    # 4/2-bit types pack several values per byte; onnx's converter checks them itself.
    return {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.FLOAT4E2M1: 4,
            getattr(TensorProto, "INT2", -1): 2, getattr(TensorProto, "UINT2", -1): 2
            }.get(elem_type)


def _read_external(tensor: TensorProto, base_dir, dtype, count: int, what: str) -> np.ndarray:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if base_dir is None:
        raise ModelError(f"{what}: stored in external file {location!r}, but the model was "
                         f"given as bytes/ModelProto; pass the model's file path instead")
    if not location or os.path.isabs(location) or "\\" in location or \
            any(part == ".." for part in location.split("/")):
        raise ModelError(f"{what}: external data location {location!r} must be a relative "
                         f"path inside the model's folder")
    path = os.path.join(base_dir, location)
    # No symlink anywhere along the relative path, and the canonical path stays inside.
    probe = base_dir
    for part in location.split("/"):
        probe = os.path.join(probe, part)
        if os.path.islink(probe):
            raise ModelError(f"{what}: external data path {location!r} goes through a "
                             f"symbolic link, which is not allowed")
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(base_dir)]) != os.path.realpath(base_dir):
        raise ModelError(f"{what}: external data {location!r} resolves outside the model's folder")
    if not os.path.isfile(real):
        raise ModelError(f"{what}: external data file {location!r} not found next to the model")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelError(f"{what}: external data offset/length are not integers") from None
    size = os.path.getsize(real)
    nbytes = count * dtype.itemsize
    if length is None:
        length = size - offset
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(f"{what}: external data range offset={offset} length={length} "
                         f"lies outside {location!r} ({size} bytes)")
    if length != nbytes:
        raise ModelError(f"{what}: external data has {length} bytes but shape "
                         f"{list(tensor.dims)} of {dtype} needs {nbytes}")
    with open(real, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
