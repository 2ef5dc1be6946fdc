"""`python -m diffusion`: the command line (`main`)."""
