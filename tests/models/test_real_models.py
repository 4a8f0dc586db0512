"""The pretrained models the package ships (cyconv/data), through cyconv against ONNX Runtime.

Inputs are the bundled photo (MTCNN preprocessing: RGB, ``(pixel - 127.5) * 0.0078125``, NCHW)
and seeded random data. Sessions are created from the model *path*, one per thread count, and
reused across input shapes (PNet is fully convolutional with dynamic batch, H and W).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cyconv

DATA = Path(cyconv.__file__).resolve().parent / "data"
MODELS = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "ppocr_mobile_v2_cls")
THREADS = (1, 2)

# Face of the astronaut (rows, cols) and two background crops, 120x120 pixels each.
FACE = (slice(30, 150), slice(160, 280))
BACKGROUNDS = ((slice(0, 120), slice(0, 120)), (slice(300, 420), slice(0, 120)))


def _mtcnn_input(pixels):
    """(B, H, W, 3) RGB in 0..255 -> float32 (B, 3, H, W), MTCNN-normalised."""
    x = (np.asarray(pixels, np.float32) - 127.5) * 0.0078125
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class Pair:
    """ONNX Runtime and cyconv (per thread count) sessions of one bundled model."""

    def __init__(self, name, make_ort):
        path = DATA / f"{name}.onnx"
        self.name = name
        self.ort = make_ort(path)
        self.cy = {t: cyconv.InferenceSession(str(path), threads=t) for t in THREADS}

    def compare(self, feed, contract, label):
        """Run both, assert the contract for each thread count, return ORT's outputs."""
        want = self.ort.run(None, feed)
        for t, sess in self.cy.items():
            contract(sess.run(None, feed), want, f"{self.name} {label} threads {t}")
        return want


@pytest.fixture(scope="module")
def pnet(make_ort):
    return Pair("mtcnn_pnet", make_ort)


@pytest.fixture(scope="module")
def rnet(make_ort):
    return Pair("mtcnn_rnet", make_ort)


@pytest.fixture(scope="module")
def onet(make_ort):
    return Pair("mtcnn_onet", make_ort)


@pytest.fixture(scope="module")
def ppocr(make_ort):
    return Pair("ppocr_mobile_v2_cls", make_ort)


def test_package_ships_models_and_photo():
    for name in MODELS:
        assert (DATA / f"{name}.onnx").is_file(), f"cyconv/data/{name}.onnx missing"
    assert (DATA / "astronaut.png").is_file()


# 12x12 is PNet's receptive field (one output pixel); 97x131 has odd sides, so its ceil-mode
# 2x2 pool has ragged last windows.
PNET_SHAPES = [(1, 12, 12), (3, 12, 12), (1, 120, 160), (3, 120, 160), (1, 97, 131),
               (3, 97, 131)]


@pytest.mark.parametrize("batch,height,width", PNET_SHAPES)
def test_pnet_random(pnet, contract, batch, height, width):
    rng = np.random.default_rng(height * width + batch)
    x = rng.uniform(-1, 1, (batch, 3, height, width)).astype(np.float32)
    prob, bbox = pnet.compare({"input": x}, contract, f"random {batch}x{height}x{width}")
    # conv3 -> pool2 (ceil) -> conv3 -> conv3: one output pixel per 2 input pixels.
    out_hw = (-(-(height - 2) // 2) - 4, -(-(width - 2) // 2) - 4)
    assert prob.shape == (batch, 2, *out_hw) and bbox.shape == (batch, 4, *out_hw)


@pytest.mark.parametrize("height,width", [(12, 12), (120, 160), (97, 131)])
def test_pnet_photo(pnet, contract, astronaut, resize, height, width):
    # The whole photo at one pyramid scale, the face alone and the top half, as a batch of 3
    # (a batch shares H x W), then batch 1.
    x = _mtcnn_input(np.stack([resize(astronaut, height, width),
                               resize(astronaut[FACE], height, width),
                               resize(astronaut[:256], height, width)]))
    pnet.compare({"input": x}, contract, f"photo 3x{height}x{width}")
    pnet.compare({"input": x[:1]}, contract, f"photo 1x{height}x{width}")


@pytest.mark.parametrize("batch", (1, 4))
def test_rnet(rnet, contract, astronaut, resize, batch):
    crops = [FACE, *BACKGROUNDS, (slice(100, 400), slice(100, 400))][:batch]
    x = _mtcnn_input(np.stack([resize(astronaut[c], 24, 24) for c in crops]))
    prob, bbox = rnet.compare({"input": x}, contract, f"photo batch {batch}")
    assert prob.shape == (batch, 2) and bbox.shape == (batch, 4)
    r = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 24, 24)).astype(np.float32)
    rnet.compare({"input": r}, contract, f"random batch {batch}")


@pytest.mark.parametrize("batch", (1, 3))
def test_onet_random(onet, contract, batch):
    x = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 48, 48)).astype(np.float32)
    outs = onet.compare({"input": x}, contract, f"random batch {batch}")
    assert [o.shape for o in outs] == [(batch, 2), (batch, 4), (batch, 10)]


def test_onet_finds_the_face(onet, contract, astronaut, resize):
    """ONet scores the face crop ~0.99 and background crops < 0.2, through cyconv."""
    x = _mtcnn_input(np.stack([resize(astronaut[c], 48, 48) for c in (FACE, *BACKGROUNDS)]))
    onet.compare({"input": x}, contract, "face and background crops")
    for t, sess in onet.cy.items():
        prob = sess.run(None, {"input": x})[0]
        assert prob[0, 1] > 0.9, f"threads {t}: face probability {prob[0, 1]:.3f}"
        assert np.all(prob[1:, 1] < 0.2), f"threads {t}: background {prob[1:, 1]}"
        assert np.allclose(prob.sum(axis=1), 1, atol=1e-5), "softmax rows sum to 1"


def _ppocr_input(gray_crops, resize):
    """PaddleOCR cls preprocessing: resize to 48x192, (x / 255 - 0.5) / 0.5, grey -> RGB."""
    x = np.stack([resize(c, 48, 192) for c in gray_crops]) / 255.0
    x = np.repeat((x - 0.5) / 0.5, 3, axis=-1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)


@pytest.mark.parametrize("batch", (1, 3))
def test_ppocr_cls(ppocr, contract, text_photo, resize, batch):
    """Text-direction classifier, N x 3 x 48 x 192: text lines (upright, turned 180) and noise."""
    line = text_photo[40:90, 0:448]
    crops = [line, line[::-1, ::-1], text_photo[100:150, 50:350]][:batch]
    (prob,) = ppocr.compare({"x": _ppocr_input(crops, resize)}, contract, f"text batch {batch}")
    assert prob.shape == (batch, 2)
    assert np.allclose(prob.sum(axis=1), 1, atol=1e-5)
    r = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 48, 192)).astype(np.float32)
    ppocr.compare({"x": r}, contract, f"random batch {batch}")


def test_thread_counts_agree(pnet, onet, ppocr, astronaut, resize):
    """1 and 2 threads give the same numbers up to float rounding."""
    x = _mtcnn_input(resize(astronaut, 120, 160)[None])
    r = np.random.default_rng(5).uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)
    for pair, feed in ((pnet, {"input": x}), (onet, {"input": x[:, :, :48, :48].copy()}),
                       (ppocr, {"x": r})):
        one = pair.cy[1].run(None, feed)
        two = pair.cy[2].run(None, feed)
        for a, b in zip(one, two):
            assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, float(np.max(np.abs(a)))), pair.name
