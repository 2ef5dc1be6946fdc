"""Loading streams: tensors go from the safetensors file to their GPU buffers one at a time
(cast on the way), so the process peaks at the weights' size plus one tensor and wgpu's
staging budget, never at twice the weights (measured as peak RSS in a fresh process: on
lavapipe GPU memory is host memory, so RSS sees the buffers, wgpu's staging copies and the
host arrays alike)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ADAPTERS, checkout_env

LAYERS, WIDTH = 40, 1024  # 40 float32 matrices of 4 MiB: 160 MiB of weights, 2 MiB stored
STAGING = 64 << 20  # gpucore._staging.STAGING_LIMIT

_SCRIPT = """
import json, resource, sys
import numpy as np
import gpucore
from gpustd import nn
from diffusion.loaders import SafetensorsFile
from diffusion.loaders.weights import ComponentWeights, TensorRef

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

class Stack(nn.Module):
    def __init__(self, layers, width, device):
        self.layers = nn.ModuleList([nn.Linear(width, width, bias=False, device=device)
                                     for _ in range(layers)])

device = gpucore.Device(next(a for a in gpucore.devices() if a.index == int(sys.argv[3])))
file = SafetensorsFile(sys.argv[1])
refs = {k: TensorRef(file, k, file.shape(k)) for k in file.keys()}
weights = ComponentWeights("stack", {}, refs, dtype=np.dtype(np.float32))
model = Stack(int(sys.argv[2]), file.shape(file.keys()[0])[0], device)
device.synchronize()
before = rss()
# ru_maxrss also remembers peaks before the load (imports): only a peak above this one is the
# load's
earlier = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model.load_state_dict(weights)
device.synchronize()  # the uploads land: buffers and any staging copies left are both live
high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak = high if high > earlier else rss()  # the load's own peak, or (below) where it ended
first = model.layers[0].weight.numpy()[:2, :4].tolist()
print(json.dumps({"before": before, "peak": peak, "first": first}))
"""


def test_loading_peaks_at_the_weights_plus_one_tensor(tmp_path) -> None:
    if not ADAPTERS:
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    # float16 on disk, float32 on the GPU: the cast happens per tensor on the way.
    rng = np.random.default_rng(0)
    one = rng.standard_normal((WIDTH, WIDTH)).astype(np.float16)
    path = tmp_path / "stack.safetensors"
    safetensors_numpy.save_file({f"layers.{i}.weight": one for i in range(LAYERS)}, str(path))
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(LAYERS),
                           str(ADAPTERS[0].index)], env=checkout_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(out["first"], one[:2, :4].astype(np.float32))
    weights = LAYERS * WIDTH * WIDTH * 4
    tensor = WIDTH * WIDTH * (4 + 2)  # the float16 read and its float32 cast
    grew = out["peak"] - out["before"]
    # ~10% for the allocator's and the driver's own bookkeeping
    bound = 1.1 * weights + STAGING + 2 * tensor
    assert grew <= bound, (f"loading {weights / 2**20:.0f} MiB of weights grew the process by "
                           f"{grew / 2**20:.0f} MiB at its peak (bound {bound / 2**20:.0f} MiB)")
