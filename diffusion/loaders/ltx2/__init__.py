"""LTX-2 models from their diffusers folder (`LTX2Pipeline`); text.py: the prompt side
(text_encoder/ Gemma 3, connectors/, tokenizer/)."""
