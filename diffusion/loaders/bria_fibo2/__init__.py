"""Bria FIBO 2 models: diffusers folders (`BriaFibo2Pipeline`). Builds on formats/ and
qwen_image/'s Qwen3-VL readers; imports neither sd/ nor flow/."""

from .folder import BriaFibo2Weights, bria_fibo2_family, load_bria_fibo2_folder

__all__ = ["BriaFibo2Weights", "bria_fibo2_family", "load_bria_fibo2_folder"]
