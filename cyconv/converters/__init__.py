"""Model converters: ONNX import, and user-facing rewrites for dense sliding-window evaluation.

    fc_to_conv(model)                      FC layers -> convolutions: the classifier slides
    receptive_field(model)                 total stride, window, offset; is dense == crops?
    shift_and_stitch(net, x, rf, k)        dense outputs at stride S/k
    crop_windows(x, rf)                    the explicit crops a dense map stands for
"""
from .dense import crop_windows, shift_and_stitch
from .fc_to_conv import fc_to_conv
from .receptive_field import ReceptiveField, receptive_field

__all__ = ["fc_to_conv", "receptive_field", "ReceptiveField", "shift_and_stitch",
           "crop_windows"]
