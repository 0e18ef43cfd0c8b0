"""The one compiled part of the package: ``speculative._topk``, the sampler's top-k.

Everything else is in pyproject.toml. The extension is optional: without a C
compiler the package installs and ``speculative.topk`` falls back to numpy (about
1 ms more a step at 64 sampled streams; ``/health_check`` says which is in use).
"""

import sys

from setuptools import Extension, setup

# -O3 whatever flags the Python was built with (this one: -O3; many distributions: -O2)
flags = [] if sys.platform == "win32" else ["-O3"]
setup(
    ext_modules=[
        Extension(
            "speculative._topk", ["speculative/_topk.c"], extra_compile_args=flags, optional=True
        )
    ]
)
