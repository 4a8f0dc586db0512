"""Model converters: ONNX import, and user-facing rewrites.

    fc_to_conv(model)        FC layers -> convolutions: the classifier slides over larger images
"""
from .fc_to_conv import fc_to_conv

__all__ = ["fc_to_conv"]
