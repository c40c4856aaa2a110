"""Where a network splits into a body at the input's size and an upsampling tail.

RRDBNet (x4plus, x4plus-anime) does its deep work at the input's size, then upsamples twice with
a few 3x3 convolutions at 2x and 4x. The tail holds most of the memory (64 channels at 16 times
the pixels: 4 KiB per input pixel per blob, 56 KiB in ncnn at its peak) but sees only a pixel or
two of the body's output around each pixel. So the tail can run in small tiles of the body's
output, each widened by that reach: exactly, with no blending, and in bounded memory. The body's
memory alone then sets the frame's tile plan, and large tiles cut the overlap work the body's
wide receptive field needs (tiling.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from upscaler.errors import ModelError
from upscaler.models.graph import (
    Conv,
    Graph,
    PixelShuffle,
    PReLU,
    Resize,
    WeightedSum,
    layer_inputs,
)
from upscaler.models.registry import ModelRef

# How many input pixels a resize reaches beyond the nearest source pixel, by mode.
_RESIZE_REACH = {"nearest": 0, "bilinear": 1, "bicubic": 2}


@dataclass(frozen=True)
class UpsamplingTail:
    """The layers from the first resize on, fed only by `blob`, the body's output.

    reach: input pixels beyond a tile that its tail outputs depend on (rounded up); a tail tile
      widened by it on every side inside the frame is exact.
    body_floats, tail_floats: the most floats one layer reads and writes at once, per input
      pixel, in the body and in the tail (Graph.peak_floats_per_pixel).
    """

    blob: str
    reach: int
    body_floats: float
    tail_floats: float


def tail_of(model: ModelRef) -> UpsamplingTail | None:
    """`model`'s upsampling tail; None also for models with no graph here (not ncnn files)."""
    if model.kind != "ncnn":
        return None
    try:
        return upsampling_tail(model.graph())
    except (ModelError, ValueError, KeyError):
        return None  # a layer the graph reader does not know: the model runs in one piece


def upsampling_tail(graph: Graph) -> UpsamplingTail | None:
    """The tail of `graph` when it is worth running apart, else None.

    None when there is no resize (SRVGGNetCompact ends in a pixel shuffle of a few channels,
    already small), when blobs shrink (unpadded convolutions), when a tail layer reads a body
    blob other than the first resize's input, or when the tail needs no more memory than the
    body.
    """
    layers = graph.layers
    start = next((i for i, layer in enumerate(layers) if isinstance(layer, Resize)), None)
    if start is None:
        return None
    blob = layer_inputs(layers[start])[0]
    tail = layers[start:]
    made = {layer.output for layer in tail}
    if any(b != blob and b not in made for layer in tail for b in layer_inputs(layer)):
        return None
    shapes = graph.blob_shapes()
    if any(shape.offset for shape in shapes.values()):
        # Unpadded convolutions (Real-CUGAN, waifu2x): blobs shrink, and such networks tile
        # exactly as a whole (models/exact.py); the reach below assumes same-size layers.
        return None
    reach = Fraction(0)
    for layer in tail:
        scale = shapes[layer_inputs(layer)[0]].scale
        if isinstance(layer, Conv):
            reach += Fraction(max(layer.pad) * max(layer.dilation)) / scale
        elif isinstance(layer, Resize):
            reach += Fraction(_RESIZE_REACH[layer.mode]) / scale
        elif not isinstance(layer, PReLU | WeightedSum | PixelShuffle):
            return None  # a layer whose reach is not known here
    body = graph.peak_floats_per_pixel(layers[:start]) if start else 0.0
    tail_floats = graph.peak_floats_per_pixel(tail)
    if start == 0 or tail_floats <= body:
        return None
    return UpsamplingTail(blob, math.ceil(reach), body, tail_floats)
