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


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "cyconv", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
