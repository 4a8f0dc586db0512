"""Dense sliding-window evaluation helpers: explicit crops, and shift-and-stitch.

A network converted by ``fc_to_conv`` maps an (H, W) image to a (gy, gx) grid of outputs at
its total stride S (``receptive_field``). Two things users need around that:

* ``crop_windows``: the explicit crops those cells stand for (the reference the dense map is
  checked and timed against).
* ``shift_and_stitch``: outputs at a finer stride S/k. Run the dense net on the image shifted
  by (a*S/k, b*S/k) for a, b in 0..k-1; the shifted run's cell (i, j) is the crop at
  ((i*k + a)*S/k, (j*k + b)*S/k), so interleaving the k*k maps gives every crop at stride S/k
  (Long et al., "Fully Convolutional Networks", sec. 3.2; OverFeat's offset pooling).
  Cost: k*k dense runs, still sharing all overlapping work within each.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ModelError


def crop_windows(images: np.ndarray, rf, stride=None) -> np.ndarray:
    """Every native crop of ``images`` at ``stride`` (default: the net's total stride).

    Parameters
    ----------
    images : ndarray (N, C, H, W)
    rf : ReceptiveField
        Gives the native crop size (and the default stride).
    stride : int or (int, int), optional

    Returns
    -------
    ndarray (N, gy, gx, C, h, w)
        A read-only strided view (no copy); crop (n, i, j) starts at (i*sy, j*sx).
    """
    sy, sx = _pair(stride if stride is not None else rf.stride)
    h, w = rf.native
    if images.ndim != 4 or images.shape[2] < h or images.shape[3] < w:
        raise InputError(f"images {images.shape}: expected (N, C, H, W) with H >= {h}, W >= {w}")
    view = np.lib.stride_tricks.sliding_window_view(images, (h, w), axis=(2, 3))
    return view[:, :, ::sy, ::sx].transpose(0, 2, 3, 1, 4, 5)   # (N, gy, gx, C, h, w)


def shift_and_stitch(net, images: np.ndarray, rf, factor) -> list:
    """Dense outputs at stride ``rf.stride / factor`` from k*k shifted dense runs.

    Parameters
    ----------
    net : session or callable
        A session of the converted (fully convolutional) model (its first input is fed), or a
        callable (N, C, H, W) -> list of (N, K, h, w) maps.
    images : ndarray (N, C, H, W)
    rf : ReceptiveField
        Of the converted model (stride S and native crop size).
    factor : int or (int, int)
        k (per axis); must divide the stride.

    Returns
    -------
    list of ndarray (N, K, gy, gx)
        One per output; cell (i, j) = the net on the native crop at (i*S/k, j*S/k); gy, gx =
        number of whole crops at that stride.
    """
    ky, kx = _pair(factor)
    sy, sx = rf.stride
    if ky < 1 or kx < 1 or sy % ky or sx % kx:
        raise ModelError(f"shift-and-stitch factor {(ky, kx)} must divide the stride {(sy, sx)}")
    step = (sy // ky, sx // kx)
    gy = (images.shape[2] - rf.native[0]) // step[0] + 1
    gx = (images.shape[3] - rf.native[1]) // step[1] + 1
    if gy < 1 or gx < 1:
        raise InputError(f"images {images.shape[2:]} smaller than the native crop {rf.native}")
    run = _runner(net)
    stitched = None
    for a in range(ky):
        for b in range(kx):
            # Cells (i*k + a, j*k + b) of the fine grid that exist: i < ceil((gy - a) / k).
            ny, nx = -(-(gy - a) // ky), -(-(gx - b) // kx)
            if ny <= 0 or nx <= 0:
                continue
            shifted = np.ascontiguousarray(images[:, :, a * step[0]:, b * step[1]:])
            maps = run(shifted)
            if stitched is None:
                stitched = [np.empty((m.shape[0], m.shape[1], gy, gx), m.dtype) for m in maps]
            for out, m in zip(stitched, maps):
                if m.shape[2] < ny or m.shape[3] < nx:
                    raise ModelError(f"dense map {m.shape[2:]} on a {shifted.shape[2:]} input "
                                     f"has fewer cells than the {ny}x{nx} whole crops: is rf "
                                     "the receptive field of this net?")
                out[:, :, a::ky, b::kx] = m[:, :, :ny, :nx]
    return stitched


def _runner(net):
    if hasattr(net, "run") and hasattr(net, "get_inputs"):
        name = net.get_inputs()[0].name
        return lambda x: net.run(None, {name: x})
    if callable(net):
        return net
    raise TypeError("net must be a session (run, get_inputs) or a callable")


def _pair(value) -> tuple:
    if np.ndim(value) == 0:
        return int(value), int(value)
    y, x = value
    return int(y), int(x)
