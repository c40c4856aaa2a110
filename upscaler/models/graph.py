"""The small graph description every model builder starts from.

A model is a straight list of layers over named blobs (NCHW float tensors), one input blob and one
output blob. The op set is exactly what Real-ESRGAN's networks need; readers turn their file format
into it and builders (ONNX, Core ML, PyTorch) turn it into a runtime's model, so each format is
written once against this description rather than against each other.
"""

from __future__ import annotations

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

    def scale(self) -> Fraction:
        """The factor from input size to output size, traced through the layers."""
        factors: dict[str, Fraction] = {self.input: Fraction(1)}
        for layer in self.layers:
            if isinstance(layer, Conv):
                if layer.stride[0] != layer.stride[1]:
                    raise ValueError("anisotropic stride")
                factors[layer.output] = factors[layer.input] / layer.stride[0]
            elif isinstance(layer, Resize):
                step = Fraction(layer.scale_h).limit_denominator(64)
                factors[layer.output] = factors[layer.input] * step
            elif isinstance(layer, PixelShuffle):
                factors[layer.output] = factors[layer.input] * layer.factor
            elif isinstance(layer, PReLU):
                factors[layer.output] = factors[layer.input]
            else:
                factors[layer.output] = factors[layer.inputs[0]]
        return factors[self.output]

    def out_channels(self) -> int:
        """Channels of the output blob, traced through the layers."""
        channels: dict[str, int] = {self.input: self.in_channels}
        for layer in self.layers:
            if isinstance(layer, Conv):
                channels[layer.output] = layer.weight.shape[0]
            elif isinstance(layer, PixelShuffle):
                channels[layer.output] = channels[layer.input] // (layer.factor**2)
            elif isinstance(layer, Concat):
                channels[layer.output] = sum(channels[i] for i in layer.inputs)
            elif isinstance(layer, WeightedSum):
                channels[layer.output] = channels[layer.inputs[0]]
            else:
                channels[layer.output] = channels[layer.input]
        return channels[self.output]
