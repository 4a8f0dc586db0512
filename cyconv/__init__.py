"""cyconv: fast CPU inference for convolutional networks, with an ONNX Runtime-compatible API.

    import cyconv
    sess = cyconv.InferenceSession("model.onnx", threads=None)
    outputs = sess.run(None, {"input": x})
"""
from .errors import CyconvError, InputError, ModelError, UnsupportedOpError

__version__ = "0.1.0"

__all__ = ["InferenceSession", "backend", "converters", "CyconvError", "ModelError",
           "UnsupportedOpError", "InputError", "__version__"]


def __getattr__(name):
    # Lazy so that `import cyconv` stays cheap and the CLI starts fast.
    if name == "InferenceSession":
        from .engine.session import InferenceSession
        return InferenceSession
    if name == "backend":
        from . import backend
        return backend
    if name == "converters":
        from . import converters
        return converters
    raise AttributeError(f"module 'cyconv' has no attribute {name!r}")
