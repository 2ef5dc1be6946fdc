"""LTX-2 models (Lightricks' audio-video generator): diffusers folders' parts, each read by a
module of its own (transformer: the audio-video transformer's `transformer/`)."""

from .transformer import load_ltx2_transformer, ltx2_transformer_weights

__all__ = ["load_ltx2_transformer", "ltx2_transformer_weights"]
