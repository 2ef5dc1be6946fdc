"""Interrogation: text for a picture, as the WebUI's Interrogate buttons and
/sdapi/v1/interrogate make it. DeepDanbooru's tags (`deepbooru`) from the WebUI's
`model-resnet_custom_v3.pt`; the CLIP interrogator's ranked terms (`clip`) from a
transformers CLIPModel and the WebUI's term lists.
"""

from .clip import CLIP_OPTIONS, ClipInterrogator, check_clip_options
from .deepbooru import (
    DEEPBOORU_OPTIONS,
    DeepBooru,
    InterrogateModelError,
    check_options,
    format_tags,
)

__all__ = ["CLIP_OPTIONS", "DEEPBOORU_OPTIONS", "ClipInterrogator", "DeepBooru",
           "InterrogateModelError", "check_clip_options", "check_options", "format_tags"]
