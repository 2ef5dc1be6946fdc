"""`python -m diffusion cache [info|clear]`: the cache directory that makes a second cold start
fast (gpucore's: the autotuner's choices and the drivers' compiled kernels; nothing in it is
needed for a correct picture). Not the generation commands' step caching."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `cache` sub-command to `python -m diffusion`'s sub-parsers."""
    text = ("show or clear the on-disk cache of compiled kernels and tuning choices "
            "($AVX_GPU_CACHE_DIR, else $XDG_CACHE_HOME/avx-gpu or ~/.cache/avx-gpu)")
    sub = subparsers.add_parser("cache", help=text, description=text)
    sub.add_argument("action", nargs="?", choices=("info", "clear"), default="info",
                     help="info: where it is and what it holds (the default); clear: delete "
                          "it, so that the next start is cold")
    sub.set_defaults(run=run)
    return sub


def run(args: argparse.Namespace) -> int:
    from gpucore import _cache

    where = _cache.cache_dir()
    if args.action == "clear":
        freed = _cache.clear()
        print(f"cleared {where} ({freed / 2**20:.1f} MiB)")
        return 0
    parts = _cache.usage() if where.is_dir() else {}
    shown = ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in parts.items())
    print(f"{where}: {shown or 'empty'} (own files capped at "
          f"{_cache.size_limit() / 2**20:.0f} MiB, ${_cache.MAX_ENV})")
    return 0
