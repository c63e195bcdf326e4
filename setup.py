"""Builds the Cython extension over the plain C front end in csrc/ (metadata lives in pyproject.toml)."""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

melspec = Extension(
    "mde.runtime._melspec",
    sources=["mde/runtime/_melspec.pyx", "csrc/melspec.c", "csrc/fft.c"],
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    # -Wall -Wextra: csrc/ and Cython's generated C compile without warnings (.ci/checks adds -Werror).
    extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-fno-math-errno", "-ffp-contract=fast",
                        "-fno-trapping-math"],
    extra_link_args=["-lm", "-lpthread"],
)

setup(ext_modules=cythonize([melspec], language_level=3))
