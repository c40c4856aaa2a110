"""The small graph description every model builder starts from.

A model is a straight list of layers over named blobs (NCHW float tensors), one input blob and one
output blob. The op set is what Real-ESRGAN's, Real-CUGAN's and waifu2x's networks need; readers
turn their file format into it and builders (ONNX, Core ML, PyTorch) turn it into a runtime's
model, so each format is written once against this description rather than against each other.

Blob sizes are affine in the input's: a*L + b. Real-ESRGAN pads every convolution, so b is 0;
Real-CUGAN and waifu2x convolve without padding and crop, so their blobs shrink (b < 0) and a
tile's output covers less than its input. Squeeze-excitation blocks pool a blob to one value per
channel (a "vector" blob) and scale the blob's channels by a gate computed from it.
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
class Deconv:
    """Transposed 2-D convolution as ncnn's Deconvolution and ONNX's ConvTranspose compute it:
    size (L - 1) * stride + kernel, less `pad` (top, left, bottom, right) cropped off.

    `weight` is (in, out, kh, kw), the ONNX/PyTorch order; `leaky` as Conv's.
    """

    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    leaky: float | None = None


@dataclass(frozen=True)
class GlobalAvgPool:
    """The mean of each channel over the whole blob: a vector blob of C values."""

    input: str
    output: str


@dataclass(frozen=True, eq=False)
class Dense:
    """A fully connected layer on a vector blob, then ReLU, sigmoid or nothing.

    `weight` is (out, in), float as stored; `bias` float32 (out,) or None.
    """

    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray | None
    activation: Literal["relu", "sigmoid"] | None = None


@dataclass(frozen=True)
class ChannelScale:
    """A blob (`inputs[0]`) with each channel multiplied by a vector blob's value (`inputs[1]`)."""

    inputs: tuple[str, str]
    output: str


@dataclass(frozen=True)
class Crop:
    """A blob less `crop` (top, left, bottom, right) pixels; all four are fixed numbers (the
    reader turns ncnn's crop-to-another-blob's-size into them)."""

    input: str
    output: str
    crop: tuple[int, int, int, int]


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


Layer = (Conv | Deconv | PReLU | Concat | WeightedSum | Resize | PixelShuffle | GlobalAvgPool
         | Dense | ChannelScale | Crop)


@dataclass(frozen=True)
class BlobShape:
    """A blob's channels and its height (and width): scale * L + offset for input side L.

    A vector blob (pooled, one value per channel) has scale and offset 0.
    """

    channels: int
    scale: Fraction
    offset: Fraction = Fraction(0)

    @property
    def floats_per_pixel(self) -> float:
        return float(self.channels * self.scale**2)

    @property
    def is_vector(self) -> bool:
        return self.scale == 0

    def size(self, side: int) -> Fraction:
        """The blob's side for an input side of `side`."""
        return self.scale * side + self.offset


@dataclass(frozen=True, eq=False)
class Graph:
    """A whole network: RGB in [0, 1] in on `input`, RGB in [0, 1] (unclamped) out on `output`."""

    input: str
    output: str
    layers: tuple[Layer, ...]
    in_channels: int = 3
    name: str = "model"
    extras: dict[str, str] = field(default_factory=dict)
    # Blobs besides `input` that a part of a graph is given (Graph.part), with their shapes.
    given: dict[str, BlobShape] = field(default_factory=dict)

    def parameter_count(self) -> int:
        total = 0
        for layer in self.layers:
            if isinstance(layer, Conv | Deconv | Dense):
                total += layer.weight.size + (layer.bias.size if layer.bias is not None else 0)
            elif isinstance(layer, PReLU):
                total += layer.slope.size
        return total

    def layer_macs(self) -> dict[str, float]:
        """Multiply-accumulates of each layer (by output blob) per input pixel, for large
        inputs (offsets ignored)."""
        shapes = self.blob_shapes()
        macs = {}
        for layer in self.layers:
            if isinstance(layer, Conv):
                out = shapes[layer.output]
                macs[layer.output] = float(layer.weight[0].size * out.channels * out.scale**2)
            elif isinstance(layer, Deconv):
                src = shapes[layer.input]
                macs[layer.output] = float(layer.weight[0].size * src.channels * src.scale**2)
            else:
                macs[layer.output] = 0.0
        return macs

    def macs_per_pixel(self) -> float:
        """The network's multiply-accumulates per input pixel."""
        return sum(self.layer_macs().values())

    def blob_shapes(self) -> dict[str, BlobShape]:
        """Every blob's channels and size relative to the input, traced through the layers.

        Height is traced (layers here treat both axes alike but for their own numbers, which
        the readers keep symmetric where these sizes are used).
        """
        shapes = {self.input: BlobShape(self.in_channels, Fraction(1)), **self.given}
        for layer in self.layers:
            shapes[layer.output] = layer_shape(layer, [shapes[b] for b in layer_inputs(layer)])
        return shapes

    def part(self, target: str, given: Sequence[str] = ()) -> Graph:
        """The layers that compute blob `target` when the blobs in `given` (vector blobs the
        caller supplies, see models/exact.py) are not computed, as a graph of its own."""
        producer = {layer.output: layer for layer in self.layers}
        needed: set[str] = set()
        todo = [target]
        while todo:
            blob = todo.pop()
            if blob in needed or blob in given or blob not in producer:
                continue
            needed.add(blob)
            todo.extend(layer_inputs(producer[blob]))
        layers = tuple(layer for layer in self.layers if layer.output in needed)
        shapes = self.blob_shapes()
        read = {b for layer in layers for b in layer_inputs(layer)}
        return Graph(self.input, target, layers, self.in_channels, f"{self.name}-{target}",
                     dict(self.extras), {b: shapes[b] for b in given if b in read})

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
    if isinstance(layer, Concat | WeightedSum | ChannelScale):
        return layer.inputs
    return (layer.input,)


def layer_shape(layer: Layer, ins: list[BlobShape]) -> BlobShape:
    first = ins[0]
    a, b = first.scale, first.offset
    if isinstance(layer, Conv):
        (kh, _), (s, _), (dh, _) = layer.weight.shape[2:], layer.stride, layer.dilation
        if layer.stride[0] != layer.stride[1]:
            raise ValueError("anisotropic stride")
        reach = layer.pad[0] + layer.pad[2] - dh * (kh - 1) - 1
        return BlobShape(layer.weight.shape[0], a / s, (b + reach) / s + 1)
    if isinstance(layer, Deconv):
        kh, s = layer.weight.shape[2], layer.stride[0]
        return BlobShape(layer.weight.shape[1], a * s,
                         (b - 1) * s + kh - layer.pad[0] - layer.pad[2])
    if isinstance(layer, Resize):
        step = Fraction(layer.scale_h).limit_denominator(64)
        return BlobShape(first.channels, a * step, b * step)
    if isinstance(layer, PixelShuffle):
        f = layer.factor
        return BlobShape(first.channels // f**2, a * f, b * f)
    if isinstance(layer, Concat):
        return BlobShape(sum(i.channels for i in ins), a, b)
    if isinstance(layer, GlobalAvgPool):
        return BlobShape(first.channels, Fraction(0))
    if isinstance(layer, Dense):
        return BlobShape(layer.weight.shape[0], Fraction(0))
    if isinstance(layer, Crop):
        return BlobShape(first.channels, a, b - layer.crop[0] - layer.crop[2])
    return first


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
