"""The environment TensorFlow reads once, when it is first imported. Every entry point that may
import TensorFlow (`crack`, `python -m training`, `crack convert`, the benchmarks, the tests) calls
``prepare()`` first, so they all train and predict with the same kernels.

- ``TF_ENABLE_ONEDNN_OPTS=1``: TensorFlow turns its oneDNN kernels on by itself only on some CPUs
  (on an Intel Xeon with AVX-512 it did; on an AMD EPYC with AVX2 only it did not). Without them,
  the backward pass of ResNet50V2 at 64 px took 1,198 ms a batch of 16 on that EPYC, with them
  420 ms, and an epoch of the demo recipe in `crack train` fell from 138 s to 45-55 s (measured
  2026-11-28, 2 cores).
  Results differ from Eigen's kernels only in float rounding.
- ``TF_CPP_MIN_LOG_LEVEL=2``: no C++ start-up chatter.

Both are defaults: a value the user set wins (``TF_ENABLE_ONEDNN_OPTS=0`` turns oneDNN off).
"""

from __future__ import annotations

import os

DEFAULTS = {
    "TF_ENABLE_ONEDNN_OPTS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def prepare() -> None:
    """Set the defaults above where the environment has no value. Call it before TensorFlow is
    first imported; later it has no effect on this process (only on its children)."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
