"""A kernel that rejects its inputs at run time (shapes only the feed decides) surfaces as an
InputError naming the node and its input shapes, from the plain run loop as from the
profiler's, and the session stays usable."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import cyconv
from cyconv.engine.profiler import profile
from cyconv.errors import InputError


def add_model():
    # z has no declared shape, so only the feed tells whether it broadcasts against x
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Add", ["r", "z"], ["y"], name="the_add")]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_run_time_kernel_error_names_the_node():
    sess = cyconv.InferenceSession(add_model(), threads=1)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    z = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x, "z": z})[0], np.maximum(x, 0) + z)
    bad = {"x": x, "z": np.ones(4, np.float32)}
    with pytest.raises(InputError, match=r"Add node 'the_add' failed on inputs of shapes "
                                         r"\[\(2, 3\), \(4,\)\]"):
        sess.run(None, bad)
    with pytest.raises(InputError, match=r"Add node 'the_add' failed"):
        profile(sess, bad, repeats=1, warmup=0)
    np.testing.assert_array_equal(sess.run(None, {"x": x, "z": z})[0], np.maximum(x, 0) + z)
