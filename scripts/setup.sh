#!/usr/bin/env bash
# Sets up avx-gpu on this machine: a Vulkan driver if wgpu sees no Vulkan adapter (Linux),
# the virtual environment .venv, the package with the extras named in AVX_EXTRAS, and Debian's
# chromium for the browser test when the extras include "test".
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
# k-diffusion, a test reference for the samplers, declares its whole training stack as
# dependencies (torchvision among them, which would replace the pinned CPU torch); the modules the
# tests load (tests/kdiffusion_ref.py) need only these, so they are installed without dependencies.
# spandrel, the upscalers' reference, likewise needs torchvision (whose only wheel for this torch
# is a CUDA build that cannot load beside the CPU torch): the tests stub the two architectures'
# torchvision imports they never run (tests/diffusion/upscalers/test_model_upscalers.py).
# controlnet_aux, the model-based preprocessors' reference, imports all its detectors' stacks
# (timm, torchvision, mediapipe) from its package __init__; tests/controlnet_aux_ref.py loads
# only the detectors the tests compare with, which need torch, cv2 and einops.
# The face restoration tests' references (spandrel_extra_arches' CodeFormer, facexlib's RetinaFace,
# parsing net and FaceRestoreHelper) too: tests/face_refs.py stands in for what they use of it.
# ultralytics, the YOLO detectors' reference, is installed the same way (tests/yolo_tiny.py).
install_kdiffusion() {
  case ",$extras," in
    *,reference,*) .venv/bin/python -m pip install -q --no-compile --no-deps k-diffusion==0.1.1.post1 \
                     torchsde==0.2.6 torchdiffeq==0.2.5 trampoline==0.1.2 "tqdm>=4.60" \
                     spandrel==0.4.2 einops==0.8.2 controlnet-aux==0.0.10 \
                     spandrel_extra_arches==0.2.0 facexlib==0.3.0 \
                     ultralytics==8.3.40 ultralytics-thop==2.2.3 py-cpuinfo==9.0.0 ;;
  esac
}
# The test extras bring ~22,000 Python modules (torch, ray, transformers, ...) of which the
# tests import a fraction: pip's byte-compiling them all, one at a time, was half of a fresh
# set-up on 2 cores (181 s against 89 s without). With those extras nothing is compiled ahead:
# Python writes a module's bytecode when a process first imports it (atomically, so concurrent
# test processes are safe).
nocompile=""
case ",$extras," in *,reference,*) nocompile="--no-compile" ;; esac
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  # pip's log is shown only when it fails: setuptools warns on every editable install.
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q $nocompile -e ".[$extras]" &&
         install_kdiffusion; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "setup: pip could not install the package (log above, also in .venv/install.log)" >&2
    exit 1
  fi
  touch "$stamp"
fi

sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
apt_updated=""
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$apt_updated" ] || { $sudo apt-get update -qq; apt_updated=1; }
  $sudo apt-get install -y -qq "$@" >/dev/null
}

has_vulkan() { .venv/bin/python -m gpucore info --check vulkan >/dev/null 2>&1; }
if [ "$(uname -s)" = Linux ] && ! has_vulkan; then
  echo "setup: no Vulkan adapter found; installing Mesa's Vulkan driver (lavapipe) with apt" >&2
  apt_install mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0
  has_vulkan || { echo "setup: still no Vulkan adapter; see README 'No GPU driver'" >&2; exit 1; }
fi

# The browser test drives Debian's chromium through Playwright (which cannot download browsers
# here); where apt is missing the test skips and says why.
case ",$extras," in
  *,test,*)
    if [ "$(uname -s)" = Linux ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
      echo "setup: installing Debian's chromium for the browser test" >&2
      apt_install chromium || echo "setup: could not install chromium; the browser test will skip" >&2
    fi ;;
esac
