"""Weight files as stored, whatever model they hold: safetensors (and its float8 encodings),
PyTorch pickles (zip, legacy tar, bare) read without running them, GGUF (read, written,
our Q4_K), and a diffusers folder's configs and weight files. Below everything else in
diffusion.loaders: no module here imports keymaps/, sd/, flow/ or control/."""
