"""Build a Core ML ML Program (.mlpackage) from a Graph with coremltools' MIL builder.

The package has one fixed input shape, (batch, 3, height, width) float32 named "input", and one
output named "output"; the executor builds one for each frame size's tile shape, which can be
the whole frame (a fixed shape is what the Neural Engine runs; a range-flexible model runs
there only at its default shape). Arithmetic and weights are fp16, so Real-ESRGAN's fp16
weights are stored bit for bit as the source has them. MIL has no bicubic resize, and its
bilinear modes do not repeat edge pixels as ncnn does, so since every shape is fixed, resizes
other than an integer nearest upscale are matmuls with constant resampling matrices that
reproduce ncnn exactly.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

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
    PixelShuffle,
    PReLU,
    Resize,
    ResizeMode,
    WeightedSum,
)

CoreMLPrecision = Literal["fp16", "fp32"]
INPUT_NAME = "input"
OUTPUT_NAME = "output"
CUBIC_A = -0.75
# Passes that fold a following scale or batch norm into the convolution weights (RRDBNet's
# 0.2 residual scaling would be), which would round the fp16 weights again: the scale stays
# a separate op so that the weights are stored exactly as the source has them.
_WEIGHT_CHANGING_PASSES = ("common::fuse_conv_scale", "common::fuse_conv_batchnorm",
                           "common::fuse_elementwise_to_batchnorm")


def resize_size(size: int, scale: float) -> int:
    """The output size ncnn gives a resize by `scale`: floor(size * scale)."""
    return math.floor(size * scale)


def resample_matrix(in_size: int, out_size: int, mode: ResizeMode) -> np.ndarray:
    """float64 (out_size, in_size) matrix M with out = M @ in along one axis, as ncnn resizes.

    nearest: source floor(dst * in / out); bilinear and bicubic: half-pixel centres, taps
    beyond the edge clamped to the edge pixel (ncnn folds their weights into the edge taps).
    """
    m = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for dst in range(out_size):
        if mode == "nearest":
            m[dst, min(dst * in_size // out_size, in_size - 1)] = 1.0
            continue
        # ncnn rounds the sample position to float32; so do we, to pick the same taps.
        src = float(np.float32((dst + 0.5) * scale - 0.5))
        base = math.floor(src)
        frac = src - base
        if mode == "bilinear":
            # ncnn clamps the source coordinate itself at the low edge.
            if src < 0:
                base, frac = 0, 0.0
            taps = {base: 1.0 - frac, base + 1: frac}
        else:
            taps = dict(zip(range(base - 1, base + 3), _cubic_weights(frac), strict=True))
        for index, weight in taps.items():
            m[dst, min(max(index, 0), in_size - 1)] += weight
    return m


def _cubic_weights(t: float) -> tuple[float, float, float, float]:
    a = CUBIC_A
    x0, x1, x2 = t + 1, t, 1 - t
    w0 = a * x0**3 - 5 * a * x0**2 + 8 * a * x0 - 4 * a
    w1 = (a + 2) * x1**3 - (a + 3) * x1**2 + 1
    w2 = (a + 2) * x2**3 - (a + 3) * x2**2 + 1
    return w0, w1, w2, 1.0 - w0 - w1 - w2


def build_mlpackage(graph: Graph, path: Path, shape: tuple[int, int], batch: int = 1,
                    precision: CoreMLPrecision = "fp16") -> None:
    """Translate `graph` for input (batch, 3, height, width) and save the package at `path`."""
    height, width = shape
    if min(height, width, batch) <= 0:
        raise ModelError(f"Core ML needs a positive input shape and batch, got {height}x{width}"
                         f" and {batch}", path)
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    def main(input: Any) -> Any:  # the argument's name is the model input's name
        return _translate(mb, graph, input, (height, width))

    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    passes = ct.PassPipeline.DEFAULT
    passes.remove_passes(_WEIGHT_CHANGING_PASSES)
    try:
        # The pass pipelines draw tqdm bars on stderr (the CLI draws its own progress), and
        # coremltools drops a TemporaryDirectory for the weights, which warns when collected.
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            input_spec = mb.TensorSpec(shape=(batch, graph.in_channels, height, width))
            program = mb.program(input_specs=[input_spec], opset_version=ct.target.macOS13)(main)
            mlmodel = ct.convert(program, convert_to="mlprogram", compute_precision=compute,
                                 minimum_deployment_target=ct.target.macOS13,
                                 pass_pipeline=passes, skip_model_load=True)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"Core ML conversion of {graph.name} failed: {e}", path) from e
    mlmodel.short_description = f"{graph.name} x{graph.scale()} for {height}x{width} input"
    mlmodel.user_defined_metadata["scale"] = str(graph.scale())
    mlmodel.save(str(path))
    # coremltools would otherwise keep its temporary copy of the package until the process exits.
    shutil.rmtree(mlmodel.package_path, ignore_errors=True)


def _translate(mb: Any, graph: Graph, x: Any, hw: tuple[int, int]) -> Any:
    """Emit MIL ops for every layer; `hw` is the input's fixed (height, width)."""
    blobs: dict[str, Any] = {graph.input: x}
    sizes: dict[str, tuple[int, int]] = {graph.input: hw}

    for i, layer in enumerate(graph.layers):
        tag = f"l{i}"
        if isinstance(layer, Conv):
            top, left, bottom, right = layer.pad
            h, w = sizes[layer.input]
            kh, kw = layer.weight.shape[2:]
            # fp16 source weights widen to fp32 exactly, and the fp16 pass narrows them back
            # exactly, so the stored weights equal the source's bit for bit.
            out = mb.conv(
                x=blobs[layer.input], weight=layer.weight.astype(np.float32),
                bias=None if layer.bias is None else layer.bias.astype(np.float32),
                strides=list(layer.stride), dilations=list(layer.dilation), pad_type="custom",
                pad=[top, bottom, left, right], name=tag,
            )
            if layer.leaky == 0.0:
                out = mb.relu(x=out, name=f"{tag}_act")
            elif layer.leaky is not None:
                out = mb.leaky_relu(x=out, alpha=float(layer.leaky), name=f"{tag}_act")
            sh, sw = layer.stride
            dh, dw = layer.dilation
            sizes[layer.output] = ((h + top + bottom - dh * (kh - 1) - 1) // sh + 1,
                                   (w + left + right - dw * (kw - 1) - 1) // sw + 1)
        elif isinstance(layer, PReLU):
            out = mb.prelu(x=blobs[layer.input], alpha=layer.slope.astype(np.float32), name=tag)
            sizes[layer.output] = sizes[layer.input]
        elif isinstance(layer, Concat):
            out = mb.concat(values=[blobs[b] for b in layer.inputs], axis=1, name=tag)
            sizes[layer.output] = sizes[layer.inputs[0]]
        elif isinstance(layer, WeightedSum):
            out = None
            for j, (b, c) in enumerate(zip(layer.inputs, layer.coeffs, strict=True)):
                term = blobs[b] if c == 1.0 else mb.mul(x=blobs[b], y=np.float32(c),
                                                        name=f"{tag}_c{j}")
                out = term if out is None else mb.add(x=out, y=term, name=f"{tag}_s{j}")
            sizes[layer.output] = sizes[layer.inputs[0]]
        elif isinstance(layer, Resize):
            out, sizes[layer.output] = _resize(mb, layer, blobs[layer.input],
                                               sizes[layer.input], tag)
        elif isinstance(layer, PixelShuffle):
            out = mb.pixel_shuffle(x=blobs[layer.input], upscale_factor=layer.factor, name=tag)
            h, w = sizes[layer.input]
            sizes[layer.output] = (h * layer.factor, w * layer.factor)
        elif isinstance(layer, Deconv):
            top, left, bottom, right = layer.pad
            h, w = sizes[layer.input]
            kh, kw = layer.weight.shape[2:]
            sh, sw = layer.stride
            out = mb.conv_transpose(
                x=blobs[layer.input], weight=layer.weight.astype(np.float32),
                bias=None if layer.bias is None else layer.bias.astype(np.float32),
                strides=[sh, sw], pad_type="custom", pad=[top, bottom, left, right], name=tag,
            )
            if layer.leaky is not None:
                out = mb.leaky_relu(x=out, alpha=float(layer.leaky), name=f"{tag}_act")
            sizes[layer.output] = ((h - 1) * sh + kh - top - bottom,
                                   (w - 1) * sw + kw - left - right)
        elif isinstance(layer, GlobalAvgPool):
            # Vector blobs stay (N, C, 1, 1), as in the ONNX build.
            out = mb.reduce_mean(x=blobs[layer.input], axes=[2, 3], keep_dims=True, name=tag)
            sizes[layer.output] = (1, 1)
        elif isinstance(layer, Dense):
            out = mb.conv(x=blobs[layer.input],
                          weight=layer.weight.astype(np.float32)[:, :, None, None],
                          bias=None if layer.bias is None else layer.bias.astype(np.float32),
                          name=tag)
            if layer.activation == "relu":
                out = mb.relu(x=out, name=f"{tag}_act")
            elif layer.activation == "sigmoid":
                out = mb.sigmoid(x=out, name=f"{tag}_act")
            sizes[layer.output] = (1, 1)
        elif isinstance(layer, ChannelScale):
            out = mb.mul(x=blobs[layer.inputs[0]], y=blobs[layer.inputs[1]], name=tag)
            sizes[layer.output] = sizes[layer.inputs[0]]
        elif isinstance(layer, Crop):
            top, left, bottom, right = layer.crop
            h, w = sizes[layer.input]
            out = mb.crop(x=blobs[layer.input], crop_height=[top, bottom],
                          crop_width=[left, right], name=tag)
            sizes[layer.output] = (h - top - bottom, w - left - right)
        else:  # pragma: no cover - Graph admits no other layer
            raise ModelError(f"layer {type(layer).__name__} has no Core ML translation")
        blobs[layer.output] = out
    return mb.identity(x=blobs[graph.output], name=OUTPUT_NAME)


def _resize(mb: Any, layer: Resize, x: Any, hw: tuple[int, int],
            tag: str) -> tuple[Any, tuple[int, int]]:
    h, w = hw
    oh, ow = resize_size(h, layer.scale_h), resize_size(w, layer.scale_w)
    fh, fw = oh // h, ow // w
    if layer.mode == "nearest" and fh * h == oh and fw * w == ow:
        # An integer nearest upscale repeats each pixel, exactly what MIL's native op does.
        return mb.upsample_nearest_neighbor(x=x, scale_factor_height=fh, scale_factor_width=fw,
                                            name=tag), (oh, ow)
    cols = resample_matrix(w, ow, layer.mode).T.astype(np.float32)  # (w, ow)
    rows = resample_matrix(h, oh, layer.mode).astype(np.float32)  # (oh, h)
    out = mb.matmul(x=x, y=cols, name=f"{tag}_w")
    out = mb.matmul(x=rows, y=out, name=f"{tag}_h")
    return out, (oh, ow)
