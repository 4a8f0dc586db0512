"""SGEMM micro-benchmark: cyconv's packed GEMM vs numpy's OpenBLAS, same process.

Run with OpenBLAS at its real ISA (these machines set OPENBLAS_CORETYPE=Haswell, which halves
its sgemm on AVX-512)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py [--threads 1,2]

Each thread count runs in a child process with OPENBLAS_NUM_THREADS set to it, so numpy and
cyconv always use the same number of threads.
Also times the batch-1 fully connected layer (1 x 4096 @ 4096 x 1000, weights prepacked) and
ONNX Runtime's Gemm on it when onnxruntime is installed.

Timing: candidates interleaved round-robin in blocks, median of many calls (:func:`interleaved`).
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cyconv.kernels.gemm import _gemm  # noqa: E402


def interleaved(fns, rounds=31, warmup=3, min_time=0.02, block=4, settle=0.1):
    """Median seconds per call of each callable in ``fns`` (dict name -> fn()).

    Every round runs each candidate for ``block`` consecutive samples (a sample repeats the
    call until it lasts >= ``min_time``), order rotated per round, so a burst of load from
    another process hits all candidates alike. Before each block the process sleeps
    ``settle`` seconds and the block's first sample is dropped: libraries whose idle threads
    spin after a call (OpenBLAS, ONNX Runtime ~55 ms, cyconv 50 ms) would otherwise tax
    whichever library runs next in the same process, which is not the latency a user of
    either one sees.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    reps = {}
    for n in names:
        t = time.perf_counter()
        fns[n]()
        reps[n] = max(1, int(min_time / max(time.perf_counter() - t, 1e-9)))
    samples = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            f, k = fns[n], reps[n]
            if settle and len(names) > 1:
                time.sleep(settle)
            for b in range(block + 1):
                t = time.perf_counter()
                for _ in range(k):
                    f()
                if b:
                    samples[n].append((time.perf_counter() - t) / k)
    return {n: float(np.median(s)) for n, s in samples.items()}


def load_note():
    """How loaded the machine was: 1-minute load average and core count."""
    try:
        return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    except OSError:
        return "load average unknown"


def ort_gemm_session(w, n_threads):
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    K, N = w.shape
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"])], "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = n_threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.child:
        print(f"# cyconv GEMM micro-kernel: {_gemm.isa()} {_gemm.tile_shape()}; {load_note()}")
        if os.environ.get("OPENBLAS_CORETYPE"):
            print(f"# warning: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} caps numpy")
        print(f"{'case':<34}{'thr':>4}{'cyconv ms':>11}{'ref ms':>9}{'cy GF/s':>9}"
              f"{'ref GF/s':>9}{'cy/ref':>8}  ref", flush=True)
        for nt in [int(t) for t in args.threads.split(",")]:
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(nt))
            subprocess.run([sys.executable, __file__, "--child", str(nt), "--rounds",
                            str(args.rounds)], env=env, check=True)
        print(f"# after: {load_note()}")
        return
    rng = np.random.default_rng(0)
    shapes = [(1024, 1024, 1024), (256, 3136, 576), (64, 3136, 576), (512, 196, 4608),
              (2048, 2048, 2048)]
    nt = args.child
    if True:  # noqa: SIM108 (kept indented: one thread count per child)
        for M, N, K in shapes:
            a = rng.standard_normal((M, K), dtype=np.float32)
            b = rng.standard_normal((K, N), dtype=np.float32)
            out = np.empty((M, N), np.float32)
            cy = {"cy": lambda: _gemm.sgemm(a, b, out, n_threads=nt)}
            ref = {"np": lambda: np.matmul(a, b, out=out)}
            if nt > 1:
                # OpenBLAS's idle workers spin for ~0.1 s after each call (its thread server's
                # timeout), which would take a core from whatever runs next: with threads,
                # time cyconv (1 and nt threads interleaved) before numpy touches its pool
                cy["cy1"] = lambda: _gemm.sgemm(a, b, out, n_threads=1)
                t = interleaved(cy, rounds=args.rounds)
                t.update(interleaved(ref, rounds=args.rounds))
            else:
                t = interleaved({**cy, **ref}, rounds=args.rounds)
            gf = 2.0 * M * N * K / 1e9
            extra = f"  (cy x{t['cy1'] / t['cy']:.2f} vs 1T)" if nt > 1 else ""
            print(f"{f'sgemm {M}x{N}x{K}':<34}{nt:>4}{t['cy'] * 1e3:>11.3f}"
                  f"{t['np'] * 1e3:>9.3f}{gf / t['cy']:>9.1f}{gf / t['np']:>9.1f}"
                  f"{t['cy'] / t['np']:>8.2f}  numpy{extra}", flush=True)
        # fully connected layers, weights prepacked (as a session does at load)
        for M in (1, 8):
            K, N = 4096, 1000
            x = rng.standard_normal((M, K), dtype=np.float32)
            w = rng.standard_normal((K, N), dtype=np.float32) * 0.02
            wp = _gemm.pack_b(w)
            out = np.empty((M, N), np.float32)
            fns = {"cy": lambda: _gemm.sgemm(x, wp, out, n_threads=nt)}
            sess = ort_gemm_session(w, nt)
            if sess is not None:
                fns["ort"] = lambda: sess.run(None, {"x": x})
            t = interleaved(fns, rounds=args.rounds * 2)
            gf = 2.0 * M * N * K / 1e9
            r = t.get("ort", float("nan"))
            print(f"{f'FC {M}x{K} @ {K}x{N} (packed)':<34}{nt:>4}{t['cy'] * 1e3:>11.3f}"
                  f"{r * 1e3:>9.3f}{gf / t['cy']:>9.1f}{gf / r:>9.1f}{t['cy'] / r:>8.2f}  ORT")


if __name__ == "__main__":
    main()
