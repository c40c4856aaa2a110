"""Read an ncnn `.param` + `.bin` pair into a Graph.

The `.param` file is text: a magic number, "layer_count blob_count", then one layer a line:
`Type name n_in n_out in... out... key=value...`, where a negative key -(23300 + k) holds an array
`count,v1,v2,...` for param k. The `.bin` file holds each weighted layer's data in layer order:
a Convolution's weights behind a 4-byte tag (0x01306B47: float16, 0: float32), padded to 4 bytes,
then its bias as raw float32; a PReLU's slopes as raw float32. Deconvolution and InnerProduct
store theirs as Convolution does.

Only what Real-ESRGAN's, Real-CUGAN's and waifu2x's networks use is accepted; anything else is a
ModelError naming the file and the line, never a silently wrong model.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from upscaler.errors import ModelError
from upscaler.models.graph import (
    BlobShape,
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
    ResizeMode,
    WeightedSum,
    layer_inputs,
    layer_shape,
)

PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32_SCALED = 0x0002C056

_RESIZE_MODES: dict[int, ResizeMode] = {1: "nearest", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class _LayerLine:
    kind: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, int | float | tuple[int | float, ...]]
    line: int


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_param(path: Path) -> list[_LayerLine]:
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read ncnn param file: {e}", path) from e
    if not lines or lines[0].strip() != str(PARAM_MAGIC):
        raise ModelError(f"not an ncnn param file (first line is not {PARAM_MAGIC})", path)
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError) as e:
        raise ModelError("line 2: expected 'layer_count blob_count'", path) from e

    layers = []
    for lineno, text in enumerate(lines[2:], start=3):
        fields = text.split()
        if not fields:
            continue
        try:
            kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
            blobs = fields[4 : 4 + n_in + n_out]
            if len(blobs) != n_in + n_out:
                raise ValueError("too few blob names")
            params: dict[int, int | float | tuple[int | float, ...]] = {}
            for item in fields[4 + n_in + n_out :]:
                key_text, value = item.split("=", 1)
                key = int(key_text)
                if key <= -23300:
                    count, *values = value.split(",")
                    if len(values) != int(count):
                        raise ValueError(f"array param {key} has {len(values)} of {count} values")
                    params[-key - 23300] = tuple(_number(v) for v in values)
                else:
                    params[key] = _number(value)
        except (IndexError, ValueError) as e:
            raise ModelError(f"line {lineno}: malformed layer line ({e})", path) from e
        layers.append(
            _LayerLine(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params, lineno)
        )
    if len(layers) != layer_count:
        raise ModelError(f"header says {layer_count} layers, file has {len(layers)}", path)
    return layers


class _BinReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read ncnn weight file: {e}", path) from e
        self.offset = 0

    def _take(self, nbytes: int, what: str) -> bytes:
        end = self.offset + nbytes
        if end > len(self.data):
            raise ModelError(
                f"truncated: {what} needs {nbytes} bytes at offset {self.offset}, "
                f"file has {len(self.data)}",
                self.path,
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").copy()

    def tagged(self, count: int, what: str) -> np.ndarray:
        """Weights behind a storage tag, as ncnn's ModelBin::load(w, 0) reads them."""
        tag = int.from_bytes(self._take(4, what + " tag"), "little")
        if tag == TAG_FP16:
            nbytes = (2 * count + 3) // 4 * 4
            return np.frombuffer(self._take(nbytes, what), dtype="<f2")[:count].copy()
        if tag in (0, TAG_FP32_SCALED):
            return self.raw_fp32(count, what)
        raise ModelError(
            f"{what}: unsupported weight storage tag 0x{tag:08X} at offset {self.offset - 4} "
            "(quantized or corrupt weights)",
            self.path,
        )


def _int_param(layer: _LayerLine, key: int, default: int) -> int:
    value = layer.params.get(key, default)
    if not isinstance(value, int):
        raise ValueError(f"param {key} should be an integer, got {value!r}")
    return value


def _leaky(layer: _LayerLine) -> float | None:
    """A convolution's activation as Conv.leaky: None, 0.0 (ReLU) or the LeakyReLU slope."""
    activation = _int_param(layer, 9, 0)
    if activation == 0:
        return None
    if activation == 1:
        return 0.0
    if activation == 2:
        act_params = layer.params.get(10, (0.0,))
        return float(act_params[0]) if isinstance(act_params, tuple) else float(act_params)
    raise ValueError(f"activation type {activation} is not supported")


def _window(layer: _LayerLine) -> tuple[int, ...]:
    """(kh, kw, dh, dw, sh, sw, pt, pl, pb, pr): a (de)convolution's window, as ncnn's params
    give it (height defaulting to width, bottom to top, right to left)."""
    kw = _int_param(layer, 1, 0)
    dw = _int_param(layer, 2, 1)
    sw = _int_param(layer, 3, 1)
    pl = _int_param(layer, 4, 0)
    pt = _int_param(layer, 14, pl)
    window = (_int_param(layer, 11, kw), kw, _int_param(layer, 12, dw), dw,
              _int_param(layer, 13, sw), sw, pt, pl, _int_param(layer, 16, pt),
              _int_param(layer, 15, pl))
    if min(window[:6]) < 1:
        raise ValueError(f"kernel {window[0]}x{window[1]}, dilation {window[2]}x{window[3]} "
                         f"and stride {window[4]}x{window[5]} must be at least 1")
    return window


def _deconv(layer: _LayerLine, src: str, dst: str, weights: _BinReader) -> Deconv:
    out_ch = _int_param(layer, 0, 0)
    kh, kw, dh, dw, sh, sw, pt, pl, pb, pr = _window(layer)
    size = _int_param(layer, 6, 0)
    if dh != 1 or dw != 1 or _int_param(layer, 7, 1) != 1:
        raise ValueError("dilated or grouped deconvolution is not supported")
    if min(pl, pt, pr, pb) < 0 or any(_int_param(layer, k, 0) for k in (18, 19, 20, 21, 28)):
        raise ValueError("automatic padding, output padding or output size is not supported")
    if out_ch <= 0 or kw <= 0 or size % (out_ch * kh * kw):
        raise ValueError(f"weight size {size} does not fit {out_ch} outputs of {kh}x{kw}")
    in_ch = size // (out_ch * kh * kw)
    leaky = _leaky(layer)
    # ncnn keeps (out, in, kh, kw) and scatters each input pixel through the kernel unflipped,
    # as ConvTranspose does with its (in, out, kh, kw): the same numbers, axes swapped.
    weight = weights.tagged(size, f"{layer.name} weights").reshape(out_ch, in_ch, kh, kw)
    bias = weights.raw_fp32(out_ch, f"{layer.name} bias") if _int_param(layer, 5, 0) else None
    return Deconv(src, dst, np.ascontiguousarray(weight.transpose(1, 0, 2, 3)), bias, (sh, sw),
                  (pt, pl, pb, pr), leaky)


def _dense(layer: _LayerLine, src: str, dst: str, weights: _BinReader) -> Dense:
    out_ch = _int_param(layer, 0, 0)
    size = _int_param(layer, 2, 0)
    if _int_param(layer, 8, 0):
        raise ValueError("int8 InnerProduct is not supported")
    if out_ch <= 0 or size % out_ch:
        raise ValueError(f"weight size {size} does not fit {out_ch} outputs")
    activations = {0: None, 1: "relu", 4: "sigmoid"}
    activation = _int_param(layer, 9, 0)
    if activation not in activations:
        raise ValueError(f"activation type {activation} is not supported")
    weight = weights.tagged(size, f"{layer.name} weights").reshape(out_ch, size // out_ch)
    bias = weights.raw_fp32(out_ch, f"{layer.name} bias") if _int_param(layer, 1, 0) else None
    return Dense(src, dst, weight, bias, activations[activation])  # type: ignore[arg-type]


def _crop(layer: _LayerLine, src: tuple[str, ...], dst: str,
          shapes: dict[str, BlobShape]) -> Crop:
    """Both of ncnn's Crop styles as fixed crops: per-axis starts/ends/axes arrays (negative
    ends count from the end), or offsets (0=w, 1=h) and the size of a second blob."""
    p = layer.params
    if len(src) == 2:
        if _int_param(layer, 2, 0) or any(k in p for k in (3, 4, 5, 6, 7, 8, 9)):
            raise ValueError("only spatial crops to another blob's size are supported")
        left, top = _int_param(layer, 0, 0), _int_param(layer, 1, 0)
        have, like = shapes[src[0]], shapes[src[1]]
        if have.scale != like.scale:
            raise ValueError("Crop to a blob of another scale is not supported")
        extra = have.offset - like.offset
        if extra.denominator != 1 or extra < max(top, left):
            raise ValueError(f"cannot crop {have} to the size of {like}")
        return Crop(src[0], dst, (top, left, int(extra) - top, int(extra) - left))
    starts, ends, axes = (p.get(k, ()) for k in (9, 10, 11))
    if not (isinstance(starts, tuple) and isinstance(ends, tuple) and isinstance(axes, tuple)):
        raise ValueError("only array-style starts, ends and axes are supported")
    crop = {2: [0, 0], 3: [0, 0]}  # per NCHW axis: from the start, from the end
    for start, end, axis in zip(starts, ends, axes, strict=True):
        axis = int(axis) % 3 + 1  # ncnn's (c, h, w), from either end -> NCHW
        if axis not in crop or not isinstance(start, int) or not isinstance(end, int):
            raise ValueError(f"crop along axis {axis} is not supported")
        if start < 0 or not (end < 0 or end >= 1 << 30):
            raise ValueError("only crops counted from each end are supported")
        crop[axis] = [start, -end if end < 0 else 0]
    return Crop(src[0], dst, (crop[2][0], crop[3][0], crop[2][1], crop[3][1]))


def _conv(layer: _LayerLine, src: str, dst: str, weights: _BinReader) -> Conv:
    out_ch = _int_param(layer, 0, 0)
    kh, kw, dh, dw, sh, sw, pt, pl, pb, pr = _window(layer)
    has_bias = _int_param(layer, 5, 0)
    size = _int_param(layer, 6, 0)
    if min(pl, pt, pr, pb) < 0:
        raise ValueError("automatic ('same') padding is not supported")
    if _int_param(layer, 8, 0) or _int_param(layer, 19, 0):
        raise ValueError("int8 or dynamic-weight convolution is not supported")
    if out_ch <= 0 or kw <= 0 or size % (out_ch * kh * kw):
        raise ValueError(f"weight size {size} does not fit {out_ch} outputs of {kh}x{kw}")
    leaky = _leaky(layer)
    in_ch = size // (out_ch * kh * kw)
    weight = weights.tagged(size, f"{layer.name} weights").reshape(out_ch, in_ch, kh, kw)
    bias = weights.raw_fp32(out_ch, f"{layer.name} bias") if has_bias else None
    return Conv(src, dst, weight, bias, (sh, sw), (pt, pl, pb, pr), (dh, dw), leaky)


def _layer(layer: _LayerLine, src: tuple[str, ...], dst: str, weights: _BinReader,
           shapes: dict[str, BlobShape]) -> Layer:
    kind, p = layer.kind, layer.params
    if kind == "Convolution":
        return _conv(layer, src[0], dst, weights)
    if kind == "Deconvolution":
        return _deconv(layer, src[0], dst, weights)
    if kind == "InnerProduct":
        if not shapes[src[0]].is_vector:
            raise ValueError("InnerProduct is supported on pooled vectors only")
        return _dense(layer, src[0], dst, weights)
    if kind == "Pooling":
        if _int_param(layer, 0, 0) != 1 or _int_param(layer, 4, 0) != 1:
            raise ValueError("only global average pooling is supported")
        return GlobalAvgPool(src[0], dst)
    if kind == "Crop":
        return _crop(layer, src, dst, shapes)
    if kind == "Scale" or (kind == "BinaryOp" and _int_param(layer, 0, 0) == 2):
        # Scale with its factors from a second blob (0=-233), BinaryOp MUL by a vector blob:
        # both scale each channel by the squeeze-excitation gate.
        if len(src) != 2 or not shapes[src[1]].is_vector or shapes[src[0]].is_vector or (
                kind == "Scale" and (_int_param(layer, 0, 0) != -233 or _int_param(layer, 1, 0))):
            raise ValueError("only a per-channel multiply by a pooled vector is supported")
        return ChannelScale((src[0], src[1]), dst)
    if kind == "PReLU":
        count = _int_param(layer, 0, 1)
        return PReLU(src[0], dst, weights.raw_fp32(count, f"{layer.name} slopes"))
    if kind == "Concat":
        if _int_param(layer, 0, 0) != 0:
            raise ValueError("only channel concatenation (axis 0) is supported")
        return Concat(src, dst)
    if kind == "Eltwise":
        if _int_param(layer, 0, 1) != 1:
            raise ValueError("only Eltwise SUM is supported")
        coeffs = p.get(1, ())
        coeffs = coeffs if isinstance(coeffs, tuple) and coeffs else (1.0,) * len(src)
        if len(coeffs) != len(src):
            raise ValueError(f"{len(coeffs)} coefficients for {len(src)} inputs")
        return WeightedSum(src, dst, tuple(float(c) for c in coeffs))
    if kind == "BinaryOp":
        op = _int_param(layer, 0, 0)
        if op not in (0, 1) or _int_param(layer, 1, 0) or len(src) != 2:
            raise ValueError("only BinaryOp add/sub of two blobs is supported")
        return WeightedSum(src, dst, (1.0, 1.0 if op == 0 else -1.0))
    if kind == "Interp":
        mode = _int_param(layer, 0, 0)
        if mode not in _RESIZE_MODES:
            raise ValueError(f"resize type {mode} is not supported")
        if _int_param(layer, 3, 0) or _int_param(layer, 4, 0) or _int_param(layer, 5, 0):
            raise ValueError("fixed or dynamic output size is not supported, only scale factors")
        if _int_param(layer, 6, 0):
            raise ValueError("align_corner is not supported")
        sh, sw = float(p.get(1, 1.0)), float(p.get(2, 1.0))  # type: ignore[arg-type]
        if not (sh > 0 and sw > 0):
            raise ValueError(f"scale {sh}x{sw} must be positive")
        return Resize(src[0], dst, sh, sw, _RESIZE_MODES[mode])
    if kind == "PixelShuffle":
        if _int_param(layer, 1, 0) != 0:
            raise ValueError("only PyTorch-order PixelShuffle (mode 0) is supported")
        factor = _int_param(layer, 0, 1)
        if factor < 1:
            raise ValueError(f"upscale factor {factor} must be at least 1")
        return PixelShuffle(src[0], dst, factor)
    raise ValueError(f"unsupported layer type {kind!r}")


def read_ncnn(param_path: str | Path, bin_path: str | Path | None = None) -> Graph:
    """Read an ncnn model; `bin_path` defaults to the `.bin` beside the `.param`."""
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    if not bin_path.is_file():
        raise ModelError(f"weight file {bin_path.name} not found beside it", param_path)
    lines = _parse_param(param_path)
    weights = _BinReader(bin_path)

    alias: dict[str, str] = {}  # Split outputs are the same tensor under other names
    graph_input: str | None = None
    layers: list[Layer] = []
    shapes: dict[str, BlobShape] = {}
    for line in lines:
        src = tuple(alias.get(b, b) for b in line.inputs)
        if line.kind == "Input":
            if graph_input is not None:
                raise ModelError(f"line {line.line}: more than one Input layer", param_path)
            graph_input = line.outputs[0]
            shapes[graph_input] = BlobShape(3, Fraction(1))
            continue
        if line.kind == "Split":
            for out in line.outputs:
                alias[out] = src[0]
            continue
        if len(line.outputs) != 1:
            raise ModelError(f"line {line.line}: {line.kind} with several outputs", param_path)
        try:
            missing = [b for b in src if b not in shapes]
            if missing:
                raise ValueError(f"reads undefined blob {missing[0]!r}")
            layer = _layer(line, src, line.outputs[0], weights, shapes)
            shapes[layer.output] = layer_shape(layer, [shapes[b] for b in layer_inputs(layer)])
            layers.append(layer)
        except ValueError as e:
            raise ModelError(f"line {line.line} ({line.kind} {line.name}): {e}", param_path) from e

    if graph_input is None or not layers:
        raise ModelError("no Input layer or no layers", param_path)
    if weights.offset != len(weights.data):
        raise ModelError(
            f"weight file has {len(weights.data) - weights.offset} bytes more than the "
            f"layers in {param_path.name} use (wrong or corrupt file)",
            bin_path,
        )
    produced = {graph_input} | {layer.output for layer in layers}
    for layer in layers:
        missing = [b for b in layer_inputs(layer) if b not in produced]
        if missing:
            raise ModelError(f"layer reads undefined blob {missing[0]!r}", param_path)
    return Graph(graph_input, layers[-1].output, tuple(layers), name=param_path.stem)
