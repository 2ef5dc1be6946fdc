"""Interrogation: text for a picture, as the WebUI's Interrogate buttons and
/sdapi/v1/interrogate make it. DeepDanbooru's tags (`deepbooru`) from the WebUI's
`model-resnet_custom_v3.pt`; the CLIP interrogator (`clip`): BLIP's caption (`blip`, from
Salesforce's `model_base_caption_capfilt_large.pth`) and the ranked terms of the WebUI's term
lists by a transformers CLIPModel.
"""

from .blip import BLIP_OPTIONS, BlipCaptioner, check_blip_options
from .clip import CLIP_OPTIONS, ClipInterrogator, check_clip_options
from .deepbooru import (
    DEEPBOORU_OPTIONS,
    DeepBooru,
    InterrogateModelError,
    check_options,
    format_tags,
)

__all__ = ["BLIP_OPTIONS", "CLIP_OPTIONS", "DEEPBOORU_OPTIONS", "BlipCaptioner",
           "ClipInterrogator", "DeepBooru", "InterrogateModelError", "check_blip_options",
           "check_clip_options", "check_options", "format_tags"]
