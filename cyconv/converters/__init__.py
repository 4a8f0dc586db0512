"""Model converters: ONNX import, and (later) user-facing rewrites such as fc_to_conv."""
