"""benchmarks/placement_states.py: how blocks are sorted into the host's two vCPU placements,
and a short run end to end. No timing asserts: the numbers are the benchmark's to print."""
import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "placement_states.py")


@pytest.fixture(scope="module")
def states():
    spec = importlib.util.spec_from_file_location("placement_states", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_placements_are_split_at_1_3x_the_fast_probes(states):
    probes = np.array([62, 65, 70, 330, 61, 318, 64, 340, 66, 325], float)
    cut = states.split_states(probes)
    assert cut is not None
    assert ((probes >= cut) == (probes > 200)).all()


def test_one_placement_or_too_few_of_the_other_is_not_split(states):
    assert states.split_states(np.full(20, 65.0) + np.arange(20) % 3) is None
    assert states.split_states(np.r_[np.full(30, 65.0), 330.0]) is None   # 1 far block of 31


def test_short_run_prints_a_row_per_state(states, capsys):
    assert states.main(["--models", "lenet5", "--rounds", "2", "--compare", "ort",
                        "--block", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("lenet5")]
    assert rows and rows[0][1] == "all"
    ratio = float(rows[0][-1])
    assert ratio > 0
