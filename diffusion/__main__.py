"""`python -m diffusion`: the command-line interface (see diffusion/cli/main.py).

A command that will use the GPU begins opening it first, so that the imports below overlap it.
"""

import sys

from .cli.ahead import open_device_ahead

open_device_ahead(sys.argv[1:])

from .cli.main import main  # noqa: E402 (after the device began opening)

raise SystemExit(main())
