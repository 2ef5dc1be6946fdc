"""The checks every replayed flow family's test makes (diffusion.pipelines.flow.flow_replay),
on a pipeline of tiny random weights: two generations of different prompts on one set of
recordings, each bit for bit the picture of eagerly run steps, the prompt visibly mattering;
a weight written into its buffer in place (a LoRA merged) replayed, a replaced weight
recorded afresh, each the eager picture and visibly different."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diffusion.pipelines.flow.flow_replay import step_replays
from gpustd import Tensor


def counts(pipe: Any) -> tuple[int, int]:
    """(recordings, replays) of the pipeline's step captures (Ideogram 4 keeps one a
    transformer), summed."""
    kept = [replay.captured for replay in step_replays(pipe)]
    return sum(c.recordings for c in kept), sum(c.replays for c in kept)


def eager(pipe: Any, call: Callable[[], Any]) -> Any:
    """`call()` with the pipeline's steps run eagerly, then replaying again."""
    for replay in step_replays(pipe):
        replay.use_eager(True)
    try:
        return call()
    finally:
        for replay in step_replays(pipe):
            replay.use_eager(False)


def check_replays(pipe: Any, draw: Callable[[str], np.ndarray], prompts: Sequence[str],
                  recordings: int, replays: int, weight: Any, *, differ: float = 0.01) -> None:
    """`draw(prompt)` (a generation's latents) over `prompts` (two of one token count): the
    first records `recordings` captures and replays `replays` steps, the second only
    replays. Then `weight` (a module with a `.weight` the step reads) scaled in place
    (replayed) and replaced (recorded afresh). Each is the eager picture (run last: the
    eager mode drops the recordings), and each change visibly matters."""
    first = draw(prompts[0])
    assert counts(pipe) == (recordings, replays)
    second = draw(prompts[1])
    assert counts(pipe)[0] == recordings and counts(pipe)[1] > replays
    old = weight.weight.numpy()
    weight.weight.buffer.write((old * 1.5).astype(old.dtype))
    written = draw(prompts[0])
    assert counts(pipe)[0] == recordings, "a weight written in place recorded again"
    weight.weight = Tensor.from_numpy(old * 0.5, device=weight.weight.device, read_only=True)
    replaced = draw(prompts[0])
    assert counts(pipe)[0] > recordings, "a replaced weight replayed the old one"
    np.testing.assert_array_equal(replaced, eager(pipe, lambda: draw(prompts[0])))
    weight.weight.buffer.write((old * 1.5).astype(old.dtype))
    np.testing.assert_array_equal(written, eager(pipe, lambda: draw(prompts[0])))
    weight.weight.buffer.write(old)
    np.testing.assert_array_equal(first, eager(pipe, lambda: draw(prompts[0])))
    np.testing.assert_array_equal(second, eager(pipe, lambda: draw(prompts[1])))
    assert np.abs(first - second).mean() > differ, "the prompt barely matters"
    assert np.abs(written - first).mean() > differ and np.abs(replaced - first).mean() > differ


def check_cache_and_picture(pipe: Any, cached: Callable[[], Any],
                            picture: Callable[[], np.ndarray]) -> None:
    """`cached()` (a generation with a step cache) runs its steps eagerly: no recording, no
    replay; `picture()` (a decoded one, the VAE borrowing the step capture's scratch) replays
    and is the eager picture."""
    before = counts(pipe)
    cached()
    assert counts(pipe) == before, "a step cache's generation replayed"
    got = picture()
    assert counts(pipe)[1] > before[1]
    np.testing.assert_array_equal(got, eager(pipe, picture))


def read_once(pipe: Any, name: str) -> None:
    """`pipe.<name>` (a prompt's or a picture's encoder, whose output the steps read) run
    once per argument: the tests draw each prompt several times, and what they test is the
    steps."""
    read, seen = getattr(pipe, name), {}

    def once(prompts: Any, *args: Any) -> Any:
        key = (_key(prompts), *map(_key, args))
        if key not in seen:
            seen[key] = read(prompts, *args)
        return seen[key]

    setattr(pipe, name, once)


def _key(value: Any) -> Any:
    """A hashable key of an encoder's argument (a picture by its pixels; a dict, the
    pipeline's own memo, left out)."""
    if isinstance(value, dict):
        return None
    if isinstance(value, (list, tuple)):
        return tuple(map(_key, value))
    return value.tobytes() if hasattr(value, "tobytes") else value
