"""`python -m diffusion`: the command-line interface (see diffusion/cli.py)."""

from .cli import main

raise SystemExit(main())
