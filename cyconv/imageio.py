"""Minimal PNG reading and writing (zlib + numpy), so the demo needs no imaging library.

Supports what the bundled images and our outputs use: 8-bit grayscale, gray+alpha, RGB and
RGBA, non-interlaced. Anything else raises ValueError saying so.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}   # PNG colour type -> samples per pixel


def read_png(path) -> np.ndarray:
    """Decode a PNG file into a uint8 array of shape (H, W) or (H, W, C)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != _SIGNATURE:
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ValueError(f"{path}: only 8-bit non-interlaced gray/RGB(A) PNGs are supported")
    channels = _CHANNELS[colour]
    stride = width * channels
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    rows = raw.reshape(height, stride + 1)
    image = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        line = _unfilter(rows[y, 0], rows[y, 1:].astype(np.int32), previous, channels)
        image[y] = line
        previous = line
    return image.reshape(height, width, channels) if channels > 1 else image


def _unfilter(kind, line, previous, bpp):
    """Undo one scanline's PNG filter (spec section 9); values are int32 in 0..255."""
    if kind == 0:
        return line
    if kind == 2:
        return (line + previous) & 255
    out = line.copy()
    if kind == 1:      # Sub: each byte adds the byte bpp to its left (a running sum per lane)
        for lane in range(bpp):
            out[lane::bpp] = np.cumsum(line[lane::bpp]) & 255
        return out
    for i in range(len(out)):   # Average and Paeth depend on the decoded left neighbour
        left = out[i - bpp] if i >= bpp else 0
        up = previous[i]
        if kind == 3:
            out[i] = (line[i] + ((left + up) >> 1)) & 255
        elif kind == 4:
            up_left = previous[i - bpp] if i >= bpp else 0
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
            out[i] = (line[i] + pred) & 255
        else:
            raise ValueError(f"bad PNG filter type {kind}")
    return out


def write_png(path, image: np.ndarray) -> None:
    """Encode a uint8 (H, W) or (H, W, 3|4) array as PNG (filter 0, zlib level 6)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(_SIGNATURE + chunk(b"IHDR", header) +
                chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))
