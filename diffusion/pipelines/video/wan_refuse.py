"""What a Wan model does not take, in one line each, from what its folder says it is (a
second expert, timesteps per token): `WanPipeline.__call__` refuses with these, and the
command line before the weights load (`wan_refusals_of`: the folder's model_index.json)."""

from __future__ import annotations

import os

from ...loaders.wan.folder import wan_layout

__all__ = ["refuse_wan", "wan_refusals_of"]


def refuse_wan(*, second_expert: bool, expand_timesteps: bool, cache_kind: str | None,
               guidance_scale_2: float | None) -> None:
    """ValueError in one line for TeaCache on Wan 2.2 (its tables are Wan 2.1's) or a second
    guidance scale without Wan 2.2 A14B's second expert; nothing otherwise."""
    if cache_kind in ("teacache", "teacache-ret") and (expand_timesteps or second_expert):
        raise ValueError("TeaCache's Wan tables are Wan 2.1's; for Wan 2.2 use First Block "
                         "Cache (fbc:0.12)")
    if guidance_scale_2 is not None and not second_expert:
        raise ValueError("a second guidance scale is for Wan 2.2 A14B's low-noise expert; "
                         "this Wan model has one transformer")


def wan_refusals_of(folder: str | os.PathLike[str], *, model_2: bool, cache_kind: str | None,
                    guidance_scale_2: float | None) -> None:
    """`refuse_wan` for the Wan folder `folder` before it loads, `model_2`: a low-noise
    expert's file given beside it (its second expert as the loaded pipeline's)."""
    listed, expand_timesteps = wan_layout(folder)
    refuse_wan(second_expert=listed or model_2, expand_timesteps=expand_timesteps,
               cache_kind=cache_kind, guidance_scale_2=guidance_scale_2)
