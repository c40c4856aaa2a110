"""The small graph description every model builder starts from.

A model is a straight list of layers over named blobs (NCHW float tensors), one input blob and one
output blob. The op set is exactly what Real-ESRGAN's networks need; readers turn their file format
into it and builders (ONNX, Core ML, PyTorch) turn it into a runtime's model, so each format is
written once against this description rather than against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np

ResizeMode = Literal["nearest", "bilinear", "bicubic"]


@dataclass(frozen=True, eq=False)
class Conv:
    """2-D convolution, optionally followed by a LeakyReLU (negative slope `leaky`) or ReLU (0.0).

    `weight` is (out, in, kh, kw) in the dtype the source stored it (float16 for Real-ESRGAN's
    ncnn files), `bias` is float32 (out,) or None. `pad` is (top, left, bottom, right).
    """

    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    leaky: float | None = None


@dataclass(frozen=True, eq=False)
class PReLU:
    """Per-channel PReLU; `slope` is float32 (C,)."""

    input: str
    output: str
    slope: np.ndarray


@dataclass(frozen=True)
class Concat:
    """Concatenation along the channel axis."""

    inputs: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class WeightedSum:
    """sum(coeff_i * input_i): ncnn's Eltwise SUM with coefficients, and BinaryOp add/sub."""

    inputs: tuple[str, ...]
    output: str
    coeffs: tuple[float, ...]


@dataclass(frozen=True)
class Resize:
    """Resize by fixed factors. Output size is floor(size * scale), as ncnn computes it.

    nearest: source index floor(dst * in / out); bilinear and bicubic (a = -0.75): half-pixel
    centres, edge pixels repeated outside the image.
    """

    input: str
    output: str
    scale_h: float
    scale_w: float
    mode: ResizeMode


@dataclass(frozen=True)
class PixelShuffle:
    """Depth to space as PyTorch's nn.PixelShuffle (ONNX DepthToSpace mode CRD)."""

    input: str
    output: str
    factor: int


Layer = Conv | PReLU | Concat | WeightedSum | Resize | PixelShuffle


@dataclass(frozen=True)
class BlobShape:
    """A blob's channels and its height (and width) as a multiple of the input's."""

    channels: int
    scale: Fraction

    @property
    def floats_per_pixel(self) -> float:
        return float(self.channels * self.scale**2)


@dataclass(frozen=True, eq=False)
class Graph:
    """A whole network: RGB in [0, 1] in on `input`, RGB in [0, 1] (unclamped) out on `output`."""

    input: str
    output: str
    layers: tuple[Layer, ...]
    in_channels: int = 3
    name: str = "model"
    extras: dict[str, str] = field(default_factory=dict)

    def parameter_count(self) -> int:
        total = 0
        for layer in self.layers:
            if isinstance(layer, Conv):
                total += layer.weight.size + (layer.bias.size if layer.bias is not None else 0)
            elif isinstance(layer, PReLU):
                total += layer.slope.size
        return total

    def blob_shapes(self) -> dict[str, BlobShape]:
        """Every blob's channels and size relative to the input, traced through the layers."""
        shapes = {self.input: BlobShape(self.in_channels, Fraction(1))}
        for layer in self.layers:
            first = shapes[layer_inputs(layer)[0]]
            if isinstance(layer, Conv):
                if layer.stride[0] != layer.stride[1]:
                    raise ValueError("anisotropic stride")
                shape = BlobShape(layer.weight.shape[0], first.scale / layer.stride[0])
            elif isinstance(layer, Resize):
                step = Fraction(layer.scale_h).limit_denominator(64)
                shape = BlobShape(first.channels, first.scale * step)
            elif isinstance(layer, PixelShuffle):
                shape = BlobShape(first.channels // layer.factor**2, first.scale * layer.factor)
            elif isinstance(layer, Concat):
                shape = BlobShape(sum(shapes[b].channels for b in layer.inputs), first.scale)
            else:
                shape = first
            shapes[layer.output] = shape
        return shapes

    def scale(self) -> Fraction:
        """The factor from input size to output size."""
        return self.blob_shapes()[self.output].scale

    def out_channels(self) -> int:
        return self.blob_shapes()[self.output].channels

    def peak_floats_per_pixel(self, layers: Sequence[Layer] | None = None) -> float:
        """The most floats one layer reads and writes at once, per input pixel, over `layers`
        (a part of this graph's) or all of them."""
        shapes = self.blob_shapes()
        return max(
            sum(shapes[b].floats_per_pixel for b in layer_inputs(layer))
            + shapes[layer.output].floats_per_pixel
            for layer in (self.layers if layers is None else layers)
        )


def layer_inputs(layer: Layer) -> tuple[str, ...]:
    """The blobs a layer reads, whichever kind it is."""
    return layer.inputs if isinstance(layer, Concat | WeightedSum) else (layer.input,)


def receptive_field(graph: Graph) -> float | None:
    """How far, in input pixels, an output pixel can see: the reach of the graph's layers.

    Traced blob by blob: a convolution adds (kernel - 1) / 2 * dilation of its input blob's
    pixels, which are 1/scale input pixels on a blob at `scale` times the input's size (after
    an upsampling, a 3x3 reaches half an input pixel); a resampling Resize adds its filter's
    half width in source pixels (1 bilinear, 2 bicubic; nearest nothing); a branch sees as far
    as its farthest input. None means the whole frame: a layer this function does not know
    (global pooling, attention) may read every pixel, and then only a whole frame or tile gives
    the model's answer.
    """
    shapes = graph.blob_shapes()
    reach: dict[str, Fraction] = {graph.input: Fraction(0)}
    for layer in graph.layers:
        seen = max(reach[b] for b in layer_inputs(layer))
        pixel = 1 / shapes[layer_inputs(layer)[0]].scale  # one of its pixels, in input pixels
        if isinstance(layer, Conv):
            kh, kw = layer.weight.shape[2:]
            seen += pixel * max(Fraction(kh - 1, 2) * layer.dilation[0],
                                Fraction(kw - 1, 2) * layer.dilation[1])
        elif isinstance(layer, Resize):
            seen += pixel * {"nearest": 0, "bilinear": 1, "bicubic": 2}[layer.mode]
        elif not isinstance(layer, PReLU | Concat | WeightedSum | PixelShuffle):
            return None
        reach[layer.output] = seen
    return float(reach[graph.output])
