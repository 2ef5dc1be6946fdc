"""The GPU opened ahead: a command line that will use the default device begins opening it on
a thread before the CLI's imports (`gpucore.open_default_device_ahead`).

Only this module's imports come before that: the arguments are not parsed yet, so `argv` is
read here only for what decides whether the default device will be wanted at all.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["GPU_COMMANDS", "open_device_ahead", "wants_default_device"]

# the sub-commands whose first work is opening the default device
GPU_COMMANDS = ("txt2img", "img2img", "inpaint", "txt2vid", "img2vid")
# options that change which device is default (they set GPUCORE_BACKEND / GPUCORE_ADAPTER
# once parsed) or that mean no device at all
_OTHER_DEVICE = ("backend", "adapter", "help")


def wants_default_device(argv: Sequence[str]) -> bool:
    """Whether `argv` (without the program) runs a GPU command on the default device: its
    command is one of GPU_COMMANDS and no argument is --backend, --adapter, --help or -h, nor
    an abbreviation of them (argparse accepts those)."""
    if not argv or argv[0] not in GPU_COMMANDS:
        return False
    for arg in argv[1:]:
        if arg == "-h" or (arg.startswith("-") and not arg.startswith("--")
                           and "h" in arg[1:]):
            return False
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if not name or any(option.startswith(name) for option in _OTHER_DEVICE):
                return False
    return True


def open_device_ahead(argv: Sequence[str]) -> bool:
    """Begin opening the default device when `argv` will want it (`wants_default_device`);
    True when an opening began."""
    if not wants_default_device(argv):
        return False
    import gpucore

    return gpucore.open_default_device_ahead()
