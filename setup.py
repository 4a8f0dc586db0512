"""Build the Cython/C kernels.

Every ``cyconv/kernels/**/*.pyx`` becomes one extension module. Hand-written C sources that a
module needs sit in a folder named after it: ``cyconv/kernels/gemm/_gemm.pyx`` links every
``cyconv/kernels/gemm/*.c``. Other modules reach those C functions through Cython ``cimport``
of the module's ``.pxd`` (one copy of the code, one ISA choice made once at import).

Flags:
  * OpenMP (``-fopenmp``) when the compiler supports it; otherwise the kernels build serially.
    ``CYCONV_NO_OPENMP=1`` forces the serial build (CI uses it to prove the fallback works).
  * Never ``-march=native``: ISA-specific code is compiled per function with
    ``__attribute__((target(...)))`` and chosen at run time.
  * ``CYCONV_DEBUG=1``: Cython boundscheck/wraparound on, ``-O0 -g``.
"""
import os
import glob
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CYCONV_DEBUG", "0") == "1"


def compiler_supports_openmp() -> bool:
    if os.environ.get("CYCONV_NO_OPENMP", "0") == "1":
        return False
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return False
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        result = subprocess.run([cc, "-fopenmp", path, "-o", os.path.join(tmp, "t")],
                                capture_output=True)
        return result.returncode == 0


OPENMP = compiler_supports_openmp()
if not OPENMP:
    print("cyconv: building WITHOUT OpenMP (kernels run on one thread)", file=sys.stderr)

compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-ffp-contract=fast", "-fno-math-errno"]
link_args = []
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")


def make_extensions():
    extensions = []
    for pyx in sorted(glob.glob("cyconv/kernels/**/*.pyx", recursive=True)):
        module = pyx[:-4].replace(os.sep, ".")
        folder = os.path.dirname(pyx)
        c_sources = sorted(glob.glob(os.path.join(folder, "*.c")))
        extensions.append(Extension(
            module,
            sources=[pyx] + c_sources,
            include_dirs=[np.get_include(), folder, "cyconv/kernels"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        ))
    return extensions


directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

setup(
    ext_modules=cythonize(make_extensions(), compiler_directives=directives,
                          build_dir="build/cython", compile_time_env={"OPENMP": OPENMP}),
)
