"""Interrogation: text for a picture, as the WebUI's Interrogate buttons and
/sdapi/v1/interrogate make it. DeepDanbooru's tags (`deepbooru`) from the WebUI's
`model-resnet_custom_v3.pt`.
"""

from .deepbooru import (
    DEEPBOORU_OPTIONS,
    DeepBooru,
    InterrogateModelError,
    check_options,
    format_tags,
)

__all__ = ["DEEPBOORU_OPTIONS", "DeepBooru", "InterrogateModelError", "check_options",
           "format_tags"]
