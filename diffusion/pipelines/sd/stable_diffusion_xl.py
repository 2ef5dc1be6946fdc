"""SDXL's text conditioning: two text encoders, the pooled embedding, micro-conditioning.

Two ways, as the two families of samplers expect them:

- diffusers (`sampler="diffusers"`; `StableDiffusionXLPipeline.encode_prompt`): each prompt is
  cut to 77 tokens by each tokenizer; the hidden states before each encoder's last layer
  (`hidden_states[-2]`: no final layer norm; `clip_skip` skips that many more) are joined along
  the features (CLIP-L 768 + OpenCLIP-G 1280 = 2048); the pooled embedding is the last
  encoder's projected pooled output. An empty negative prompt is zeros where the model says
  `force_zeros_for_empty_prompt` (diffusers' `negative_prompt=None`: our "" means no negative
  prompt), else the encoding of "".
- WebUI (every other sampler; `sd_hijack_clip` on sgm's `GeneralConditioner`): each encoder
  reads the prompt as `conditioning` does (emphasis, 75-token chunks, BREAK, prompt editing,
  its own pad token), the chunks' hidden states joined along the features; the pooled
  embedding is the last encoder's from the first chunk; an empty negative prompt is zeros
  (hidden and pooled: sgm's `force_zero_embeddings`). The WebUI applies no Clip skip to SDXL
  (its `sdxl_clip_l_skip` is off by default), so neither do we.

Both ways each encoder's transformer is replayed from a capture kept by the pipeline (recorded
on its first prompt, as StableDiffusion's one text encoder; the token lookup stays eager), but
under a memory mode, where the encoders leave the GPU and run eagerly.

Micro-conditioning (`time_ids`), both ways: original size = target size = (height, width) of
the picture being made, crop top-left (0, 0) (diffusers' defaults, the WebUI's `sdxl_crop_top`
/ `sdxl_crop_left`); the refiner instead takes original size, crop and an aesthetic score,
6.0 for the prompt and 2.5 for the negative prompt (both programs' defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpustd import Tensor, asarray

from ...models import CLIPTextModel
from ...text import conditioning
from ...text.embeddings import ENCODER_KEYS, EncoderFinders
from ...text.emphasis_mode import current_emphasis
from ...text.prompts import parse_prompt
from ...text.tokenizer import CLIPTokenizer
from .capture import ModelCapture
from .guided_unet import AddedContext
from .stable_diffusion import StableDiffusion

# each encoder's `encode_tokens` as it runs (a capture's replay, or None: the encoder's own)
Runs = Sequence[Any] | None

__all__ = ["AESTHETIC_SCORES", "SDXL_FAMILIES", "StableDiffusionXL", "TextEncoders", "XLSchedule",
           "diffusers_context", "time_ids", "webui_schedule"]

SDXL_FAMILIES = ("sdxl", "sdxl-refiner")
AESTHETIC_SCORES = (6.0, 2.5)  # the refiner's (prompt, negative prompt) aesthetic scores


@dataclass
class TextEncoders:
    """An SDXL model's (tokenizer, text encoder) pairs, the pooled embedding coming from the
    last: CLIP-L and OpenCLIP-G for the base, OpenCLIP-G alone for the refiner."""

    tokenizers: list[CLIPTokenizer]
    encoders: list[Any]
    refiner: bool = False
    force_zeros_for_empty_prompt: bool = True

    @property
    def keys(self) -> tuple[str, ...]:
        """Each encoder's key in an SDXL embedding file (its textual-inversion vectors)."""
        return ENCODER_KEYS[-len(self.encoders):]

    @property
    def place(self) -> tuple[Any, Any]:
        """(device, dtype) of the encoders' weights, where their outputs live."""
        weight = self.encoders[-1].final_layer_norm.weight
        return weight.device, weight.dtype


class _BeforeLastLayer:
    """An encoder as `conditioning` calls it, giving the hidden states before its last layer
    without the final norm; `pooled=True` also keeps the pooled output of the last call."""

    def __init__(self, encoder: Any, pooled: bool, encode_tokens: Any = None) -> None:
        self.encoder, self.pooled, self.encode_tokens = encoder, pooled, encode_tokens
        self.last_pooled: np.ndarray | None = None

    def __call__(self, input_ids: Any, *, clip_skip: int = 0, embeddings: Any = None) -> Tensor:
        kwargs: dict[str, Any] = {"clip_skip": clip_skip + 1, "final_norm": False,
                                  "encode_tokens": self.encode_tokens}
        if embeddings is not None:
            kwargs["embeddings"] = embeddings
        if not self.pooled:
            return self.encoder(input_ids, **kwargs)
        hidden, pooled = self.encoder.forward_pooled(input_ids, **kwargs)
        self.last_pooled = np.asarray(pooled.numpy(), np.float32)
        return hidden


def time_ids(width: int, height: int, *, refiner: bool, negative: bool = False) -> np.ndarray:
    """The micro-conditioning of one picture, float32: (h, w, 0, 0, h, w) for the base,
    (h, w, 0, 0, aesthetic score) for the refiner."""
    if refiner:
        return np.array([height, width, 0, 0, AESTHETIC_SCORES[int(negative)]], np.float32)
    return np.array([height, width, 0, 0, height, width], np.float32)


def _upload(array: np.ndarray, device: Any, dtype: Any) -> Tensor:
    tensor = asarray(np.ascontiguousarray(array, np.float32), device=device)
    return tensor if tensor.dtype == dtype else tensor.astype(dtype)


def diffusers_context(enc: TextEncoders, prompts: Sequence[str], ids: np.ndarray, *,
                      clip_skip: int = 0, zeros: bool = False, runs: Runs = None
                      ) -> AddedContext:
    """diffusers' SDXL conditioning of `prompts` (B,), with micro-conditioning `ids` (n,):
    `zeros` for the empty negative prompt of a `force_zeros_for_empty_prompt` model."""
    hidden, pooled = [], None
    for i, (tokenizer, encoder) in enumerate(zip(enc.tokenizers, enc.encoders)):
        wrapped = _BeforeLastLayer(encoder, pooled=i == len(enc.encoders) - 1,
                                   encode_tokens=None if runs is None else runs[i])
        hidden.append(np.asarray(wrapped(tokenizer(list(prompts)), clip_skip=clip_skip).numpy(),
                                 np.float32))
        pooled = wrapped.last_pooled
    joined = np.concatenate(hidden, axis=-1)
    assert pooled is not None
    if zeros:
        joined, pooled = np.zeros_like(joined), np.zeros_like(pooled)
    device, dtype = enc.place
    return AddedContext(_upload(joined, device, dtype), _upload(pooled, device, dtype),
                        np.repeat(ids[None], len(prompts), 0))


@dataclass
class XLSchedule:
    """The WebUI's SDXL conditioning of a batch at every step: `hidden` the joined hidden
    states (a ConditioningSchedule), `pooled` the pooled embeddings in the same layout (one
    (1, P) "token" per entry), `ids` the micro-conditioning (n,) of every item."""

    hidden: conditioning.ConditioningSchedule
    pooled: conditioning.ConditioningSchedule
    ids: np.ndarray
    _made: dict[tuple[int, ...], AddedContext] = field(default_factory=dict, repr=False)

    def at(self, step: int) -> AddedContext:
        key = self.hidden._indices(step)
        if key not in self._made:
            pooled = self.pooled.array_at(step)[:, 0]
            self._made[key] = AddedContext(
                self.hidden.at(step), _upload(pooled, self.hidden.device, self.hidden.dtype),
                np.repeat(self.ids[None], len(pooled), 0))
        return self._made[key]


def _encode_texts(enc: TextEncoders, texts: list[str], emphasis: str, runs: Runs = None,
                  embeddings: EncoderFinders | None = None
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """text -> ((77 * k, D) joined hidden states, (1, P) pooled) as the WebUI encodes them;
    `embeddings`: each encoder's textual-inversion finder, by its key."""
    hidden: list[list[np.ndarray]] = []
    pooled: np.ndarray | None = None
    for i, (tokenizer, encoder) in enumerate(zip(enc.tokenizers, enc.encoders)):
        wrapped = _BeforeLastLayer(encoder, pooled=i == len(enc.encoders) - 1,
                                   encode_tokens=None if runs is None else runs[i])
        states, _ = conditioning._encode_batch(
            tokenizer, wrapped, texts, 0, emphasis=emphasis, comma_padding_backtrack=20,
            embeddings=None if embeddings is None else embeddings[enc.keys[i]])
        hidden.append(states)
        pooled = wrapped.last_pooled
    assert pooled is not None
    distinct = list(dict.fromkeys(texts))
    chunks = hidden[0][0].shape[0] // (conditioning.CHUNK_LENGTH + 2)
    # rows are text-major: text j's first chunk is row j * chunks (the WebUI's zs[0].pooled)
    return {text: (np.concatenate([h[j] for h in hidden], axis=-1),
                   pooled[j * chunks][None]) for j, text in enumerate(distinct)}


def webui_schedule(enc: TextEncoders, prompts: Sequence[str], ids: np.ndarray, *, steps: int,
                   negative: bool = False, emphasis: str | None = None,
                   hires_steps: int | None = None, runs: Runs = None,
                   embeddings: EncoderFinders | None = None) -> XLSchedule:
    """The WebUI's SDXL conditioning of `prompts` over `steps` model evaluations (prompt
    editing and AND parts as in `conditioning.encode`, `hires_steps` too); `negative`: the
    prompts are negative prompts (their extra-network tags and AND stay text, and an empty
    one is zeros); `embeddings` finds textual inversions (each encoder's vectors); `emphasis`
    None: the generation's mode (text.emphasis_mode)."""
    emphasis = current_emphasis(emphasis)
    parsed = [parse_prompt(p, steps, hires_steps=hires_steps, extra_networks=not negative,
                           composable=not negative) for p in prompts]
    parts = [part for prompt in parsed for part in prompt.parts]  # rows: item by item
    dims = sum(int(e.config["hidden_size"]) for e in enc.encoders)
    done: dict[Any, tuple[tuple[tuple[int, np.ndarray], ...], tuple[tuple[int, np.ndarray], ...]]]
    done = {}
    for part in parts:
        if part.schedule in done:
            continue
        texts = [text for _, text in part.schedule]
        if negative and all(text == "" for text in texts):
            width = int(enc.encoders[-1].config.get("projection_dim")
                        or enc.encoders[-1].config["hidden_size"])
            zero = (np.zeros((conditioning.CHUNK_LENGTH + 2, dims), np.float32),
                    np.zeros((1, width), np.float32))
            by_text = dict.fromkeys(texts, zero)
        else:
            by_text = _encode_texts(enc, texts, emphasis, runs, embeddings)
        done[part.schedule] = (tuple((end, by_text[t][0]) for end, t in part.schedule),
                               tuple((end, by_text[t][1]) for end, t in part.schedule))
    device, dtype = enc.place
    items = tuple(parsed)
    return XLSchedule(
        conditioning.ConditioningSchedule(items, tuple(done[p.schedule][0] for p in parts),
                                          device, dtype),
        conditioning.ConditioningSchedule(items, tuple(done[p.schedule][1] for p in parts),
                                          device, dtype), ids)


class StableDiffusionXL(StableDiffusion):
    """An SDXL base or refiner model on the GPU: `StableDiffusion` with SDXL's two text
    encoders (`text_encoders`), pooled embedding and micro-conditioning. Build with
    `diffusion.load_pipeline(path)`; `family` is "sdxl" or "sdxl-refiner"."""

    is_sdxl = True

    def __init__(self, *, text_encoders: TextEncoders, **kwargs: Any) -> None:
        super().__init__(tokenizer=text_encoders.tokenizers[0],
                         text_encoder=text_encoders.encoders[0], **kwargs)
        self.text_encoders = text_encoders
        # each encoder's transformer, recorded once and replayed (the module docstring): an
        # H100's 1,030 eager dispatches a CFG picture's prompts were 0.1 s of host time
        self._text_captures = tuple(
            ModelCapture(CLIPTextModel.encode_tokens, max_signatures=2, copy_outputs=True)
            for _ in text_encoders.encoders)

    def _kept_captures(self) -> tuple[Any, ...]:
        return (*super()._kept_captures(), *self._text_captures)

    def _runs(self) -> Runs:
        """The encoders' kept captures (None under a memory mode: they run eagerly)."""
        if self.memory is not None:
            return None
        return [kept.of(encoder)
                for kept, encoder in zip(self._text_captures, self.text_encoders.encoders)]

    def set_memory_mode(self, mode: Any) -> None:
        """StableDiffusion.set_memory_mode, the encoders' captures emptied first: they hold
        the weights' buffers, which a mode's units give back when they leave."""
        for kept in self._text_captures:
            kept.captured.reset()
        super().set_memory_mode(mode)

    @property
    def is_refiner(self) -> bool:
        return self.text_encoders.refiner

    def encode_prompt(self, prompts: Sequence[str], *, clip_skip: int = 0) -> Tensor:
        """diffusers' prompt embeddings (B, 77, 2048; the refiner's 1280) of `prompts`."""
        ids = time_ids(8, 8, refiner=self.is_refiner)
        return diffusers_context(self.text_encoders, prompts, ids, clip_skip=clip_skip,
                                 runs=self._runs()).hidden

    def _embedding_lookup(self) -> EncoderFinders | None:
        """The textual-inversion finders of the embeddings directory, one per text encoder
        (an SDXL file's clip_l and clip_g vectors; the refiner's clip_g alone)."""
        if self.embeddings is None:
            return None
        enc = self.text_encoders
        return EncoderFinders({key: self.embeddings.lookup(
            tokenizer, width=int(encoder.config["hidden_size"]), encoder=key)
            for key, tokenizer, encoder in zip(enc.keys, enc.tokenizers, enc.encoders)})

    def _contexts(self, r: Any, steps: int, *, webui: bool = True) -> Any:
        """Step -> (uncond, cond) AddedContexts, as the WebUI or diffusers make them (see the
        module's docstring), uncond None without guidance; and the AND parts' weights
        (`StableDiffusion._contexts`)."""
        enc, batch, refiner, runs = self.text_encoders, r.batch_size, self.is_refiner, self._runs()
        ids = time_ids(r.width, r.height, refiner=refiner)
        negative_ids = time_ids(r.width, r.height, refiner=refiner, negative=True)
        if not webui:  # diffusers guides only above 1
            cond = diffusers_context(enc, [r.prompt] * batch, ids, clip_skip=r.clip_skip,
                                     runs=runs)
            uncond = None if r.cfg_scale <= 1.0 else diffusers_context(
                enc, [r.negative_prompt] * batch, negative_ids, clip_skip=r.clip_skip,
                zeros=r.negative_prompt == "" and enc.force_zeros_for_empty_prompt, runs=runs)
            return (lambda step: (uncond, cond)), None
        first = r.first_pass_steps  # a hires pass: editing counts on from the first pass
        timing_steps, hires_steps = (first, steps) if first else (steps, None)
        embeddings = r.embeddings if isinstance(r.embeddings, EncoderFinders) else None
        conds = webui_schedule(enc, [r.prompt] * batch, ids, steps=timing_steps,
                               hires_steps=hires_steps, runs=runs, embeddings=embeddings)
        composable = conds.hidden.composable  # it guides against the uncond even at CFG 1
        unconds = None if r.cfg_scale == 1.0 and not composable else webui_schedule(
            enc, [r.negative_prompt] * batch, negative_ids, negative=True, steps=timing_steps,
            hires_steps=hires_steps, runs=runs, embeddings=embeddings)
        return ((lambda step: (None if unconds is None else unconds.at(step), conds.at(step))),
                conds.hidden.weights if composable else None)
