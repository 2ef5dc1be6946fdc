"""Sana Video's block (diffusers' SanaVideoTransformerBlock): Sana's block with two changes,
the linear self-attention rotated by Wan's 3D rotary positions (frame, row, column; the
ReLU'd q and k rotated in the numerator, the normaliser unrotated) and the feed-forward
followed by a temporal convolution (GLUMBTempConv: each token plus a dense 3-tap convolution
over the frames, the same pixel of the neighbouring frames)."""

from __future__ import annotations

from typing import Any

from gpustd import Tensor, nn, permute

from .layers import Place
from .sana_blocks import GLUMBConv, SanaTransformerBlock, linear_attention
from .transformer_ops import Modulation, gated_add, rms_norm
from .wan_blocks import Segment, by_segment, joined

__all__ = ["GLUMBTempConv", "SanaVideoTransformerBlock", "unpatchify"]

Rope = tuple[Tensor, Tensor]


class GLUMBTempConv(GLUMBConv):
    """GLUMBConv on every frame, then conv_temp (dim -> dim, kernel (3, 1) over (frames,
    pixels), padding 1 frame, no bias) added to its input. diffusers: `GLUMBTempConv(dim,
    dim, mlp_ratio, norm_type=None, residual_connection=False)`."""

    def __init__(self, dim: int, mlp_ratio: float, place: Place) -> None:
        super().__init__(dim, mlp_ratio, place)
        self.conv_temp = nn.Conv2d(dim, dim, (3, 1), padding=(1, 0), bias=False, **place)

    def forward(self, x: Tensor, height: int, width: int, frames: int = 1) -> Tensor:
        """x (B, F*H*W, dim), frame-major -> (B, F*H*W, dim)."""
        batch, tokens, dim = x.shape
        spatial = super().forward(x.reshape(batch * frames, height * width, dim), height, width)
        # channels first over (frames, pixels): the (3, 1) kernel reads one pixel's frames;
        # the residual added in the conv's epilogue
        grid = permute(spatial.reshape(batch, tokens, dim), (0, 2, 1)).reshape(
            batch, dim, frames, height * width)
        out = self.conv_temp(grid, add=grid)
        return permute(out.reshape(batch, dim, tokens), (0, 2, 1))


class SanaVideoTransformerBlock(SanaTransformerBlock):
    """Sana's block (linear self-attention, cross-attention added ungated, the convolutional
    feed-forward, adaLN-single modulation) with rotary self-attention and GLUMBTempConv.
    diffusers: `SanaVideoTransformerBlock`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        super().__init__(cfg, place)
        self.ff = GLUMBTempConv(self.dim, cfg["mlp_ratio"], place)

    def forward(self, x: Tensor, segments: list[Segment], context: Tensor,  # type: ignore[override]
                mask: Tensor | None, grid: tuple[int, int, int], rotary: Rope) -> Tensor:
        """x (B, F*H*W, dim) frame-major; segments (start, stop, temb (B, 6*dim)): runs of
        tokens sharing a timestep (one for the whole video; image-to-video's first frame at
        timestep 0 apart); context (B, L, dim); mask as SanaCrossAttention's; grid (F, H, W)
        of the patches; rotary rope_tables' (cos, sin)."""
        batch = x.shape[0]
        frames, height, width = grid
        table = self.scale_shift_table.reshape(1, 6, self.dim)
        mods = [Modulation((table + temb.reshape(batch, 6, self.dim)).reshape(batch, -1), 6)
                for _, _, temb in segments]
        attn1 = self.attn1
        normed = joined([m.norm(part, 0, 1, self.eps)
                         for m, part in zip(mods, by_segment(x, segments))])
        q, k, v = nn.Linear.each(normed, [attn1.to_q, attn1.to_k, attn1.to_v])
        if attn1.norm_q is not None and attn1.norm_k is not None:
            q = rms_norm(q, attn1.norm_q.weight, attn1.norm_q.eps)
            k = rms_norm(k, attn1.norm_k.weight, attn1.norm_k.eps)
        attn = linear_attention(q, k, v, attn1.heads, rotary)
        # float16: diffusers' video processor does not clip to_out's output (Sana's does)
        x = joined([m.gated_linear(2, part, attn1.to_out[0], out) for m, part, out in
                    zip(mods, by_segment(x, segments), by_segment(attn, segments))])
        x = x + self.attn2(x, context, mask)
        normed = joined([m.norm(part, 3, 4, self.eps)
                         for m, part in zip(mods, by_segment(x, segments))])
        ff = self.ff(normed, height, width, frames)
        return joined([gated_add(part, m[5], out) for m, part, out in
                       zip(mods, by_segment(x, segments), by_segment(ff, segments))])


def unpatchify(out: Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int],
               channels: int) -> Tensor:
    """proj_out's tokens (B, F'*H'*W', pt*ph*pw*C) -> the latent video (B, C, F, H, W).
    torch: `reshape(B, F', H', W', pt, ph, pw, C).permute(0, 7, 1, 4, 2, 5, 3, 6)`."""
    batch = out.shape[0]
    (f, h, w), (pt, ph, pw) = grid, patch
    video = permute(out.reshape(batch, f, h, w, pt, ph, pw, channels), (0, 7, 1, 4, 2, 5, 3, 6))
    return video.reshape(batch, channels, f * pt, h * ph, w * pw)
