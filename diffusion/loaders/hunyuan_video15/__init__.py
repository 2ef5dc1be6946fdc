"""HunyuanVideo 1.5 models: the transformer from a diffusers folder's transformer/ or Tencent's
original release (`transformer`). Builds on formats/ and keymaps/."""
