"""An ONNX model wrapped to take and give pixels: (N, h, w, 3) uint8 or uint16 in, the same
out, the conversions to and from float planes inside the graph.

Why: on a GPU (ONNX Runtime's CUDA and TensorRT providers) those conversions are free, and
the frames cross the bus as pixels: a 4K frame's output is 25 MB of uint8 against 50 MB of
float16 or 100 MB of float32, and nothing is left for the CPU to convert. On the CPU the
graph's casts, multiplies and transposes are passes of their own, slower than OpenCV's one
pass (pixels.py), so the CPU provider keeps the float model.

The arithmetic is pixels.py's, step for step, so that both give the same pixels: in, a
float32 multiply by 1/peak (then a cast to the model's float16 where it takes that); out,
float32 (widened from float16), times the peak, rounded half to even as OpenCV rounds,
clamped, cast.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from upscaler.pixels import peak_of

PIXELS_IN = "upscaler_pixels_in"
PIXELS_OUT = "upscaler_pixels_out"
_N = "upscaler_pixels_"  # the names of the wrapper's own tensors start so, apart from a model's


def pixel_model(model: Any, dtype: np.dtype) -> Any:
    """`model` (an onnx.ModelProto taking and giving float (N, 3, H, W) planes in [0, 1], of
    opset 11 or later: `wraps`) as a new ModelProto taking and giving (N, H, W, 3) pixels of
    `dtype` (uint8 or uint16)."""
    import onnx
    from onnx import TensorProto, helper

    dtype = np.dtype(dtype)
    peak = peak_of(dtype)
    pixel_type = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.UINT16
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    # The image input: older models list their weights among the inputs too.
    weights = {w.name for w in graph.initializer}
    index = next(i for i, value in enumerate(graph.input) if value.name not in weights)
    source, result = graph.input[index], graph.output[0]
    in_type = source.type.tensor_type.elem_type
    out_type = result.type.tensor_type.elem_type

    def nhwc(value: Any, name: str) -> Any:
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in value.type.tensor_type.shape.dim]
        return helper.make_tensor_value_info(name, pixel_type,
                                             [dims[0], dims[2], dims[3], dims[1]])

    def scalar(name: str, value: float) -> Any:
        return helper.make_tensor(name, TensorProto.FLOAT, [], [value])

    # The float32 constants in the graph: 1/peak as numpy rounds it in pixels.to_planes.
    graph.initializer.extend([scalar(_N + "scale_in", float(np.float32(1.0 / peak))),
                              scalar(_N + "peak", peak), scalar(_N + "zero", 0.0)])
    before = [
        helper.make_node("Transpose", [PIXELS_IN], [_N + "nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", [_N + "nchw"], [_N + "float"], to=TensorProto.FLOAT),
    ]
    if in_type == TensorProto.FLOAT:
        before.append(helper.make_node("Mul", [_N + "float", _N + "scale_in"],
                                       [source.name]))
    else:
        before += [helper.make_node("Mul", [_N + "float", _N + "scale_in"],
                                    [_N + "planes"]),
                   helper.make_node("Cast", [_N + "planes"], [source.name], to=in_type)]
    after = []
    planes = result.name
    if out_type != TensorProto.FLOAT:
        after.append(helper.make_node("Cast", [planes], [_N + "planes_float"],
                                      to=TensorProto.FLOAT))
        planes = _N + "planes_float"
    after += [
        helper.make_node("Mul", [planes, _N + "peak"], [_N + "planes_scaled"]),
        helper.make_node("Round", [_N + "planes_scaled"], [_N + "planes_rounded"]),
        helper.make_node("Clip", [_N + "planes_rounded", _N + "zero", _N + "peak"],
                         [_N + "planes_clamped"]),
        helper.make_node("Cast", [_N + "planes_clamped"], [_N + "planes_pixels"],
                         to=pixel_type),
        helper.make_node("Transpose", [_N + "planes_pixels"], [PIXELS_OUT], perm=[0, 2, 3, 1]),
    ]
    nodes = [*before, *graph.node, *after]
    del graph.node[:]
    graph.node.extend(nodes)
    new_in, new_out = nhwc(source, PIXELS_IN), nhwc(result, PIXELS_OUT)
    del graph.input[index]
    graph.input.insert(index, new_in)
    del graph.output[:]
    graph.output.append(new_out)
    return wrapped


def wraps(model: Any) -> bool:
    """Whether pixel_model can wrap `model`: Round and Clip's bounds as inputs came with
    opset 11, and raising a model's opset could change what its own nodes mean."""
    return any(o.domain in ("", "ai.onnx") and o.version >= 11 for o in model.opset_import)
