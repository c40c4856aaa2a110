"""Build a plain PyTorch nn.Module from a Graph (weights from the graph, float32 parameters)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from upscaler.errors import ModelError
from upscaler.models.graph import (
    ChannelScale,
    Concat,
    Conv,
    Crop,
    Deconv,
    Dense,
    GlobalAvgPool,
    Graph,
    Layer,
    PixelShuffle,
    PReLU,
    Resize,
    WeightedSum,
    layer_inputs,
)


class _Conv(nn.Module):
    def __init__(self, layer: Conv) -> None:
        super().__init__()
        out_ch, in_ch, kh, kw = layer.weight.shape
        top, left, bottom, right = layer.pad
        symmetric = top == bottom and left == right
        self.conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=layer.stride,
                              padding=(top, left) if symmetric else 0,
                              dilation=layer.dilation, bias=layer.bias is not None)
        self.conv.weight.data = torch.from_numpy(layer.weight.astype("float32"))
        if layer.bias is not None and self.conv.bias is not None:
            self.conv.bias.data = torch.from_numpy(layer.bias.astype("float32"))
        self.pad = None if symmetric else (left, right, top, bottom)
        self.leaky = layer.leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        x = self.conv(x)
        if self.leaky is not None:
            x = F.leaky_relu(x, self.leaky)
        return x


class _PReLU(nn.Module):
    def __init__(self, layer: PReLU) -> None:
        super().__init__()
        self.act = nn.PReLU(layer.slope.size)
        self.act.weight.data = torch.from_numpy(layer.slope.astype("float32"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


class _Resize(nn.Module):
    def __init__(self, layer: Resize) -> None:
        super().__init__()
        self.scale = (layer.scale_h, layer.scale_w)
        self.mode = layer.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        # An explicit size makes PyTorch sample at in/out, as ncnn does; a scale factor would
        # sample at 1/scale, which differs when the size does not divide evenly.
        size = (math.floor(h * self.scale[0]), math.floor(w * self.scale[1]))
        if self.mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode=self.mode, align_corners=False)


class _Deconv(nn.Module):
    def __init__(self, layer: Deconv) -> None:
        super().__init__()
        in_ch, out_ch, kh, kw = layer.weight.shape
        self.conv = nn.ConvTranspose2d(in_ch, out_ch, (kh, kw), stride=layer.stride,
                                       bias=layer.bias is not None)
        self.conv.weight.data = torch.from_numpy(layer.weight.astype("float32"))
        if layer.bias is not None and self.conv.bias is not None:
            self.conv.bias.data = torch.from_numpy(layer.bias.astype("float32"))
        self.crop = layer.pad  # ncnn's deconvolution padding crops the full output
        self.leaky = layer.leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _cropped(self.conv(x), self.crop)
        if self.leaky is not None:
            x = F.leaky_relu(x, self.leaky)
        return x


def _cropped(x: torch.Tensor, crop: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, bottom, right = crop
    return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]


class _Crop(nn.Module):
    def __init__(self, layer: Crop) -> None:
        super().__init__()
        self.crop = layer.crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cropped(x, self.crop)


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)  # vector blobs stay (N, C, 1, 1)


class _Dense(nn.Module):
    def __init__(self, layer: Dense) -> None:
        super().__init__()
        out_ch, in_ch = layer.weight.shape
        self.fc = nn.Conv2d(in_ch, out_ch, 1, bias=layer.bias is not None)
        self.fc.weight.data = torch.from_numpy(layer.weight.astype("float32")[:, :, None, None])
        if layer.bias is not None and self.fc.bias is not None:
            self.fc.bias.data = torch.from_numpy(layer.bias.astype("float32"))
        self.activation = layer.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        if self.activation == "relu":
            return F.relu(x)
        return torch.sigmoid(x) if self.activation == "sigmoid" else x


class GraphModule(nn.Module):
    """The graph's layers run in order over named blobs; each blob is freed after its last use.

    forward takes (N, 3, h, w) RGB in [0, 1] and returns (N, 3, h*s, w*s), unclamped.
    """

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.steps = nn.ModuleList()
        self.wiring: list[tuple[str, tuple[str, ...], str]] = []  # (kind, inputs, output)
        self.coeffs: dict[int, tuple[float, ...]] = {}
        self.input_name = graph.input
        self.output_name = graph.output
        for i, layer in enumerate(graph.layers):
            self.steps.append(_module(layer))
            joins = Concat | WeightedSum | ChannelScale
            kind = type(layer).__name__ if isinstance(layer, joins) else "unary"
            self.wiring.append((kind, layer_inputs(layer), layer.output))
            if isinstance(layer, WeightedSum):
                self.coeffs[i] = layer.coeffs
        last_use: dict[str, int] = {}
        for i, (_, inputs, _) in enumerate(self.wiring):
            for name in inputs:
                last_use[name] = i
        self.frees = [[n for n in inputs if last_use[n] == i and n != graph.output
                       and n not in graph.given]
                      for i, (_, inputs, _) in enumerate(self.wiring)]

    def forward(self, x: torch.Tensor,
                given: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """`given`: vector blobs (N, C, 1, 1) a part of a graph takes (Graph.part)."""
        blobs = {self.input_name: x, **(given or {})}
        for i, (step, (kind, inputs, output)) in enumerate(
                zip(self.steps, self.wiring, strict=True)):
            if kind == "Concat":
                y = torch.cat([blobs[n] for n in inputs], dim=1)
            elif kind == "ChannelScale":
                y = blobs[inputs[0]] * blobs[inputs[1]]
            elif kind == "WeightedSum":
                terms = [blobs[n] if c == 1.0 else blobs[n] * c
                         for n, c in zip(inputs, self.coeffs[i], strict=True)]
                y = terms[0]
                for term in terms[1:]:
                    y = y + term
            else:
                y = step(blobs[inputs[0]])
            for name in self.frees[i]:
                del blobs[name]
            blobs[output] = y
        return blobs[self.output_name]


def _module(layer: Layer) -> nn.Module:
    if isinstance(layer, Conv):
        return _Conv(layer)
    if isinstance(layer, PReLU):
        return _PReLU(layer)
    if isinstance(layer, Resize):
        return _Resize(layer)
    if isinstance(layer, PixelShuffle):
        return nn.PixelShuffle(layer.factor)
    if isinstance(layer, Deconv):
        return _Deconv(layer)
    if isinstance(layer, Crop):
        return _Crop(layer)
    if isinstance(layer, GlobalAvgPool):
        return _GlobalAvgPool()
    if isinstance(layer, Dense):
        return _Dense(layer)
    if isinstance(layer, Concat | WeightedSum | ChannelScale):
        return nn.Identity()  # joins are done in GraphModule.forward from several blobs
    raise ModelError(f"layer {type(layer).__name__} has no PyTorch translation")


def build_torch_module(graph: Graph) -> nn.Module:
    """A GraphModule for `graph` in eval mode, float32 on the CPU; move and cast it as needed."""
    return GraphModule(graph).eval()
