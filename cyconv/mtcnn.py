"""MTCNN face detection (Zhang et al. 2016) as a dense sliding-window cascade: the demo job.

The three nets of facenet-pytorch (bundled) look at 12x12, 24x24 and 48x48 crops. PNet is
fully convolutional already; RNet and ONet end in FC layers, which ``fc_to_conv`` rewrites as
convolutions so that they slide too. Their total strides (2, 4, 8) are in the same ratio as
their windows (12, 24, 48), so at pyramid scale s the three nets evaluated on the image
resized by s, 2s and 4s put cell (i, j) on the *same* window of the photo:

    PNet  on image @ s :  window [2j, 2j+12)  (stride 2)
    RNet  on image @ 2s:  window [4j, 4j+24)  = the same pixels, seen at 24x24
    ONet  on image @ 4s:  window [8j, 8j+48)  = the same pixels, seen at 48x48

The cascade is then one grid of windows per scale: a window is a face when PNet, RNet and ONet
all score it above their thresholds. RNet and ONet run densely on tiles of ``tile x tile``
cells that hold PNet candidates (sharing the overlap of the tile's windows); their boxes
regress from ONet's offsets, and non-maximum suppression merges the windows of one face.

Boxes are ``(x1, y1, x2, y2, score)`` in pixels of the input image (inclusive corners).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import onnx

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
WINDOW, STRIDE = 12, 2     # PNet's native crop and total stride; RNet/ONet are x2 and x4


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) RGB -> float32 NCHW-ready values, MTCNN's ``(p - 127.5) / 128``."""
    return ((pixels.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)


def resize_area(image: np.ndarray, out_h: int, out_w: int, rows=None, cols=None) -> np.ndarray:
    """Area (adaptive-average) resampling of (H, W, C) float32, like torch's ``mode='area'``.

    Output cell i averages input rows floor(i*H/oh) .. ceil((i+1)*H/oh) - 1 (and columns
    likewise). Separable: rows then columns, each from a running sum, so a cell costs O(1);
    1-D running sums of 8-bit pixels stay exact in float32 (< 2^24).

    ``rows=(y0, y1)``, ``cols=(x0, x1)`` return only that window of the (out_h, out_w) result,
    computed from the input rows/columns it needs (a tile of a 4x zoom costs its own size, not
    the zoomed image's); parts outside the image are 0.
    """
    y0, y1 = rows if rows is not None else (0, out_h)
    x0, x1 = cols if cols is not None else (0, out_w)
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=np.float32)
    iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, out_h), max(x0, 0), min(x1, out_w)
    if iy1 > iy0 and ix1 > ix0:
        # Only the input columns the window needs go through the row pass.
        c0, c1 = _span(image.shape[1], out_w, ix0, ix1)
        block = _area_axis(image[:, c0:c1].astype(np.float32, copy=False), image.shape[0],
                           out_h, 0, iy0, iy1)
        out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = _area_axis(block, image.shape[1], out_w, 1,
                                                                ix0, ix1, first=c0)
    return out


def _span(n: int, out_len: int, start: int, stop: int) -> tuple:
    """Input range [lo, hi) that output cells [start, stop) of an n -> out_len resize read."""
    return (start * n) // out_len, -((-stop * n) // out_len)


def _area_axis(values, n, out_len, axis, start, stop, first=0):
    """Output cells [start, stop) of the area resize n -> out_len along ``axis`` (0 or 1);
    ``values`` holds input indices [first, first + values.shape[axis]) of that axis."""
    i = np.arange(start, stop)
    lo, hi = (i * n) // out_len, -((-(i + 1) * n) // out_len)   # input span of each cell
    base = int(lo[0])
    index = (slice(None),) * axis + (slice(base - first, int(hi[-1]) - first),)
    running = _running_sum(values[index], axis)
    shape = [1] * values.ndim
    shape[axis] = -1
    width = (hi - lo).astype(np.float32).reshape(shape)
    return (running.take(hi - base, axis) - running.take(lo - base, axis)) / width


def _running_sum(part, axis):
    """Prefix sums along axis 0 or 1 with a leading 0, in float32 (sequential order)."""
    shape = list(part.shape)
    shape[axis] += 1
    out = np.empty(shape, np.float32)
    if axis == 0:
        # Row by row: numpy's cumsum along axis 0 walks memory column-wise (5x slower).
        out[0] = 0
        for r in range(part.shape[0]):
            np.add(out[r], part[r], out=out[r + 1])
    else:
        out[:, 0] = 0
        np.cumsum(part, axis=1, dtype=np.float32, out=out[:, 1:])
    return out


def _zoomed_tiles(image, size, corners, side) -> list:
    """(side, side, 3) windows at ``corners`` (B, 2) of ``image`` area-resized to ``size``.

    Resizing costs about (input span + output) pixels: one resize of the tiles' bounding box
    when they are packed, one per tile when they are scattered over a large zoomed image.
    """
    def cost(top, left, bottom, right):
        r0, r1 = _span(image.shape[0], size[0], *np.clip([top, bottom], 0, size[0]))
        c0, c1 = _span(image.shape[1], size[1], *np.clip([left, right], 0, size[1]))
        return (r1 - r0) * (c1 - c0) + (bottom - top) * (right - left)

    top, left = corners.min(axis=0)
    bottom, right = corners.max(axis=0) + side
    if cost(top, left, bottom, right) <= sum(cost(y, x, y + side, x + side) for y, x in corners):
        region = resize_area(image, *size, rows=(top, bottom), cols=(left, right))
        return [region[y - top:y - top + side, x - left:x - left + side] for y, x in corners]
    return [resize_area(image, *size, rows=(y, y + side), cols=(x, x + side))
            for y, x in corners]


def nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression. boxes: (K, >=5) with score in column 4.

    Returns the indices kept, best first. ``mode="min"`` divides the overlap by the smaller
    box (MTCNN's last stage), ``"union"`` by the union (IoU).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2, score = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-score, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        iw = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = iw * ih
        denom = np.minimum(area[best], area[rest]) if mode == "min" else \
            area[best] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the nets' box offsets (fractions of width/height) to (K, 5) boxes."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0:4] += offsets[:, 0:4] * np.stack([w, h, w, h], axis=1)
    return out


@dataclass
class Stage:
    """One net of the cascade: dense session, the original (crop) session, its zoom."""
    name: str
    dense: object        # session of the fully convolutional net
    crops: object        # session of the net as shipped (for the crop-by-crop comparison)
    rf: object           # ReceptiveField of the dense net (native crop, stride)
    zoom: int            # image scale relative to the pyramid level: 1, 2, 4
    threshold: float


class MTCNN:
    """Three-stage face detector, every stage a dense (fully convolutional) net.

    Parameters
    ----------
    session_factory : callable(model bytes) -> session with ONNX Runtime's ``run`` API.
        Default: ``cyconv.InferenceSession``.
    min_face : int
        Smallest face side (pixels) the pyramid looks for.
    thresholds : (float, float, float)
        Face-probability cut of PNet, RNet and ONet.
    factor : float
        Scale ratio between pyramid levels.
    tile : int
        RNet/ONet run on tiles of ``tile x tile`` PNet cells that hold candidates.
    """

    def __init__(self, session_factory=None, min_face=20, thresholds=(0.6, 0.7, 0.7),
                 factor=0.709, model_dir=DATA_DIR, tile=4):
        from .converters import fc_to_conv, receptive_field

        if session_factory is None:
            from .engine.session import InferenceSession as session_factory
        self.stages = []
        for zoom, name, threshold in zip((1, 2, 4), ("pnet", "rnet", "onet"), thresholds):
            model = onnx.load(os.path.join(model_dir, f"mtcnn_{name}.onnx"))
            dense = fc_to_conv(model)     # PNet: unchanged (already fully convolutional)
            rf = receptive_field(dense)
            if rf.native != (WINDOW * zoom,) * 2 or rf.stride != (STRIDE * zoom,) * 2:
                raise ValueError(f"{name}: window {rf.native}, stride {rf.stride}; the cascade "
                                 f"needs {WINDOW * zoom} and {STRIDE * zoom}")
            self.stages.append(Stage(name.upper().replace("NET", "Net"),
                                     session_factory(dense.SerializeToString()),
                                     session_factory(model.SerializeToString()), rf, zoom,
                                     threshold))
        self.min_face, self.factor, self.tile = min_face, factor, tile

    def pyramid_scales(self, h: int, w: int) -> list:
        scale = 12.0 / self.min_face
        side = min(h, w) * scale
        scales = []
        while side >= 12:
            scales.append(scale)
            scale *= self.factor
            side *= self.factor
        return scales

    def detect(self, image: np.ndarray, trace=None):
        """uint8 (H, W, 3) RGB -> (boxes (K, 5) float32, landmarks (K, 5, 2) float32).

        ``trace``: a list to which every dense net call appends ``(stage, input batch)``
        (what :meth:`dense_vs_crops` replays).
        """
        h, w = image.shape[:2]
        image = image.astype(np.float32)
        found = []
        for scale in self.pyramid_scales(h, w):
            level = int(np.ceil(h * scale)), int(np.ceil(w * scale))
            boxes = self._level(image, level, trace)
            if len(boxes):
                found.append(boxes)
        if not found:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        found = np.concatenate(found)
        # Neighbouring windows and scales all fire on one face: keep the best, then drop the
        # boxes mostly inside a kept one (MTCNN's "min" overlap).
        found = found[nms(found, 0.7)]
        found = found[nms(found, 0.7, mode="min")]
        return found[:, :5].astype(np.float32), found[:, 5:].reshape(-1, 5, 2).astype(np.float32)

    def _level(self, image, level, trace):
        """One pyramid level: (K, 15) rows of box (5) + landmarks (10, x then y pairs)."""
        pnet, rnet, onet = self.stages
        x = normalize(resize_area(image, *level)).transpose(2, 0, 1)[None].copy()
        if trace is not None:
            trace.append((pnet, x))
        prob, _ = pnet.dense.run(["prob", "bbox"], {"input": x})
        face = prob[0, 1] >= pnet.threshold                        # (gy, gx) candidate cells
        for stage in (rnet, onet):
            if not face.any():
                return np.zeros((0, 15))
            outputs = self._dense_tiles(image, level, stage, face, trace)
            face &= outputs[0][1] > stage.threshold
        ys, xs = np.nonzero(face)
        if ys.size == 0:
            return np.zeros((0, 15))
        prob, offsets, marks = (o[:, ys, xs].T for o in outputs)   # (K, 2), (K, 4), (K, 10)
        sy, sx = level[0] / image.shape[0], level[1] / image.shape[1]
        # Cell (i, j): window [2j, 2j+12) x [2i, 2i+12) of the level, in photo pixels.
        boxes = np.stack([STRIDE * xs / sx, STRIDE * ys / sy, (STRIDE * xs + WINDOW) / sx - 1,
                          (STRIDE * ys + WINDOW) / sy - 1, prob[:, 1]], axis=1)
        bw, bh = boxes[:, 2:3] - boxes[:, 0:1] + 1, boxes[:, 3:4] - boxes[:, 1:2] + 1
        landmarks = np.stack([boxes[:, 0:1] + marks[:, 0:5] * bw,
                              boxes[:, 1:2] + marks[:, 5:10] * bh], axis=2)   # (K, 5, 2)
        return np.concatenate([regress(boxes, offsets), landmarks.reshape(-1, 10)], axis=1)

    def _dense_tiles(self, image, level, stage, cells, trace):
        """``stage`` densely over the tiles of ``cells`` (gy, gx) holding a candidate.

        Returns its outputs as (K, gy, gx) maps (zero outside the evaluated tiles).
        """
        t, z = self.tile, stage.zoom
        gy, gx = cells.shape
        ny, nx = -(-gy // t), -(-gx // t)
        padded = np.zeros((ny * t, nx * t), bool)
        padded[:gy, :gx] = cells
        tiles = np.argwhere(padded.reshape(ny, t, nx, t).any(axis=(1, 3)))   # (B, 2)
        # Tile (a, b) = cells [a*t, a*t + t): zoomed-image pixels [z*2*t*a, + z*(2*(t-1)+12)).
        step, side = z * STRIDE * t, z * (STRIDE * (t - 1) + WINDOW)
        batch = np.stack(_zoomed_tiles(image, (z * level[0], z * level[1]), tiles * step,
                                       side))
        batch = normalize(batch).transpose(0, 3, 1, 2).copy()       # (B, 3, side, side)
        if trace is not None:
            trace.append((stage, batch))
        outputs = stage.dense.run(None, {"input": batch})            # each (B, K, >=t, >=t)
        maps = []
        for out in outputs:
            full = np.zeros((out.shape[1], ny * t, nx * t), np.float32)
            for (a, b), cell_map in zip(tiles, out[:, :, :t, :t]):
                full[:, a * t:a * t + t, b * t:b * t + t] = cell_map
            maps.append(full[:, :gy, :gx])
        return maps

    def dense_vs_crops(self, trace, repeat=3, chunk=4096) -> list:
        """Time the traced dense calls against crop-by-crop evaluation of the same windows.

        Every dense input of ``trace`` is run again through the dense net (best of
        ``repeat``), and its windows (native crops at the net's stride, the cells the dense map
        holds) are cut out and run through the net as shipped, ``chunk`` crops per batch.

        Returns
        -------
        list of dict
            Per stage: ``stage``, ``windows``, ``dense_s``, ``crops_s`` (seconds, crops
            including cutting them out), ``max_prob_diff`` (dense vs crop face probability).
        """
        from .converters import crop_windows

        rows = {}
        for stage, x in trace:
            row = rows.setdefault(stage.name, dict(stage=stage.name, windows=0, dense_s=0.0,
                                                   crops_s=0.0, max_prob_diff=0.0))
            best = np.inf
            for _ in range(repeat):
                start = time.perf_counter()
                dense = stage.dense.run(None, {"input": x})[0]
                best = min(best, time.perf_counter() - start)
            gy, gx = stage.rf.grid(*x.shape[2:])
            start = time.perf_counter()
            windows = crop_windows(x, stage.rf).reshape(-1, *x.shape[1:2], *stage.rf.native)
            probs = [stage.crops.run(None, {"input": np.ascontiguousarray(
                windows[k:k + chunk])})[0] for k in range(0, len(windows), chunk)]
            row["crops_s"] += time.perf_counter() - start
            row["dense_s"] += best
            row["windows"] += len(windows)
            crop_prob = np.concatenate(probs).reshape(x.shape[0], gy, gx, -1)[..., 1]
            diff = np.abs(dense[:, 1, :gy, :gx] - crop_prob).max()
            row["max_prob_diff"] = max(row["max_prob_diff"], float(diff))
        return list(rows.values())
