"""LTX-2's row of bench/dit_families.py: its audio-video transformer's step (LTX-2.0, 19B: 48
blocks, video 4096 wide, audio 2048) for LTX2Pipeline's default video, 768 x 512 pixels and
121 frames at 24 fps (16 x 16 x 24 latents: 6144 video tokens) with its 5 s of audio (126
audio latents), each stream's prompt the text connectors' 1024 tokens (their registers fill
what the prompt leaves: no padding, an all-ones mask), one CFG pass.

Both sides as LTX2Pipeline calls the transformer: the connectors' 3840-wide states for each
stream, the caption projections inside the step. The row's output and rel_err are the video
velocity's (the audio's is made in the same call).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dit_models import LTX2, Model

NAMES = ("ltx2",)
GRID = (16, 16, 24)  # 121 frames of 512 x 768 through the VAE's 8 x 32 x 32
AUDIO, TEXT = 126, 1024  # round(121 / 24 * 16000 / 160 / 4); the connectors' length


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Random inputs of the row (a numpy array each): both streams' tokens and prompts."""
    rng = np.random.default_rng(0)
    grid, audio, text = ((2, 3, 5), 7, 9) if quick else (GRID, AUDIO, TEXT)
    tokens = grid[0] * grid[1] * grid[2]
    width = config["caption_channels"]
    return {"latents": rng.standard_normal((1, tokens, config["in_channels"])),
            "audio": rng.standard_normal((1, audio, config["audio_in_channels"])),
            "text": rng.standard_normal((1, text, width)),
            "audio_text": rng.standard_normal((1, text, width)),
            "mask": np.ones((1, text)),  # as the pipeline's connectors return it
            # exact in bf16 and float16: each side rounds the timestep to its dtype
            "t": np.array([500.0]), "rows": np.array(grid)}


def model(name: str) -> Model:
    """The model table's line for the row."""
    import gpustd
    from diffusion.models.ltx2 import LTX2VideoTransformer3DModel

    def shape(x: dict[str, Any]) -> dict[str, Any]:
        frames, height, width = (int(v) for v in x["rows"])
        return {"num_frames": frames, "height": height, "width": width, "fps": 24.0,
                "audio_num_frames": int(np.asarray(x["audio"]).shape[1])}

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        return ref(hidden_states=t["latents"], audio_hidden_states=t["audio"],
                   encoder_hidden_states=t["text"], audio_encoder_hidden_states=t["audio_text"],
                   timestep=t["t"], sigma=t["t"], encoder_attention_mask=t["mask"],
                   audio_encoder_attention_mask=t["mask"], return_dict=False, **shape(x))[0]

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        def up(key: str) -> Any:
            return gpustd.asarray(x[key], dtype=dtype, device=ours.device)
        return ours(up("latents"), up("audio"), up("text"), up("audio_text"), x["t"],
                    sigma=x["t"], encoder_attention_mask=x["mask"],
                    audio_encoder_attention_mask=x["mask"], **shape(x))[0]

    return Model(LTX2, lambda d, t, c: d.LTX2VideoTransformer3DModel(**c), ref_call,
                 lambda c, dt, dev: LTX2VideoTransformer3DModel(c, dtype=dt, device=dev),
                 call)
