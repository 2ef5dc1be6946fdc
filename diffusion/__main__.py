"""`python -m diffusion`: the command-line interface (see diffusion/cli/main.py)."""

from .cli.main import main

raise SystemExit(main())
