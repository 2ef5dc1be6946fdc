"""LTX-2 (Lightricks' audio-video model) diffusers folders, each part read by a module of its
own: the audio parts (audio.py: audio_vae/ AutoencoderKLLTX2Audio, vocoder/ LTX2Vocoder or
LTX2VocoderWithBWE), the prompt side (text.py: text_encoder/ Gemma 3's language model,
connectors/ LTX2TextConnectors, tokenizer/, with the models that read them), the audio-video
transformer (transformer.py: transformer/), the video VAE (vae.py: vae/, or the `vae.`
tensors of Lightricks' single checkpoint) and the two-stage run's latent upsampler
(upsampler.py: latent_upsampler/, or Lightricks' single file); the whole folder of an
LTX2Pipeline (folder.py). Built on formats/."""

from .audio import load_ltx2_audio_vae, load_ltx2_vocoder
from .folder import LTX2Weights, load_ltx2_folder, ltx2_family
from .text import LTX2TextWeights, load_ltx2_text, ltx2_text_models
from .transformer import load_ltx2_transformer, ltx2_transformer_weights
from .upsampler import load_ltx2_upsampler
from .vae import load_ltx2_vae

__all__ = ["LTX2TextWeights", "LTX2Weights", "load_ltx2_audio_vae", "load_ltx2_folder",
           "load_ltx2_text", "load_ltx2_transformer", "load_ltx2_upsampler", "load_ltx2_vae",
           "load_ltx2_vocoder", "ltx2_family", "ltx2_text_models", "ltx2_transformer_weights"]
