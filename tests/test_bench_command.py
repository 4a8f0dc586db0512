"""``cyconv bench``: runs on a tiny model, compares with ONNX Runtime, prints the documented
JSON schema, reports missing peers instead of failing. No timing asserts: speed is measured by
benchmarks/, not by tests."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cyconv import cli
from cyconv.commands import bench, bench_peers

pytest.importorskip("onnxruntime")

ROW_KEYS = {"runtime", "name", "available", "reason", "version", "median_ms", "p90_ms",
            "min_ms", "runs", "gflops", "pct_peak", "max_abs_diff", "ratio"}
TOP_KEYS = {"model", "batch", "threads", "inputs", "gflop", "peak_gflops", "peak_source",
            "warmup", "repeat", "block", "machine", "results"}


@pytest.fixture
def tiny_model(tmp_path):
    """Conv 3->4 (3x3, pad 1) + Relu + MaxPool 2x2 + GlobalAveragePool, dynamic batch."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return str(path)


def run_cli(capsys, *argv):
    code = cli.main(["bench", *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_json_schema_with_ort(capsys, tiny_model):
    out = run_cli(capsys, tiny_model, "--batch", "2", "--threads", "1", "--compare", "ort",
                  "--warmup", "1", "--repeat", "3", "--peak", "100", "--json")
    record = json.loads(out)
    assert set(record) == TOP_KEYS
    assert record["batch"] == 2 and record["threads"] == 1
    assert record["inputs"] == {"x": [2, 3, 8, 8]}
    # 2 x multiply-adds of the conv: 2 images x 4 x 8 x 8 outputs x 27 taps
    assert record["gflop"] == pytest.approx(2 * 2 * 4 * 8 * 8 * 27 / 1e9)
    assert record["peak_gflops"] == 100 and record["peak_source"] == "given (--peak)"
    assert {"cpu", "logical_cpus", "pool_isa", "gemm_isa"} <= set(record["machine"])
    rows = {r["runtime"]: r for r in record["results"]}
    assert list(rows) == ["cyconv", "ort"]
    for row in rows.values():
        assert set(row) == ROW_KEYS
        # 3 rounds x a block of 4 calls, the first untimed
        assert row["available"] and row["reason"] is None and row["runs"] == 3 * 3
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["gflops"] > 0 and row["pct_peak"] == pytest.approx(row["gflops"])
    assert rows["cyconv"]["max_abs_diff"] is None and rows["cyconv"]["ratio"] == 1.0
    assert rows["ort"]["max_abs_diff"] <= 1e-4          # the accuracy contract, loosely
    assert rows["ort"]["ratio"] > 0


def test_table_and_missing_peer(capsys, monkeypatch, tiny_model):
    def unavailable(model_bytes, feed, threads):
        raise bench_peers.PeerUnavailable("openvino not installed (pip install openvino)")
    monkeypatch.setitem(bench_peers.LOADERS, "openvino", unavailable)
    out = run_cli(capsys, tiny_model, "--compare", "ort,openvino", "--warmup", "1",
                  "--repeat", "2", "--peak", "50")
    assert "median ms" in out and "ONNX Runtime" in out
    assert "OpenVINO        not available: openvino not installed" in out


def test_missing_peer_in_json(capsys, monkeypatch, tiny_model):
    def unavailable(model_bytes, feed, threads):
        raise bench_peers.PeerUnavailable("torch not installed")
    monkeypatch.setitem(bench_peers.LOADERS, "torch", unavailable)
    record = json.loads(run_cli(capsys, tiny_model, "--compare", "torch", "--repeat", "1",
                                "--warmup", "1", "--peak", "10", "--json"))
    torch_row = record["results"][1]
    assert torch_row["runtime"] == "torch" and not torch_row["available"]
    assert torch_row["reason"] == "torch not installed" and torch_row["median_ms"] is None


def test_zoo_name_and_measured_peak(capsys):
    record = json.loads(run_cli(capsys, "lenet5", "--compare", "", "--repeat", "1",
                                "--warmup", "1", "--json"))
    assert record["model"] == "lenet5" and record["inputs"] == {"input": [1, 1, 32, 32]}
    assert record["peak_gflops"] > 0
    assert record["peak_source"].startswith(("measured", "nominal"))


def test_errors(capsys, tiny_model):
    assert cli.main(["bench", "no_such_model"]) == 2
    assert "neither a file nor a zoo model" in capsys.readouterr().err
    assert cli.main(["bench", tiny_model, "--compare", "tensorflow", "--peak", "1"]) == 2
    assert "unknown peer" in capsys.readouterr().err


def test_fixed_batch_mismatch_is_reported():
    model = bench.load_model("lenet5", 1)[0]
    with pytest.raises(ValueError, match="fixed batch of 1"):
        bench.make_feed(model, 3)
