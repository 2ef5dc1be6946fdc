"""HunyuanVideo 1.5 models: diffusers folders (folder.py: HunyuanVideo15Pipeline and
HunyuanVideo15ImageToVideoPipeline)."""
