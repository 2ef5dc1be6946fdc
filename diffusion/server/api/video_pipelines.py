"""The video models a server worker keeps loaded (POST /avx/txt2vid and /avx/img2vid): one per
worker's device, loaded on its first request in the server's memory mode, replaced when a
request names another, dropped by unload-checkpoint (`forget_models`). Each family's folder
loads through its own pipeline class, as `txt2vid --model FOLDER` does (cli.txt2vid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...loaders.cosmos import cosmos_family
from ...loaders.helios import helios_family
from ...loaders.hunyuan_video.folder import hunyuan_video_family
from ...loaders.hunyuan_video15.folder import hunyuan_video15_family
from ...loaders.kandinsky5 import kandinsky5_video_family
from ...loaders.ltx2.folder import ltx2_family
from ...loaders.motif_video import motif_video_family
from ...loaders.sana.video import sana_video_family
from ...loaders.wan import WanFiles, wan_family
from ...pipelines.sd.memory import MemoryMode

__all__ = ["forget_models", "video_pipeline"]

# a worker's device (its id) -> its video model (folder, files), the memory mode it runs in,
# and its pipeline
_loaded: dict[int, tuple[tuple[Path, WanFiles, MemoryMode | None], Any]] = {}


def forget_models() -> None:
    """Drop the video models this process's workers keep (unload-checkpoint)."""
    _loaded.clear()


def _load(folder: Path, files: WanFiles, memory: MemoryMode | None, device: Any) -> Any:
    """The pipeline of the video model at `folder` (with `files` in place of a Wan folder's
    parts) on `device`, each network straight to host memory in a `memory` mode."""
    from ...loaders.wan.sources import is_wan_animate
    from ...pipelines.video import LucyEditPipeline, WanAnimatePipeline, WanPipeline
    from ...pipelines.video.skyreels_v2_df import SkyReelsV2DiffusionForcingPipeline

    offload = bool(memory)
    if kandinsky5_video_family(folder):
        from ...pipelines.video.kandinsky5 import Kandinsky5VideoPipeline

        return Kandinsky5VideoPipeline.from_pretrained(folder, device=device, offload=offload)
    if hunyuan_video15_family(folder):
        from ...pipelines.video.hunyuan_video15 import HunyuanVideo15Pipeline

        return HunyuanVideo15Pipeline.from_pretrained(folder, device=device, offload=offload)
    if hunyuan_video_family(folder):
        from ...pipelines.video.hunyuan_video_i2v import hunyuan_video_class

        return hunyuan_video_class(folder).from_pretrained(folder, device=device,
                                                           offload=offload)
    if ltx2_family(folder):
        from ...pipelines.video.ltx2 import LTX2Pipeline

        return LTX2Pipeline.from_pretrained(folder, device=device, offload=offload)
    if helios_family(folder):
        from ...pipelines.video.helios import HeliosPipeline

        return HeliosPipeline.from_pretrained(folder, device=device, offload=offload)
    if motif_video_family(folder):
        from ...pipelines.video.motif_video import MotifVideoPipeline

        return MotifVideoPipeline.from_pretrained(folder, device=device, offload=offload)
    # the families without memory modes (their refusals turn a server's mode away first)
    if cosmos_family(folder) == "cosmos25":
        from ...pipelines.video.cosmos25 import Cosmos25PredictPipeline

        return Cosmos25PredictPipeline.from_pretrained(folder, device=device)
    if cosmos_family(folder) == "cosmos2-v2w":
        from ...pipelines.video.cosmos2_video2world import Cosmos2VideoToWorldPipeline

        return Cosmos2VideoToWorldPipeline.from_pretrained(folder, device=device)
    if sana_video_family(folder):
        from ...pipelines.video.sana_video import SanaVideoPipeline

        return SanaVideoPipeline.from_pretrained(folder, device=device)
    network = WanAnimatePipeline if is_wan_animate(folder, files) else \
        SkyReelsV2DiffusionForcingPipeline if wan_family(folder) == "skyreels-v2-df" \
        else LucyEditPipeline if wan_family(folder) == "lucy-edit" else WanPipeline
    return network.from_pretrained(folder, device=device, files=files, offload=offload)


def video_pipeline(model: tuple[Path, WanFiles], memory: MemoryMode | None, device: Any,
                   no_half_vae: bool = False) -> Any:
    """The worker's pipeline for `model` (a folder and the files in place of its parts) in
    the `memory` mode (each network loaded straight to host memory), its VAE float32 with
    `no_half_vae` (the server's --no-half-vae; the families loaded in float32 alone have no
    half VAE to change), loaded on first use (another model replaces it)."""
    key, wanted = id(device), (*model, memory)
    if key not in _loaded or _loaded[key][0] != wanted:
        _loaded.pop(key, None)
        pipe = _load(*model, memory, device)
        if memory:
            pipe.set_memory_mode(memory)
        if no_half_vae and hasattr(pipe, "use_float32_vae"):
            pipe.use_float32_vae()
        _loaded[key] = (wanted, pipe)
    return _loaded[key][1]
