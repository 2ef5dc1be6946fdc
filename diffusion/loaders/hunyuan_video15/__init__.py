"""HunyuanVideo 1.5 models: the transformer from a diffusers folder's transformer/ or Tencent's
original release (`transformer`), and the diffusers folders of the text-to-video and
image-to-video pipelines (`folder`). Builds on formats/ and keymaps/."""
