"""Qwen-Image-Edit-2509 and later, as diffusers' QwenImageEditPlusPipeline draws them: one or
several reference pictures. Each is read by Qwen2.5-VL at about 384 x 384 pixels ("Picture 1:
<picture> Picture 2: <picture> ..." before the instruction, in a template without its own
image slot) and encoded by the VAE at about a megapixel, its latent tokens after the noise
tokens at rotary frames 1, 2, ...; the picture is drawn at the last reference's size by
default. Everything else is QwenImageEditPipeline's.

    pipe = QwenImageEditPlusPipeline.from_pretrained("Qwen-Image-Edit-2509")
    images = pipe("put the hat of picture 2 on the cat of picture 1", image=[cat, hat],
                  negative_prompt=" ", true_cfg_scale=4.0, seed=7)
"""

from __future__ import annotations

from typing import Any

from ...imaging import see_through_picture
from .qwen_image_edit import QwenImageEditPipeline, reference_dimensions, reference_resize

__all__ = ["CONDITION_AREA", "PLUS_TEMPLATE", "QwenImageEditPlusPipeline"]

PLUS_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, "
    "texture, objects, background), then explain how the user's text instruction should alter "
    "or modify the image. Generate a new image that meets the user's requirements while "
    "maintaining consistency with the original input where appropriate.<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
PICTURE_SLOT = "Picture {}: <|vision_start|><|image_pad|><|vision_end|>"
CONDITION_AREA = 384 * 384  # the pixels Qwen2.5-VL reads each picture at, as diffusers'


class QwenImageEditPlusPipeline(QwenImageEditPipeline):
    """QwenImageEditPipeline with several references (`image` a picture or a list)."""

    condition_area: int = CONDITION_AREA

    def pictures(self, image: Any) -> tuple[list[Any], list[tuple[Any, int, int]]]:
        """Each reference resized (Lanczos) to `condition_area` for Qwen2.5-VL, and to
        `reference_area` for the VAE (`reference_resize`: transparency over white)."""
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if not images:
            raise ValueError("Qwen-Image-Edit Plus needs at least one reference picture")
        read, encoded = [], []
        for one in images:
            picture = see_through_picture(one, "a reference picture")
            width, height = picture.size
            read.append(reference_resize(picture, reference_dimensions(
                width, height, area=self.condition_area)))
            size = reference_dimensions(width, height, area=self.reference_area)
            encoded.append((reference_resize(picture, size), *size))
        return read, encoded

    def prompt_text(self, prompt: str, count: int) -> str:
        return PLUS_TEMPLATE.format(
            "".join(PICTURE_SLOT.format(k + 1) for k in range(count)) + prompt)

    def edit_size(self, image: Any) -> tuple[int, int]:
        """The last reference's size at `reference_area`, in whole latent patches."""
        last = image[-1] if isinstance(image, (list, tuple)) else image
        return super().edit_size(last)
