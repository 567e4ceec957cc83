"""The optional C letterbox (everything else about the package is in pyproject.toml).

``optional=True``: without a C compiler or Python's headers the build only warns, and
``iweblens.inference.letterbox`` falls back to its exact NumPy code. ``-ffp-contract=off`` keeps
every float32 product and sum rounded on its own, as NumPy rounds them (no fused multiply-add),
so the two paths give bit-identical blobs; gcc and clang both take it.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "iweblens.inference._letterbox",
            sources=["src/iweblens/inference/_letterbox.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
