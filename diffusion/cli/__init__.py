"""`python -m diffusion`: the command line.

| module | what |
|---|---|
| `main` | the entry point and the sub-command table |
| `ahead` | the GPU opened on a thread while the CLI imports, for the commands that use it |
| `options` | the generation commands' options, by group (syntax only; GenerationRequest checks) |
| `generate` | txt2img / img2img / inpaint: options -> GenerationRequest -> model -> PNGs |
| `from_infotext` | `--from-infotext`: start from another picture's settings |
| `progress` | the progress bar (an Observer) |
| `serve` | `serve`: its options and the uvicorn server around diffusion.server's app |
"""
