"""What Real-CUGAN's and waifu2x's original programs do around their networks.

Their networks convolve without padding, so they return less than they are given: scale * (L -
2 * pad) for an input side L. The programs pad the picture first (Real-CUGAN mirrors it without
the edge pixel, waifu2x repeats the edge pixel), round its sides up to a multiple the network's
strided layers divide evenly, and crop the output back to the picture. Real-CUGAN's 4x network
learns a residual over the nearest-neighbour 4x picture; its pro models work on values mapped
into [0.15, 0.85] (bilibili's upcunet_v3.py maps them; realcugan-ncnn-vulkan does not, its issue
#52). Arrays here are float32 NCHW planes, as executors take them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

PadMode = Literal["reflect", "edge"]
PRO_SPAN, PRO_FLOOR = 0.7, 0.15  # pro models: x -> x * 0.7 + 0.15 in, back out


@dataclass(frozen=True)
class Processing:
    """pad: input pixels added on each side (the network's own margin); mode: numpy's pad mode;
    multiple: sides are rounded up to it (bottom and right); pro: map values as pro models need;
    add_nearest: add the nearest-neighbour upscaled input to the network's output."""

    pad: int
    mode: PadMode
    multiple: int
    pro: bool = False
    add_nearest: bool = False


def rounded(side: int, multiple: int) -> int:
    return -(-side // multiple) * multiple


def _widths(h: int, w: int, proc: Processing) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, bottom), (left, right) padding of an h x w picture: the margin, and the bottom
    and right rounded up to the multiple."""
    extra_h, extra_w = rounded(h, proc.multiple) - h, rounded(w, proc.multiple) - w
    return (proc.pad, proc.pad + extra_h), (proc.pad, proc.pad + extra_w)


def prepare(batch: np.ndarray, proc: Processing) -> np.ndarray:
    """(N, 3, h, w) in [0, 1] -> the network's input: mapped, padded and rounded up."""
    x = batch * np.float32(PRO_SPAN) + np.float32(PRO_FLOOR) if proc.pro else batch
    # numpy reflects again from the far edge where the pad is wider than the picture.
    widths = ((0, 0), (0, 0), *_widths(*batch.shape[2:], proc))
    return np.ascontiguousarray(np.pad(x, widths, mode=proc.mode), dtype=np.float32)


def pad_pixels(tiles: np.ndarray, proc: Processing) -> np.ndarray:
    """(N, h, w, 3) pixels padded and rounded up as `prepare` pads planes, for a family whose
    values need no mapping (not pro)."""
    widths = ((0, 0), *_widths(*tiles.shape[1:3], proc), (0, 0))
    return np.ascontiguousarray(np.pad(tiles, widths, mode=proc.mode))


def finish(raw: np.ndarray, batch: np.ndarray, scale: int, proc: Processing) -> np.ndarray:
    """The network's output `raw` for `prepare(batch)` -> (N, 3, h*s, w*s), unclamped."""
    n, c, h, w = batch.shape
    # The crop's own copy (or `raw` itself, which is the executor's new array), worked in place:
    # a 4K frame's float planes are 100 MB, and each temporary costs that again.
    out = np.ascontiguousarray(raw[:, :, :h * scale, :w * scale], dtype=np.float32)
    if proc.add_nearest:
        mapped = batch * np.float32(PRO_SPAN) + np.float32(PRO_FLOOR) if proc.pro else batch
        out.reshape(n, c, h, scale, w, scale)[...] += mapped[:, :, :, None, :, None]
    if proc.pro:
        out -= np.float32(PRO_FLOOR)
        out /= np.float32(PRO_SPAN)
    return out
