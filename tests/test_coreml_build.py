"""Core ML packages built from the ncnn weights: their spec, their weights and their arithmetic.

On Linux coremltools can build and save but not predict, so the saved program is read back and
checked three ways: its interface, its stored weights (bit for bit), and what it computes, by
running its ops in numpy as MIL defines them and comparing with Tencent's ncnn
(tests/reference.py). The tests marked macos run the packages in Core ML itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import psnr
from onnx import TensorProto, helper
from reference import dihedral, ncnn_run, ncnn_run_param

from upscaler.errors import ExecutorError
from upscaler.executors import coreml
from upscaler.executors.base import ExecutorOptions
from upscaler.executors.registry import tile_budget
from upscaler.executors.tta import TTAExecutor
from upscaler.frame_upscaler import FrameUpscaler
from upscaler.models.builds import mlpackage_file
from upscaler.models.cache import BuildKey, built_path
from upscaler.models.coreml_builder import resample_matrix
from upscaler.models.graph import Conv, Deconv, PReLU
from upscaler.models.registry import MODELS, ModelRef, resolve_model
from upscaler.pixels import from_planes, to_planes
from upscaler.tiling import choose_tile


@pytest.fixture(scope="module", autouse=True)
def ct() -> Any:
    """coremltools, imported when the first of these tests runs rather than when every test
    worker collects this file (3 s of imports, torch's among them)."""
    return pytest.importorskip("coremltools")

TILE = 32
MACOS13_SPEC = 7
BUILT = {  # model -> batch it is built for
    "realesr-animevideov3": 2,
    "realesr-animevideov3-x2": 1,
    "realesrgan-x4plus-anime": 1,
}
macos = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML runs on macOS only")


@pytest.fixture(scope="module")
def packages() -> dict[str, Path]:
    return {name: mlpackage_file(resolve_model(name), TILE, batch)
            for name, batch in BUILT.items()}


def load_program(package: Path) -> Any:
    """The MIL program of a saved package, weights read from its blob file."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = ct.utils.load_spec(str(package))
    weights = package / "Data" / "com.apple.CoreML" / "weights"
    return load(spec, specification_version=spec.specificationVersion,
                file_weights_dir=str(weights)).functions["main"]


def cel_tiles(cel: np.ndarray, count: int, side: int = TILE) -> np.ndarray:
    """`count` different (3, side, side) float32 crops of the drawn cel."""
    chw = cel.transpose(2, 0, 1).astype(np.float32) / 255
    return np.ascontiguousarray(
        np.stack([chw[:, 10 * i : 10 * i + side, 20 + 25 * i : 20 + 25 * i + side]
                  for i in range(count)]))


@pytest.mark.parametrize("name", BUILT)
def test_package_spec(packages: dict[str, Path], name: str, ct: Any) -> None:
    spec = ct.utils.load_spec(str(packages[name]))
    scale, batch = MODELS[name].scale, BUILT[name]
    assert spec.specificationVersion == MACOS13_SPEC
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "input"
    assert list(inp.type.multiArrayType.shape) == [batch, 3, TILE, TILE]
    assert out.name == "output"
    assert list(out.type.multiArrayType.shape) == [batch, 3, TILE * scale, TILE * scale]
    ops = load_program(packages[name]).operations
    computing = [op for op in ops if op.op_type not in ("const", "cast")]
    fp16 = ct.converters.mil.mil.types.fp16
    assert computing and all(op.outputs[0].dtype == fp16 for op in computing)


@pytest.mark.parametrize("name", BUILT)
def test_weights_equal_the_source(packages: dict[str, Path], name: str, ct: Any) -> None:
    graph = resolve_model(name).graph()
    ops = load_program(packages[name]).operations
    convs = [op for op in ops if op.op_type == "conv"]
    prelus = [op for op in ops if op.op_type == "prelu"]
    source_convs = [layer for layer in graph.layers if isinstance(layer, Conv)]
    source_prelus = [layer for layer in graph.layers if isinstance(layer, PReLU)]
    assert len(convs) == len(source_convs) and len(prelus) == len(source_prelus)
    for op, layer in zip(convs, source_convs, strict=True):
        stored = op.weight.val
        assert stored.dtype == np.float16 and layer.weight.dtype == np.float16
        assert np.array_equal(stored.view(np.uint16), layer.weight.view(np.uint16))
        # Biases and slopes are fp32 in ncnn files: stored as their nearest fp16.
        np.testing.assert_array_equal(op.bias.val, layer.bias.astype(np.float16))
    for op, layer in zip(prelus, source_prelus, strict=True):
        np.testing.assert_array_equal(op.alpha.val, layer.slope.astype(np.float16))


def test_mlpackage_file_is_cached_and_user_packages_pass_through(
        packages: dict[str, Path]) -> None:
    path = packages["realesr-animevideov3-x2"]
    stamp = path.stat().st_mtime_ns
    again = mlpackage_file(resolve_model("realesr-animevideov3-x2"), TILE, 1)
    assert again == path and again.stat().st_mtime_ns == stamp
    user = ModelRef("mine", "mlpackage", path, None)
    assert mlpackage_file(user, 64, 4) == path


def input_output_shapes(package: Path) -> tuple[list[int], list[int]]:
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    (inp,), (out,) = spec.description.input, spec.description.output
    return list(inp.type.multiArrayType.shape), list(out.type.multiArrayType.shape)


@pytest.mark.slow
def test_package_for_a_rectangular_shape_computes_like_ncnn(cel: np.ndarray) -> None:
    # The x2 model has the bicubic reduction, whose matrices depend on the exact shape.
    model = resolve_model("realesr-animevideov3-x2")
    package = mlpackage_file(model, (24, 40))
    assert input_output_shapes(package) == ([1, 3, 24, 40], [1, 3, 48, 80])
    assert package == built_path(BuildKey(model, "mlpackage", "fp16", (1, 24, 40)))
    assert "1x24x40" in package.name
    # Another shape is another package, cached beside it.
    other = mlpackage_file(model, (40, 24))
    assert other != package and input_output_shapes(other)[0] == [1, 3, 40, 24]
    x = np.ascontiguousarray(cel.transpose(2, 0, 1)[None, :, 30:54, 40:80], np.float32) / 255
    got = run_program(load_program(package), x)
    assert psnr(got, ncnn_run(model, x)) >= 60


@pytest.mark.parametrize(("name", "frame", "shape"), [
    # Within the Core ML memory budget of an 8 GB Mac (fp16 activations in a quarter of the
    # RAM), the package is built for the whole frame...
    ("realesrgan-x4plus-anime", (360, 640), (360, 640)),
    ("realesr-animevideov3", (1080, 1920), (1080, 1920)),
    # ... and beyond it for the fewest tiles that divide the frame evenly.
    ("realesrgan-x4plus-anime", (720, 1280), (368, 648)),
])
def test_core_ml_shape_for_a_job(name: str, frame: tuple[int, int],
                                 shape: tuple[int, int]) -> None:
    model = resolve_model(name)
    budget = tile_budget("coreml", model, total_memory=8 << 30, free_memory=8 << 30)
    assert choose_tile(*frame, 16, max_pixels=budget) == shape


def test_package_at_a_frame_shape_chosen_by_the_plan() -> None:
    model = resolve_model("realesr-animevideov3")
    budget = tile_budget("coreml", model, total_memory=8 << 30, free_memory=8 << 30)
    shape = choose_tile(72, 128, 16, max_pixels=budget)
    assert shape == (72, 128)  # a whole frame
    assert input_output_shapes(mlpackage_file(model, shape)) == ([1, 3, 72, 128],
                                                                 [1, 3, 288, 512])


RESIZES = [
    ("bicubic", 128, 64), ("bicubic", 128, 96), ("bicubic", 13, 9), ("bicubic", 8, 16),
    ("bilinear", 128, 64), ("bilinear", 13, 9), ("bilinear", 7, 21),
    ("nearest", 8, 32), ("nearest", 12, 6), ("nearest", 10, 25),
]
ONNX_RESIZE: dict[str, dict[str, Any]] = {
    "nearest": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor"},
    "bilinear": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    "bicubic": {"mode": "cubic", "coordinate_transformation_mode": "half_pixel",
                "cubic_coeff_a": -0.75},
}


def resize_by_matrices(x: np.ndarray, out_h: int, out_w: int, mode: str) -> np.ndarray:
    rows = resample_matrix(x.shape[-2], out_h, mode)  # type: ignore[arg-type]
    cols = resample_matrix(x.shape[-1], out_w, mode)  # type: ignore[arg-type]
    return rows @ x.astype(np.float64) @ cols.T


@pytest.mark.parametrize(("mode", "in_size", "out_size"), RESIZES)
def test_resample_matrix_matches_onnxruntime(mode: str, in_size: int, out_size: int) -> None:
    in_h, out_h = in_size + 3, (in_size + 3) * out_size // in_size
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 2, out_h, out_size])
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], **ONNX_RESIZE[mode])
    graph = helper.make_graph(
        [node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, 2, in_h, in_size), dtype=np.float32)
    expected = session.run(None, {"x": x})[0]
    # ONNX Runtime places samples in float32 from out/in, ncnn from in/out: where the sizes
    # do not divide, positions differ in the last bits. A wrong tap would be off by ~0.1.
    np.testing.assert_allclose(resize_by_matrices(x, out_h, out_size, mode), expected,
                               atol=2e-5)


@pytest.mark.parametrize(("mode", "in_size", "out_size"), RESIZES)
def test_resample_matrix_matches_ncnn(mode: str, in_size: int, out_size: int) -> None:
    in_h, out_h = in_size + 3, (in_size + 3) * out_size // in_size
    resize_type = {"nearest": 1, "bilinear": 2, "bicubic": 3}[mode]
    x = np.random.default_rng(2).random((2, in_h, in_size), dtype=np.float32)
    expected = ncnn_run_param(f"7767517\n2 2\nInput in 0 1 in\n"
                              f"Interp resize 1 1 in out 0={resize_type} 3={out_h} 4={out_size}\n",
                              x)
    np.testing.assert_allclose(resize_by_matrices(x, out_h, out_size, mode), expected,
                               atol=4e-6)


# --- the saved program run in numpy, op by op as MIL defines them --------------------------

def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: np.ndarray,
          pad: np.ndarray, dilations: np.ndarray) -> np.ndarray:
    top, bottom, left, right = pad
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_ch, in_ch, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cols = np.stack([x[:, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw]
                     for i in range(kh) for j in range(kw)], axis=2)  # (n, c, k, oh, ow)
    y = np.einsum("nckhw,ock->nohw", cols, w.reshape(out_ch, in_ch, kh * kw), optimize=True)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def _pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    n, c, h, w = x.shape
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (r * r), h * r, w * r)


def run_program(function: Any, x: np.ndarray) -> np.ndarray:
    """Evaluate a loaded MIL function in float32 (fp16 weights widened exactly)."""
    values: dict[str, Any] = {function.inputs["input"].name: x}

    def v(var: Any) -> Any:
        if var.val is not None and var.name not in values:
            val = var.val
            return val.astype(np.float32) if isinstance(val, np.ndarray) and \
                val.dtype == np.float16 else val
        return values[var.name]

    for op in function.operations:
        a = op.inputs
        kind = op.op_type
        if kind == "const":
            continue
        if kind in ("cast", "identity"):
            y = v(a["x"])
        elif kind == "conv":
            y = _conv(v(a["x"]), v(a["weight"]), v(a["bias"]) if "bias" in a else None,
                      v(a["strides"]), v(a["pad"]), v(a["dilations"]))
        elif kind == "prelu":
            xv = v(a["x"])
            y = np.where(xv >= 0, xv, xv * v(a["alpha"]).reshape(1, -1, 1, 1))
        elif kind == "leaky_relu":
            xv = v(a["x"])
            y = np.where(xv >= 0, xv, xv * v(a["alpha"]))
        elif kind == "relu":
            y = np.maximum(v(a["x"]), 0)
        elif kind == "concat":
            y = np.concatenate([v(t) for t in a["values"]], axis=int(v(a["axis"])))
        elif kind == "add":
            y = v(a["x"]) + v(a["y"])
        elif kind == "mul":
            y = v(a["x"]) * v(a["y"])
        elif kind == "matmul":
            y = np.matmul(v(a["x"]), v(a["y"]))
        elif kind == "pixel_shuffle":
            y = _pixel_shuffle(v(a["x"]), int(v(a["upscale_factor"])))
        elif kind == "upsample_nearest_neighbor":
            fh, fw = int(v(a["scale_factor_height"])), int(v(a["scale_factor_width"]))
            y = v(a["x"]).repeat(fh, axis=2).repeat(fw, axis=3)
        else:
            raise NotImplementedError(f"MIL op {kind} in the test interpreter")
        values[op.outputs[0].name] = np.asarray(y, np.float32)
    return values[function.outputs[0].name]


# The fp16 program against ncnn fp32, measured: 88.0, 89.6 and 76.1 dB.
PROGRAM_DB = {"realesr-animevideov3": 85, "realesr-animevideov3-x2": 85,
              "realesrgan-x4plus-anime": 73}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow)
                                  if name == "realesrgan-x4plus-anime" else name
                                  for name in BUILT])  # the numpy run of x4plus-anime: 4-9 s
def test_program_computes_like_ncnn(packages: dict[str, Path], name: str,
                                    cel: np.ndarray) -> None:
    x = cel_tiles(cel, BUILT[name])
    got = run_program(load_program(packages[name]), x)
    expected = ncnn_run(resolve_model(name), x)
    assert got.shape == expected.shape
    assert psnr(got, expected) >= PROGRAM_DB[name]


# --- macOS: Core ML itself ---------------------------------------------------------------

def test_unavailable_reason_matches_platform() -> None:
    reason = coreml.unavailable_reason()
    if sys.platform != "darwin":
        assert reason is not None and "macOS" in reason
        with pytest.raises(ExecutorError, match="macOS"):
            coreml.CoreMLExecutor(resolve_model("realesr-animevideov3"), ExecutorOptions())


# Core ML itself runs only on the macOS CI job, so its figures are not measured here; the same
# fp16 programs run op by op in numpy give 76-90 dB (above), Core ML's own fp16 kernels less.
@macos
@pytest.mark.macos
@pytest.mark.parametrize("name", sorted(n for n, s in MODELS.items() if s.processing is None))
def test_coreml_predicts_like_ncnn(name: str, cel: np.ndarray, ct: Any) -> None:
    model = resolve_model(name)
    package = mlpackage_file(model, TILE, 1)
    x = cel_tiles(cel, 1)
    mlmodel = ct.models.MLModel(str(package))
    got = mlmodel.predict({"input": x})["output"]
    assert psnr(got, ncnn_run(model, x)) >= 45


@macos
@pytest.mark.macos
@pytest.mark.parametrize("units", ["ALL", "CPU_ONLY"])
def test_coreml_executor_batches(units: str, cel: np.ndarray) -> None:
    assert coreml.unavailable_reason() is None
    model = resolve_model("realesr-animevideov3")
    options = ExecutorOptions(tile=TILE, device=units)
    x = cel_tiles(cel, 3)  # three tiles in one batch prediction
    with coreml.CoreMLExecutor(model, options) as executor:
        assert (executor.fixed_tile, executor.scale) == ((TILE, TILE), 4)
        got = executor.run(x)
    assert got.shape == (3, 3, TILE * 4, TILE * 4)
    assert psnr(got, ncnn_run(model, x)) >= 45


@macos
@pytest.mark.macos
def test_coreml_runs_a_frame_at_its_own_shape(cel: np.ndarray) -> None:
    model = resolve_model("realesr-animevideov3")
    frame = cel[:40, :64]
    with coreml.CoreMLExecutor(model, ExecutorOptions()) as executor:
        upscaler = FrameUpscaler(executor, batch=None,
                                 max_pixels=tile_budget("coreml", model))
        out = upscaler.upscale(frame)
        assert executor.fixed_tile == (40, 64) and upscaler.tiles_run == 1
        # Over the budget: two even tiles, one package for their shape, one batch prediction.
        tiled = FrameUpscaler(executor, batch=None, max_pixels=40 * 40).upscale(frame)
        assert executor.fixed_tile == (40, 40)
    expected = from_planes(ncnn_run(model, to_planes(frame[None]))[0], np.uint8)
    assert out.dtype == tiled.dtype == np.uint8
    assert psnr(out, expected, 255) >= 45
    assert psnr(tiled, out, 255) >= 45


@macos
@pytest.mark.macos
def test_coreml_tta_runs_a_frame_and_its_transpose(cel: np.ndarray) -> None:
    """--tta on Core ML: a non-square frame runs at its shape and transposed, both packages
    kept loaded, and the executor is left on the frame's own shape, which the tiler planned."""
    model = resolve_model("realesr-animevideov3")
    frame = cel[:40, :64]
    with coreml.CoreMLExecutor(model, ExecutorOptions()) as inner:
        upscaler = FrameUpscaler(TTAExecutor(inner), batch=None,
                                 max_pixels=tile_budget("coreml", model, tta=True))
        out = upscaler.upscale(frame)
        upscaler.upscale(frame)
        assert inner.fixed_tile == (40, 64) and upscaler.tiles_run == 2
        assert sorted(inner._kept) == [(40, 64), (64, 40)]
    total = np.zeros((160, 256, 3), np.float64)
    for variant, back in dihedral(frame.astype(np.float32) / 255):
        total += back(ncnn_run(model, np.ascontiguousarray(variant.transpose(2, 0, 1)))
                      .transpose(1, 2, 0))
    expected = np.clip(np.rint(total / 8 * 255), 0, 255)
    assert psnr(out, expected, 255) >= 45


@pytest.mark.parametrize("name", ["realcugan-x2-conservative", "waifu2x-cunet-x1-noise0"])
def test_family_package_spec(name: str, ct: Any) -> None:
    """Real-CUGAN and waifu2x build as their unpadded networks: (L + 2 * margin) in, scale * L
    out, with the deconvolutions' weights and the squeeze-excitation ops."""
    model = resolve_model(name)
    side = 40 + 2 * model.margin
    package = mlpackage_file(model, side, 1)
    spec = ct.utils.load_spec(str(package))
    (inp,), (out,) = spec.description.input, spec.description.output
    assert list(inp.type.multiArrayType.shape) == [1, 3, side, side]
    assert list(out.type.multiArrayType.shape) == [1, 3, 40 * model.scale, 40 * model.scale]
    ops = load_program(package).operations
    kinds = {op.op_type for op in ops}
    assert {"conv_transpose", "reduce_mean", "sigmoid", "crop", "mul"} <= kinds
    source = [layer for layer in model.graph().layers if isinstance(layer, Deconv)]
    stored = [op for op in ops if op.op_type == "conv_transpose"]
    assert len(stored) == len(source)
    for op, layer in zip(stored, source, strict=True):
        # fp16 as stored (Real-CUGAN's files), or rounded once to fp16 (waifu2x's are fp32).
        assert np.array_equal(op.weight.val, layer.weight.astype(np.float16))
