#!/usr/bin/env bash
# Sets up avx-gpu on this machine: a Vulkan driver if wgpu sees no Vulkan adapter (Linux),
# the virtual environment .venv, and the package with the extras named in AVX_EXTRAS.
# Idempotent; sourced by scripts/run and scripts/test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
extras=${AVX_EXTRAS:-test}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$extras
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi

has_vulkan() { .venv/bin/python -m gpucore info --check vulkan >/dev/null 2>&1; }
if [ "$(uname -s)" = Linux ] && ! has_vulkan; then
  echo "setup: no Vulkan adapter found; installing Mesa's Vulkan driver (lavapipe) with apt" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 >/dev/null
  has_vulkan || { echo "setup: still no Vulkan adapter; see README 'No GPU driver'" >&2; exit 1; }
fi
