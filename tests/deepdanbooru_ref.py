"""Test-only reference: the WebUI's DeepDanbooru port (AUTOMATIC1111/stable-diffusion-webui,
`modules/deepbooru_model.py`, class `DeepDanbooruModel`) in torch, its layer list typed as a
table with every width divided by `shrink` (the real model: shrink 1, 9176 tags), and its
`forward` pad for pad; plus a writer of the `.pt` the WebUI loads (`model-resnet_custom_v3.pt`:
the state dict with the tag names under "tags").
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# the port's bottleneck blocks: (1x1 in, 3x3, 1x1 out, projection or None, stride), in conv
# numbers; n_Conv_97's block is numbered with its projection (n_Conv_100) last
_BLOCKS = ([(2, 3, 4, 1, 1), (5, 6, 7, None, 1), (8, 9, 10, None, 1), (12, 13, 14, 11, 2)]
           + [(i, i + 1, i + 2, None, 1) for i in range(15, 36, 3)]
           + [(37, 38, 39, 36, 2)] + [(i, i + 1, i + 2, None, 1) for i in range(40, 97, 3)]
           + [(97, 98, 99, 100, 2)] + [(i, i + 1, i + 2, None, 1) for i in range(101, 158, 3)]
           + [(159, 160, 161, 158, 2), (162, 163, 164, None, 1), (165, 166, 167, None, 1)]
           + [(169, 170, 171, 168, 2), (172, 173, 174, None, 1), (175, 176, 177, None, 1)])
# (first conv of the stage, bottleneck width, output width)
_WIDTHS = [(1, 64, 256), (11, 128, 512), (36, 256, 1024), (158, 512, 2048), (168, 1024, 4096)]


def _width(conv: int) -> tuple[int, int]:
    return next((mid, out) for first, mid, out in reversed(_WIDTHS) if conv >= first)


class DeepDanbooruModel(nn.Module):
    def __init__(self, tags: list[str], shrink: int = 1) -> None:
        super().__init__()
        self.tags = list(tags)
        self.blocks = _BLOCKS
        self.add_module("n_Conv_0", nn.Conv2d(3, 64 // shrink, 7, stride=2))
        self.n_MaxPool_0 = nn.MaxPool2d(3, stride=2)
        channels = 64 // shrink
        for a, b, c, projection, stride in _BLOCKS:
            mid, out = (w // shrink for w in _width(c))
            if projection is not None:
                self.add_module(f"n_Conv_{projection}",
                                nn.Conv2d(channels, out, 1, stride=stride))
            self.add_module(f"n_Conv_{a}", nn.Conv2d(channels, mid, 1))
            self.add_module(f"n_Conv_{b}", nn.Conv2d(mid, mid, 3, stride=stride))
            self.add_module(f"n_Conv_{c}", nn.Conv2d(mid, out, 1))
            channels = out
        self.n_Conv_178 = nn.Conv2d(channels, len(tags), 1, bias=False)

    def conv(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"n_Conv_{index}")(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.permute(0, 3, 1, 2), [2, 3, 2, 3], value=0)
        x = F.relu(self.conv(0, x))
        x = self.n_MaxPool_0(F.pad(x, [0, 1, 0, 1], value=float("-inf")))
        for a, b, c, projection, stride in self.blocks:
            skip = x if projection is None else self.conv(projection, x)
            h = F.relu(self.conv(a, x))
            h = F.pad(h, [0, 1, 0, 1] if stride == 2 else [1, 1, 1, 1], value=0)
            h = F.relu(self.conv(b, h))
            x = F.relu(self.conv(c, h) + skip)
        x = self.conv(178, x)
        x = F.avg_pool2d(x, kernel_size=x.shape[-2:])
        return torch.sigmoid(x.squeeze(3).squeeze(2))


def random_deepdanbooru(tags: list[str], *, shrink: int = 16, seed: int = 0,
                        size: int = 128) -> DeepDanbooruModel:
    """A shrunken DeepDanbooru with random weights that keep 66 blocks finite and the input
    visible (He-scaled convs, each block's last conv scaled by 0.2), the tag logits scaled to a
    spread of 3 on a noise picture of `size`, so scores lie well inside 0..1."""
    torch.manual_seed(seed)
    model = DeepDanbooruModel(tags, shrink).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.normal_(0.0, 0.05)
            else:
                parameter.normal_(0.0, (2.0 / parameter[0].numel()) ** 0.5)
        for _, _, last, _, _ in _BLOCKS:
            getattr(model, f"n_Conv_{last}").weight.mul_(0.2)
        logits = []
        hook = model.n_Conv_178.register_forward_hook(
            lambda _module, _inputs, output: logits.append(output.mean((2, 3))))
        model(torch.rand(1, size, size, 3))
        hook.remove()
        model.n_Conv_178.weight.mul_(3.0 / logits[0].std().item())
    return model


def write_pt(model: DeepDanbooruModel, path: Path) -> Path:
    """The file the WebUI loads: `torch.save` of the state dict with "tags" added."""
    state = model.state_dict()  # an OrderedDict, the tag names one more entry
    state["tags"] = list(model.tags)
    torch.save(state, path)
    return path


def planted_deepdanbooru(signs: dict[str, int], *, shrink: int = 32) -> DeepDanbooruModel:
    """A shrunken DeepDanbooru whose tag scores are planted: a tag's logit is its sign (+1, -1)
    times the sum of the last features (all >= 0 after the ReLU, and large), so +1 scores
    about 1 and -1 about 0 whatever the picture."""
    model = random_deepdanbooru(list(signs), shrink=shrink)
    with torch.no_grad():
        weight = model.n_Conv_178.weight
        weight.copy_(torch.tensor(list(signs.values()), dtype=weight.dtype)[:, None, None, None]
                     .expand_as(weight))
    return model


def webui_tag_text(tags: list[str], scores: list[float], opts: dict) -> str:
    """The WebUI's `DeepDanbooru.tag_multi` text (modules/deepbooru.py) of `scores`, its
    options `opts` as the WebUI's shared.opts names them."""
    import re

    re_special = re.compile(r"([\\()])")
    probability_dict = {}
    for tag, probability in zip(tags, scores):
        if probability < opts["interrogate_deepbooru_score_threshold"]:
            continue
        if tag.startswith("rating:"):
            continue
        probability_dict[tag] = probability
    if opts["deepbooru_sort_alpha"]:
        ordered = sorted(probability_dict)
    else:
        ordered = [tag for tag, _ in sorted(probability_dict.items(), key=lambda x: -x[1])]
    res = []
    filtertags = {x.strip().replace(" ", "_") for x in opts["deepbooru_filter_tags"].split(",")}
    for tag in [x for x in ordered if x not in filtertags]:
        probability = probability_dict[tag]
        tag_outformat = tag
        if opts["deepbooru_use_spaces"]:
            tag_outformat = tag_outformat.replace("_", " ")
        if opts["deepbooru_escape"]:
            tag_outformat = re.sub(re_special, r"\\\1", tag_outformat)
        if opts["interrogate_return_ranks"]:
            tag_outformat = f"({tag_outformat}:{probability:.3f})"
        res.append(tag_outformat)
    return ", ".join(res)
