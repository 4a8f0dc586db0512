"""Fixtures of the converter tests: sessions on both engines and the accuracy contract."""
import numpy as np
import onnxruntime as ort
import pytest

import cyconv


class Engines:
    """cyconv and ONNX Runtime sessions of a ModelProto, and the project's accuracy contract."""

    @staticmethod
    def cy(model, threads=2):
        return cyconv.InferenceSession(model, threads=threads)   # ModelProto: no copy

    @staticmethod
    def ort(model):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])

    @staticmethod
    def check(got, want, what):
        """max |diff| <= 1e-3 * max(1, max |reference|), same shapes, output by output."""
        assert len(got) == len(want), what
        for g, w in zip(got, want):
            assert g.shape == w.shape, f"{what}: shape {g.shape} vs {w.shape}"
            scale = max(1.0, float(np.max(np.abs(w))))
            diff = float(np.max(np.abs(g - w)))
            assert diff <= 1e-3 * scale, f"{what}: max|diff| {diff} > 1e-3 * {scale}"


@pytest.fixture(scope="session")
def engines():
    return Engines()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
