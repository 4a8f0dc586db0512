"""cyconv: fast CPU inference for convolutional networks, with an ONNX Runtime-compatible API.

    import cyconv
    sess = cyconv.InferenceSession("model.onnx", threads=None)
    outputs = sess.run(None, {"input": x})
"""
import os as _os

# Idle OpenMP threads sleep instead of spinning, unless the user chose a policy. libgomp's
# default spins for up to ~300k iterations after every parallel region; on a machine whose
# cores are shared (other processes, or ONNX Runtime's own spinning pool in the same
# process) the spinning worker steals the core from the thread doing the next op. Measured on
# the 2-core dev machine at load average ~2.6 (benchmarks/bench_gemm.py, FC 1x4096 @
# 4096x1000, prepacked, median of 41 interleaved runs):
#     policy            1 thread   2 threads
#     default (spin)    1.02 ms    7.99 ms     (the spinner slows even 1-thread calls)
#     GOMP_SPINCOUNT=1e4 0.43 ms   1.22 ms
#     passive           0.45 ms    0.69 ms
# Passive costs a futex wake-up (a few microseconds) per parallel region when idle, which is
# why the kernels run one region per op. Read once, when libgomp loads with the first kernel,
# so it must be set before any kernel module is imported.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from .errors import CyconvError, InputError, ModelError, UnsupportedOpError  # noqa: E402

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
