"""Qwen-Image-Layered, as diffusers' QwenImageLayeredPipeline draws it: a picture decomposed
into `layers` RGBA pictures. The picture, with its alpha (an RGB one opaque), is resized
(Lanczos) to about `resolution`^2 pixels in whole 32-pixel steps, and its VAE mean (the
folder's VAE reads and writes 4 channels) rides packed after the noise tokens in every
transformer call, at rotary frame -1. The noise is layers + 1 frames (the first the whole
picture again, the rest the layers: frames 0, 1, ...), packed one after the other; only
their prediction is kept. The prompt is read as Qwen-Image's (its describe-the-image
template); the timestep's embedding gets the transformer's RGBA row (diffusers' `is_rgb`
0). The schedule's shift is `mu = sqrt(picture tokens / 256)`. True CFG (`neg + g * (pos -
neg)`) for `true_cfg_scale` g > 1 with a negative prompt, rescaled to the positive
prediction's norm per token only with `cfg_normalize`. The frames after the first are
decoded: the layers, each (H, W, 4) in [0, 1].

diffusers captions the picture with Qwen2.5-VL when no prompt is given; here a prompt is
required (this package has no Qwen2.5-VL text generation).

    pipe = QwenImageLayeredPipeline.from_pretrained("Qwen-Image-Layered")
    layers = pipe(picture, "a cat on a sofa in a living room", layers=4, seed=7,
                  negative_prompt=" ")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from gpustd import Tensor, asarray

from ...imaging import see_through_picture
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from .flow_replay import mask_key
from .qwen_image import QwenImagePipeline, pack, true_cfg, unpack
from .qwen_image_edit import reference_dimensions
from .start import StepCallback, check_call, flow_schedule

__all__ = ["LAYERED_RESOLUTIONS", "QwenImageLayeredPipeline"]

LAYERED_RESOLUTIONS = (640, 1024)  # diffusers' buckets; 640 is the one the model card names


class QwenImageLayeredPipeline(QwenImagePipeline):
    """Qwen-Image-Layered on gpustd: QwenImagePipeline's parts (from_pretrained loads a
    QwenImageLayeredPipeline folder), its transformer the layered variant and its VAE
    4-channel. `areas`: the pixels each resolution's picture is resized to (diffusers'
    `resolution * resolution`)."""

    areas: ClassVar[dict[int, int]] = {r: r * r for r in LAYERED_RESOLUTIONS}

    def picture_latents(self, image: Any, resolution: int) -> np.ndarray:
        """The picture (PIL, or HxWx3 / HxWx4 uint8) as RGBA, resized (Lanczos, colours
        weighted by alpha as Pillow resizes RGBA) to `reference_dimensions` of the
        resolution's area, as its normalized VAE mean (1, C, h, w). diffusers: the call's
        `image_processor.resize` / `preprocess`, then `_encode_vae_image(sample_mode=
        "argmax")`."""
        from PIL import Image

        channels = int(self.vae.config["input_channels"])
        if channels != 4:
            raise ValueError(f"this VAE reads {channels}-channel pictures; Qwen-Image-Layered's "
                             "reads RGBA (input_channels 4): give a Qwen-Image-Layered folder")
        picture = see_through_picture(image, "the picture to decompose").convert("RGBA")
        width, height = picture.size
        size = reference_dimensions(width, height, area=self.areas[resolution])
        if picture.size != size:
            picture = picture.resize(size, Image.Resampling.LANCZOS)
        pixels = np.asarray(picture, np.float32) / 127.5 - 1.0
        return self.encode_image(pixels.transpose(2, 0, 1)[None], None)

    def velocity(self, prompt: str, condition: np.ndarray, frames: int, *,  # type: ignore[override]
                 true_cfg_scale: float, negative_prompt: str | None, cfg_normalize: bool,
                 max_sequence_length: int) -> Any:
        """The model as `flow(x, t)`: x (1, frames, C, h, w) float32 latents beside the
        picture's `condition` (1, C, h, w), t the scheduler's timestep (0..1000)."""
        positive = self.encode_prompt([prompt], max_sequence_length)
        negative = None
        if true_cfg_scale > 1 and negative_prompt is not None:
            negative = self.encode_prompt([negative_prompt], max_sequence_length)
        _, _, h, w = condition.shape
        grid = (h // 2, w // 2)
        references = [grid] * frames  # the frames after the first, then the picture's
        tokens = frames * grid[0] * grid[1]
        after = pack(condition)
        dtype, device = self.transformer.dtype, self.transformer.device
        rgba = (0,)  # diffusers' is_rgb: 0, the layers are RGBA
        # replayed (flow_replay): the picture's tokens are part of the packed input
        step = self.replayed_step((positive, negative), grid, references)
        assert step is not None

        def predict(packed: Tensor, t: np.ndarray, text: tuple[Tensor, Any]) -> np.ndarray:
            out = step(packed, text[0], asarray(t, device=device), *grid, mask_key(text[1]),
                       tuple(references), rgba)
            return out.numpy().astype(np.float32)[:, :tokens]

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.full(1, np.float32(t) / np.float32(1000), np.float32)
            noise = pack(x.reshape(frames, *x.shape[2:])).reshape(1, tokens, -1)
            packed = asarray(np.concatenate([noise, after], axis=1), dtype=dtype, device=device)
            pred = predict(packed, timestep, positive)
            if negative is not None:
                other = predict(packed, timestep, negative)
                pred = true_cfg(pred, other, true_cfg_scale) if cfg_normalize else (
                    other + np.float32(true_cfg_scale) * (pred - other))
            return unpack(pred.reshape(frames, -1, pred.shape[-1]), h, w)[None]

        return flow

    def __call__(self, image: Any, prompt: str | Sequence[str], *,  # type: ignore[override]
                 layers: int = 4, resolution: int = 640, num_inference_steps: int = 50,
                 true_cfg_scale: float = 4.0, negative_prompt: str | None = None,
                 cfg_normalize: bool = False, seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 512, latents: np.ndarray | None = None,
                 callback: StepCallback | None = None, output_type: str = "np"
                 ) -> np.ndarray:
        """The `layers` RGBA layers of `image` (PIL or HxWx3 / HxWx4 uint8) described by
        `prompt`: (layers, H, W, 4) floats in [0, 1] ("np"), or the final latents (1,
        layers + 1, C, h, w) ("latent"). diffusers: `QwenImageLayeredPipeline(image, prompt,
        negative_prompt=, true_cfg_scale=, layers=, resolution=, cfg_normalize=,
        num_inference_steps=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images[0]`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        if len(prompts) != 1 or not prompts[0].strip():
            raise ValueError("Qwen-Image-Layered needs one prompt describing the picture "
                             "(diffusers captions it with Qwen2.5-VL, which is not supported "
                             "here): give --prompt")
        if resolution not in LAYERED_RESOLUTIONS:
            raise ValueError(f"resolution must be one of {LAYERED_RESOLUTIONS} (the model's "
                             f"buckets), got {resolution}")
        if not 1 <= layers <= 64:
            raise ValueError(f"layers must be from 1 to 64, got {layers}")
        # 1. the picture's latents; the schedule, shifted by its size
        condition = self.picture_latents(image, resolution)
        _, channels, h, w = condition.shape
        mu = float(np.sqrt((h // 2) * (w // 2) / 256))
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 2. the start: noise for the picture and each layer (diffusers' (B, layers + 1, C,
        # h, w) draw)
        shape = (1, layers + 1, channels, h, w)
        if latents is None:
            latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must be {shape}, got {tuple(latents.shape)}")
        flow = self.velocity(prompts[0], condition, layers + 1, true_cfg_scale=true_cfg_scale,
                             negative_prompt=negative_prompt, cfg_normalize=cfg_normalize,
                             max_sequence_length=max_sequence_length)
        # 3. Euler steps along the flow; the layers (not the first frame) decoded
        x = scheduler_loop(np.asarray(latents, np.float32), scheduler.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           callback=callback)
        return x if output_type == "latent" else self.decode(x[0, 1:])
