"""Malformed, truncated and unsafe model files raise ModelError, never crash or read outside."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import cyconv
from cyconv.engine.session import InferenceSession

DATA = os.path.join(os.path.dirname(cyconv.__file__), "data")


def add_model(initializer: TensorProto):
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", initializer.name], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [initializer])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def external_tensor(location, offset=0, length=16):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def save(model, folder):
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


@pytest.mark.parametrize("data", [b"", b"not an onnx model at all \x00\xff" * 3, b"\x08" * 7])
def test_garbage_bytes(data):
    with pytest.raises(cyconv.ModelError):
        InferenceSession(data)


def test_missing_file():
    with pytest.raises(cyconv.ModelError, match="cannot read model file"):
        InferenceSession("/nonexistent/model.onnx")


def test_every_truncation_of_a_real_model_is_rejected():
    with open(os.path.join(DATA, "mtcnn_pnet.onnx"), "rb") as f:
        data = f.read()
    for cut in list(range(0, len(data), max(1, len(data) // 97))) + [len(data) - 1]:
        with pytest.raises(cyconv.ModelError):
            InferenceSession(data[:cut])


def test_external_data_inside_folder_works(tmp_path):
    values = np.array([1, 2, 3, 4], np.float32)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8 + values.tobytes())
    path = save(add_model(external_tensor("weights.bin", offset=8)), str(tmp_path))
    (y,) = InferenceSession(path).run(None, {"x": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(y, values)


@pytest.mark.parametrize("location, message", [
    ("../secret.bin", "inside the model's folder"),
    ("a/../../secret.bin", "inside the model's folder"),
    ("/etc/passwd", "inside the model's folder"),
    ("missing.bin", "not found"),
])
def test_external_data_path_attacks(tmp_path, location, message):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\1" * 16)
    path = save(add_model(external_tensor(location)), str(folder))
    with pytest.raises(cyconv.ModelError, match=message):
        InferenceSession(path)


def test_external_data_symlink_rejected(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\1" * 16)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(tmp_path / "secret.bin", folder / "w.bin")
    path = save(add_model(external_tensor("w.bin")), str(folder))
    with pytest.raises(cyconv.ModelError, match="symbolic link"):
        InferenceSession(path)


@pytest.mark.parametrize("offset, length, message", [
    (8, 16, "lies outside"), (-4, 16, "lies outside"), (0, 8, "needs 16"),
])
def test_external_data_range_checked(tmp_path, offset, length, message):
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    path = save(add_model(external_tensor("w.bin", offset, length)), str(tmp_path))
    with pytest.raises(cyconv.ModelError, match=message):
        InferenceSession(path)


def test_external_data_needs_a_path(tmp_path):
    with pytest.raises(cyconv.ModelError, match="pass the model's file path"):
        InferenceSession(add_model(external_tensor("w.bin")).SerializeToString())


def test_negative_dims_rejected():
    t = helper.make_tensor("w", TensorProto.FLOAT, [4], [1, 2, 3, 4])
    t.dims[0] = -4
    with pytest.raises(cyconv.ModelError, match="negative dimension"):
        InferenceSession(add_model(t).SerializeToString())


def test_raw_data_size_mismatch_rejected():
    t = helper.make_tensor("w", TensorProto.FLOAT, [4], np.ones(4, np.float32).tobytes(), raw=True)
    t.raw_data = t.raw_data[:12]
    with pytest.raises(cyconv.ModelError, match="raw_data holds 12 bytes"):
        InferenceSession(add_model(t).SerializeToString())


def test_typed_data_size_mismatch_rejected():
    t = helper.make_tensor("w", TensorProto.FLOAT, [4], [1, 2, 3, 4])
    del t.float_data[-1]
    with pytest.raises(cyconv.ModelError):
        InferenceSession(add_model(t).SerializeToString())


def test_allocation_bomb_rejected_before_allocating():
    t = helper.make_tensor("w", TensorProto.FLOAT, [4], [1, 2, 3, 4])
    t.dims[:] = [2 ** 40, 2 ** 40]   # 4 * 2^80 bytes: must be refused, not attempted
    with pytest.raises(cyconv.ModelError, match="exceed"):
        InferenceSession(add_model(t).SerializeToString())


def _graph_model(nodes, inputs=("x",), outputs=("y",)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_undefined_value_rejected():
    model = _graph_model([helper.make_node("Add", ["x", "ghost"], ["y"])])
    with pytest.raises(cyconv.ModelError, match="ghost"):
        InferenceSession(model)


def test_cycle_rejected():
    model = _graph_model([helper.make_node("Relu", ["b"], ["a"]),
                          helper.make_node("Relu", ["a"], ["b"]),
                          helper.make_node("Relu", ["x"], ["y"])])
    with pytest.raises(cyconv.ModelError, match="cycle"):
        InferenceSession(model)


def test_output_never_produced_rejected():
    model = _graph_model([helper.make_node("Relu", ["x"], ["z"])])
    with pytest.raises(cyconv.ModelError, match="never produced"):
        InferenceSession(model)


def test_duplicate_producer_rejected():
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"]),
                          helper.make_node("Relu", ["x"], ["y"])])
    with pytest.raises(cyconv.ModelError, match="more than once"):
        InferenceSession(model)


def test_no_opset_rejected():
    model = _graph_model([helper.make_node("Relu", ["x"], ["y"])])
    del model.opset_import[:]
    with pytest.raises(cyconv.ModelError, match="opset"):
        InferenceSession(model)
