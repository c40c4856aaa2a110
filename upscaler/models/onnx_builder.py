"""Build an ONNX model from a Graph: NCHW RGB in [0, 1], dynamic batch, height and width."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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
    WeightedSum,
)

Precision = Literal["fp32", "fp16"]
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"

_RESIZE_ATTRS = {
    # ncnn's nearest picks floor(dst * in / out); ONNX "asymmetric" + "floor" is the same.
    "nearest": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor"},
    "bilinear": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    "bicubic": {"mode": "cubic", "coordinate_transformation_mode": "half_pixel",
                "cubic_coeff_a": -0.75},
}


def build_onnx(graph: Graph, precision: Precision = "fp32") -> onnx.ModelProto:
    """Translate `graph`; fp16 keeps weights, inputs, outputs and arithmetic in fp16.

    A part of a graph (Graph.part, for models/exact.py) takes its given vector blobs (pooled
    means) as extra inputs of shape (N, C, 1, 1), named as the blobs.
    """
    dtype = np.float16 if precision == "fp16" else np.float32
    elem = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    names = {graph.input: INPUT_NAME, graph.output: OUTPUT_NAME}

    def blob(name: str) -> str:
        return names.get(name, name)

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    for i, layer in enumerate(graph.layers):
        tag = f"l{i}"
        if isinstance(layer, Conv | Deconv):
            # Deconv's pads crop the full transposed output, as ncnn's deconvolution padding.
            op, extra = (("Conv", {"dilations": list(layer.dilation)}) if isinstance(layer, Conv)
                         else ("ConvTranspose", {}))
            conv_out = f"{tag}_conv" if layer.leaky is not None else blob(layer.output)
            ins = [blob(layer.input), const(f"{tag}_w", layer.weight.astype(dtype))]
            if layer.bias is not None:
                ins.append(const(f"{tag}_b", layer.bias.astype(dtype)))
            nodes.append(helper.make_node(
                op, ins, [conv_out], name=tag, kernel_shape=list(layer.weight.shape[2:]),
                strides=list(layer.stride),
                pads=[layer.pad[0], layer.pad[1], layer.pad[2], layer.pad[3]], **extra,
            ))
            if layer.leaky is not None:
                nodes.append(helper.make_node(
                    "LeakyRelu", [conv_out], [blob(layer.output)], name=f"{tag}_act",
                    alpha=layer.leaky,
                ))
        elif isinstance(layer, GlobalAvgPool):
            # Vector blobs stay (N, C, 1, 1): Dense is then a 1x1 Conv and ChannelScale a Mul
            # that broadcasts.
            nodes.append(helper.make_node(
                "GlobalAveragePool", [blob(layer.input)], [blob(layer.output)], name=tag))
        elif isinstance(layer, Dense):
            dense_out = f"{tag}_fc" if layer.activation else blob(layer.output)
            weight = layer.weight[:, :, None, None].astype(dtype)
            ins = [blob(layer.input), const(f"{tag}_w", weight)]
            if layer.bias is not None:
                ins.append(const(f"{tag}_b", layer.bias.astype(dtype)))
            nodes.append(helper.make_node("Conv", ins, [dense_out], name=tag, kernel_shape=[1, 1]))
            if layer.activation:
                op = "Relu" if layer.activation == "relu" else "Sigmoid"
                nodes.append(helper.make_node(op, [dense_out], [blob(layer.output)],
                                              name=f"{tag}_act"))
        elif isinstance(layer, ChannelScale):
            nodes.append(helper.make_node(
                "Mul", [blob(b) for b in layer.inputs], [blob(layer.output)], name=tag))
        elif isinstance(layer, Crop):
            top, left, bottom, right = layer.crop
            end = np.iinfo(np.int64).max
            starts = const(f"{tag}_starts", np.array([top, left], np.int64))
            ends = const(f"{tag}_ends", np.array([-bottom if bottom else end,
                                                  -right if right else end], np.int64))
            axes = const(f"{tag}_axes", np.array([2, 3], np.int64))
            nodes.append(helper.make_node(
                "Slice", [blob(layer.input), starts, ends, axes], [blob(layer.output)], name=tag))
        elif isinstance(layer, PReLU):
            slope = const(f"{tag}_slope", layer.slope.reshape(-1, 1, 1).astype(dtype))
            nodes.append(helper.make_node(
                "PRelu", [blob(layer.input), slope], [blob(layer.output)], name=tag))
        elif isinstance(layer, Concat):
            nodes.append(helper.make_node(
                "Concat", [blob(b) for b in layer.inputs], [blob(layer.output)], name=tag, axis=1))
        elif isinstance(layer, WeightedSum):
            terms = []
            for j, (b, c) in enumerate(zip(layer.inputs, layer.coeffs, strict=True)):
                if c == 1.0:
                    terms.append(blob(b))
                    continue
                k = const(f"{tag}_c{j}", np.array(c, dtype=dtype))
                nodes.append(helper.make_node("Mul", [blob(b), k], [f"{tag}_t{j}"]))
                terms.append(f"{tag}_t{j}")
            acc = terms[0]
            for j, term in enumerate(terms[1:], start=1):
                out = blob(layer.output) if j == len(terms) - 1 else f"{tag}_s{j}"
                nodes.append(helper.make_node("Add", [acc, term], [out], name=f"{tag}_{j}"))
                acc = out
        elif isinstance(layer, Resize):
            scales = const(f"{tag}_scales",
                           np.array([1, 1, layer.scale_h, layer.scale_w], dtype=np.float32))
            nodes.append(helper.make_node(
                "Resize", [blob(layer.input), "", scales], [blob(layer.output)], name=tag,
                **_RESIZE_ATTRS[layer.mode],
            ))
        elif isinstance(layer, PixelShuffle):
            nodes.append(helper.make_node(
                "DepthToSpace", [blob(layer.input)], [blob(layer.output)], name=tag,
                blocksize=layer.factor, mode="CRD",
            ))
        else:  # pragma: no cover - Graph admits no other layer
            raise ModelError(f"layer {type(layer).__name__} has no ONNX translation")

    extra = [helper.make_tensor_value_info(name, elem, ["batch", shape.channels, 1, 1])
             for name, shape in graph.given.items()]
    onnx_graph = helper.make_graph(
        nodes, graph.name,
        [helper.make_tensor_value_info(INPUT_NAME, elem, ["batch", graph.in_channels,
                                                          "height", "width"]), *extra],
        [helper.make_tensor_value_info(OUTPUT_NAME, elem, ["batch", graph.out_channels(),
                                                           "out_height", "out_width"])],
        inits,
    )
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="upscaler")
    model.metadata_props.add(key="scale", value=str(graph.scale()))
    onnx.checker.check_model(model, full_check=True)
    return model
