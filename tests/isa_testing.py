"""Which GEMM micro-kernels this CPU can run, for tests that repeat over each of them."""
from cyconv.kernels.gemm import _gemm


def runnable_gemm_isas(names=("generic", "avx2", "avx512f")):
    """The names among ``names`` that ``_gemm.set_isa`` accepts here (the current one kept)."""
    found = []
    for name in names:
        prev = _gemm.isa()
        try:
            _gemm.set_isa(name)
            found.append(name)
        except ValueError:
            pass
        finally:
            _gemm.set_isa(prev)
    return found
