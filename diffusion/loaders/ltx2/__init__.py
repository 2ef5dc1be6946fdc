"""LTX-2 (Lightricks' audio-video model) diffusers folders: so far its audio parts,
audio_vae/ (AutoencoderKLLTX2Audio) and vocoder/ (LTX2Vocoder, LTX2VocoderWithBWE). Builds
on formats/ only."""

from .audio import load_ltx2_audio_vae, load_ltx2_vocoder

__all__ = ["load_ltx2_audio_vae", "load_ltx2_vocoder"]
