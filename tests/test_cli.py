"""``cyconv run`` on the bundled models; errors come out as messages, not tracebacks."""
import os
import subprocess
import sys

import numpy as np

from cyconv.cli import main
from cyconv.mtcnn import DATA_DIR

PNET = os.path.join(DATA_DIR, "mtcnn_pnet.onnx")


def test_run_with_shape(capsys):
    assert main(["run", PNET, "--shape", "1x3x24x30", "--threads", "1", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "output prob: [1, 2, 7, 10] float32" in out
    assert "median of 2 runs" in out


def test_run_with_input_file(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", PNET, "--input", f"input={tmp_path / 'x.npy'}", "--repeat", "0"]) == 0
    assert "output bbox: [2, 4, 1, 1]" in capsys.readouterr().out


def test_dynamic_shape_needs_shape_argument(capsys):
    assert main(["run", PNET]) == 2
    assert "pass --shape input=1x..." in capsys.readouterr().err


def test_bad_model_is_an_error_message(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert main(["run", str(bad)]) == 2
    assert "not a valid ONNX protobuf" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    # The cyconv this test imported (installed or built in place), not whatever the cwd holds.
    import cyconv
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cyconv.__file__)))
    result = subprocess.run([sys.executable, "-m", "cyconv", "--help"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0 and "demo" in result.stdout


def test_profile_prints_table_fusions_memory_and_trace(tmp_path, capsys):
    import json
    trace = tmp_path / "trace.json"
    assert main(["profile", PNET, "--shape", "1x3x40x50", "--repeat", "3", "--threads", "1",
                 "--json", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "peak activation memory" in out and "fusions applied" in out
    assert "Conv" in out
    events = json.loads(trace.read_text())["traceEvents"]
    assert events and all(e["ph"] == "X" and e["dur"] >= 0 and "op_name" in e["args"]
                          for e in events)


def test_profile_peak_memory_counts_live_activations(monkeypatch):
    from cyconv.engine.profiler import profile
    from cyconv.engine.session import InferenceSession
    from onnx import TensorProto, helper
    # x -> a -> b -> y, 4 KB each: a value dies after its reader, so two are alive at most
    # in the Python loop (a native plan reports its arena instead).
    monkeypatch.setenv("CYCONV_NATIVE", "0")
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024])])
    sess = InferenceSession(helper.make_model(graph), optimize=False)
    result = profile(sess, {"x": np.ones(1024, np.float32)}, repeats=2)
    assert result.peak_activation_bytes == 2 * 4096
    assert [n.op_type for n in result.nodes] == ["Relu", "Neg", "Relu"]
    assert all(len(n.times_ms) == 2 for n in result.nodes)


def test_profile_needs_a_timed_run():
    import pytest
    from cyconv.engine.profiler import profile
    from cyconv.engine.session import InferenceSession
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    sess = InferenceSession(helper.make_model(graph))
    for repeats, warmup in ((0, 0), (0, 1), (2, -1)):
        with pytest.raises(ValueError, match="repeats must be >= 1"):
            profile(sess, {"x": np.ones(4, np.float32)}, repeats=repeats, warmup=warmup)
    assert len(profile(sess, {"x": np.ones(4, np.float32)}, repeats=1, warmup=0).nodes) == 1
