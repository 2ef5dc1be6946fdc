"""LTX-2 (Lightricks' audio-video model) diffusers folders: its audio parts, audio_vae/
(AutoencoderKLLTX2Audio) and vocoder/ (LTX2Vocoder, LTX2VocoderWithBWE), built on formats/;
its prompt side (text.py): text_encoder/ (Gemma 3's language model), connectors/
(LTX2TextConnectors) and tokenizer/, with the models that read them; the audio-video
transformer's transformer/ (transformer.py); and the video VAE's vae/, from a folder or the
single release checkpoint (vae.py)."""

from .audio import load_ltx2_audio_vae, load_ltx2_vocoder
from .text import LTX2TextWeights, load_ltx2_text, ltx2_text_models
from .transformer import load_ltx2_transformer, ltx2_transformer_weights
from .vae import load_ltx2_vae

__all__ = ["LTX2TextWeights", "load_ltx2_audio_vae", "load_ltx2_text", "load_ltx2_transformer",
           "load_ltx2_vae", "load_ltx2_vocoder", "ltx2_text_models", "ltx2_transformer_weights"]
