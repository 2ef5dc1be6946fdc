"""gpucore's version: its own module so that gpucore's modules can read it (the autotune
cache is keyed by it) without importing the package that imports them."""

__version__ = "0.1.0"
