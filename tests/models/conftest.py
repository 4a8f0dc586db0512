"""Fixtures of the model tests: the bundled photo, ONNX Runtime as the oracle, the contract.

The PNG decoder here is deliberately independent of ``cyconv.imageio``: the tests of real
models must not share a bug with the code they check.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

DATA = Path(__file__).resolve().parents[2] / "cyconv" / "data"


def decode_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit non-interlaced gray/RGB/RGBA PNG into uint8 (H, W, C)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    assert depth == 8 and interlace == 0, "only 8-bit non-interlaced PNGs"
    raw = zlib.decompress(idat)
    bpp, stride = channels, width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        # Filters (PNG spec 9.2): reconstruct from left (a), up (b), up-left (c) bytes.
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif ftype == 2:
            line = bytearray((u + v) & 255 for u, v in zip(line, prev))
        elif ftype == 3:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((a + prev[i]) >> 1)) & 255
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        else:
            assert ftype == 0, f"bad PNG filter {ftype}"
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return np.frombuffer(bytes(out), np.uint8).reshape(height, width, channels)


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) -> float32 (height, width, C), half-pixel centres (cv2.INTER_LINEAR's rule)."""
    img = img.astype(np.float32)

    def coords(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = coords(height, img.shape[0])
    x0, x1, fx = coords(width, img.shape[1])
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """The bundled 512x512 RGB photo, uint8 (512, 512, 3)."""
    img = decode_png((DATA / "astronaut.png").read_bytes())
    assert img.shape == (512, 512, 3)
    return img


@pytest.fixture(scope="session")
def text_photo() -> np.ndarray:
    """tests/data/text.png: a grey photo of handwritten text, uint8 (172, 448, 1)."""
    img = decode_png((Path(__file__).resolve().parents[1] / "data" / "text.png").read_bytes())
    assert img.shape[2] == 1
    return img


def ort_session(model, threads=2):
    """ONNX Runtime session of ``model`` (ModelProto, bytes or path) on ``threads`` threads."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def assert_contract(got, want, what=""):
    """The accuracy contract: max |cyconv - ort| <= 1e-3 * max(1, max |ort|), per output."""
    assert len(got) == len(want), f"{what}: {len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what} output {i}: shape {g.shape} != {w.shape}"
        assert np.all(np.isfinite(g)), f"{what} output {i}: non-finite values"
        err = float(np.max(np.abs(g.astype(np.float64) - w)))
        tol = 1e-3 * max(1.0, float(np.max(np.abs(w))))
        assert err <= tol, f"{what} output {i}: max |diff| {err:.3g} > {tol:.3g}"


def with_all_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of ``model`` whose graph outputs are every node output (to locate divergence)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    seen = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for name in node.output:
            if name and name not in seen:
                m.graph.output.append(helper.make_empty_tensor_value_info(name))
                seen.add(name)
    return m


# Fixtures handing the helpers to test modules (tests/ is not a package, so they are not
# importable by name; session scope lets module-scoped fixtures use them).
@pytest.fixture(scope="session")
def contract():
    """:func:`assert_contract`."""
    return assert_contract


@pytest.fixture(scope="session")
def make_ort():
    """:func:`ort_session`."""
    return ort_session


@pytest.fixture(scope="session")
def resize():
    """:func:`resize_bilinear`."""
    return resize_bilinear


@pytest.fixture(scope="session")
def all_outputs():
    """:func:`with_all_outputs`."""
    return with_all_outputs


def first_divergence(model: onnx.ModelProto, feed: dict, make_cyconv, threads=1):
    """Run every intermediate tensor through ORT and cyconv; describe the first node (in graph
    order) whose output breaks the contract, or return None.

    ``make_cyconv(model_bytes, threads)`` builds the cyconv session. Asking for every tensor as
    an output also keeps cyconv from fusing across them, so a layer is checked on its own.
    """
    probe = with_all_outputs(model)
    blob = probe.SerializeToString()
    names = [o.name for o in probe.graph.output]
    want = dict(zip(names, ort_session(blob).run(None, feed)))
    got = dict(zip(names, make_cyconv(blob, threads).run(None, feed)))
    for node in probe.graph.node:
        for out in node.output:
            if out not in want:
                continue
            w, g = want[out], np.asarray(got[out])
            tol = 1e-3 * max(1.0, float(np.max(np.abs(w)))) if w.size else 0.0
            bad = g.shape != w.shape or (w.size and float(np.max(np.abs(g - w))) > tol)
            if bad:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                err = (float(np.max(np.abs(g - w))) if g.shape == w.shape else float("inf"))
                return (f"first diverging node {node.name!r} {node.op_type} {attrs}: output "
                        f"{out!r} shape {g.shape} (ort {w.shape}), max |diff| {err:.3g}, "
                        f"tol {tol:.3g}")
    return None


@pytest.fixture(scope="session")
def divergence():
    """:func:`first_divergence`."""
    return first_divergence
