"""MTCNN face detection (Zhang et al. 2016) on cyconv sessions: the package's demo job.

The cascade, as in facenet-pytorch whose pretrained weights we bundle:

    image pyramid --PNet (fully convolutional, stride 2, 12x12 window)--> candidate boxes
      --NMS, regress, square--> 24x24 crops --RNet--> filtered boxes
      --NMS, regress, square--> 48x48 crops --ONet--> final boxes + 5 landmarks

Boxes are ``(x1, y1, x2, y2, score)`` in pixels of the input image.
"""
from __future__ import annotations

import os

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) RGB -> float32 NCHW-ready values, MTCNN's ``(p - 127.5) / 128``."""
    return ((pixels.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)


def resize_area(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area (adaptive-average) resampling of (H, W, C) float32, like torch's ``mode='area'``.

    Output cell i averages input rows floor(i*H/oh) .. ceil((i+1)*H/oh) - 1 (and columns
    likewise). Separable: rows then columns, each from a running sum, so a cell costs O(1);
    1-D running sums of 8-bit pixels stay exact in float32 (< 2^24).
    """
    return _area_axis(_area_axis(image.astype(np.float32, copy=False), out_h, 0), out_w, 1)


def _area_axis(values: np.ndarray, out_len: int, axis: int) -> np.ndarray:
    n = values.shape[axis]
    running = np.concatenate([np.zeros_like(values.take([0], axis=axis)),
                              np.cumsum(values, axis=axis, dtype=np.float32)], axis=axis)
    i = np.arange(out_len)
    start, stop = (i * n) // out_len, -((-(i + 1) * n) // out_len)
    shape = [1] * values.ndim
    shape[axis] = out_len
    width = (stop - start).astype(np.float32).reshape(shape)
    return (running.take(stop, axis=axis) - running.take(start, axis=axis)) / width


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


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (the next stage takes square crops)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(K, 3, size, size) normalised crops; parts of a box outside the image are zero pixels."""
    h, w = image.shape[:2]
    batch = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(int)):
        patch = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), dtype=np.float32)
        sy0, sy1, sx0, sx1 = max(y1, 0), min(y2 + 1, h), max(x1, 0), min(x2 + 1, w)
        if sy1 > sy0 and sx1 > sx0:
            patch[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1] = image[sy0:sy1, sx0:sx1]
        batch[k] = resize_area(patch, size, size)
    return normalize(batch).transpose(0, 3, 1, 2).copy()


class MTCNN:
    """Three-stage face detector.

    Parameters
    ----------
    session_factory : callable(path) -> session with ONNX Runtime's ``run`` API.
        Default: ``cyconv.InferenceSession``.
    min_face : int
        Smallest face side (pixels) the pyramid looks for.
    thresholds : (float, float, float)
        Face-probability cut of PNet, RNet and ONet.
    """

    def __init__(self, session_factory=None, min_face=20, thresholds=(0.6, 0.7, 0.7),
                 factor=0.709, model_dir=DATA_DIR):
        if session_factory is None:
            from .engine.session import InferenceSession as session_factory
        self.pnet = session_factory(os.path.join(model_dir, "mtcnn_pnet.onnx"))
        self.rnet = session_factory(os.path.join(model_dir, "mtcnn_rnet.onnx"))
        self.onet = session_factory(os.path.join(model_dir, "mtcnn_onet.onnx"))
        self.min_face, self.thresholds, self.factor = min_face, thresholds, factor

    def pyramid_scales(self, h: int, w: int) -> list:
        scale = 12.0 / self.min_face
        side = min(h, w) * scale
        scales = []
        while side >= 12:
            scales.append(scale)
            scale *= self.factor
            side *= self.factor
        return scales

    def propose(self, image: np.ndarray) -> np.ndarray:
        """Stage 1: PNet over the pyramid -> (K, 5) candidate boxes (regressed, square)."""
        h, w = image.shape[:2]
        image = image.astype(np.float32)
        found = []
        for scale in self.pyramid_scales(h, w):
            sh, sw = int(np.ceil(h * scale)), int(np.ceil(w * scale))
            x = normalize(resize_area(image, sh, sw)).transpose(2, 0, 1)[None].copy()
            prob, offsets = self.pnet.run(["prob", "bbox"], {"input": x})
            ys, xs = np.nonzero(prob[0, 1] >= self.thresholds[0])
            if ys.size == 0:
                continue
            # A map cell at (y, x) sees the 12x12 window at (2x, 2y) of the scaled image.
            boxes = np.stack([np.floor((2 * xs + 1) / scale), np.floor((2 * ys + 1) / scale),
                              np.floor((2 * xs + 12) / scale), np.floor((2 * ys + 12) / scale),
                              prob[0, 1, ys, xs]], axis=1)
            boxes = np.concatenate([boxes, offsets[0][:, ys, xs].T], axis=1)
            found.append(boxes[nms(boxes, 0.5)])
        if not found:
            return np.zeros((0, 5), dtype=np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes, 0.7)]
        return square(regress(boxes[:, :5], boxes[:, 5:9]))

    def refine(self, image, boxes, net, size, threshold):
        """Stages 2 and 3: score square crops, keep the confident ones, return net outputs."""
        outputs = net.run(None, {"input": crops(image, boxes, size)})
        prob, offsets = outputs[0], outputs[1]
        keep = prob[:, 1] > threshold
        boxes = boxes[keep].copy()
        boxes[:, 4] = prob[keep, 1]
        return boxes, offsets[keep], [o[keep] for o in outputs[2:]]

    def detect(self, image: np.ndarray):
        """uint8 (H, W, 3) RGB -> (boxes (K, 5) float32, landmarks (K, 5, 2) float32)."""
        boxes = self.propose(image)
        if len(boxes):
            boxes, offsets, _ = self.refine(image, boxes, self.rnet, 24, self.thresholds[1])
            keep = nms(boxes, 0.7)
            boxes = square(regress(boxes[keep], offsets[keep]))
        landmarks = np.zeros((0, 5, 2), dtype=np.float32)
        if len(boxes):
            boxes, offsets, (marks,) = self.refine(image, boxes, self.onet, 48,
                                                   self.thresholds[2])
            w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
            h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
            landmarks = np.stack([boxes[:, 0:1] + marks[:, 0:5] * w,
                                  boxes[:, 1:2] + marks[:, 5:10] * h], axis=2)
            boxes = regress(boxes, offsets)
            keep = nms(boxes, 0.7, mode="min")
            boxes, landmarks = boxes[keep], landmarks[keep]
        return boxes.astype(np.float32), landmarks.astype(np.float32)
