"""Built model files for each runtime, from the cache or built on first use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from upscaler.models.cache import BuildKey, get_or_build
from upscaler.models.registry import ModelRef

if TYPE_CHECKING:
    from upscaler.models.onnx_builder import Precision


def onnx_file(model: ModelRef, precision: Precision = "fp32") -> Path:
    """An ONNX file for `model`: the user's own .onnx as it is, or one built from ncnn weights."""
    if model.kind == "onnx":
        return model.path

    def build(path: Path) -> None:
        # onnx takes 0.3-0.8 s to import: only when a model is built, not in every job.
        import onnx

        from upscaler.models.onnx_builder import build_onnx

        onnx.save_model(build_onnx(model.graph(), precision), path)

    return get_or_build(BuildKey(model, "onnx", precision), build)


def mlpackage_file(model: ModelRef, shape: int | tuple[int, int], batch: int = 1,
                   precision: str = "fp16") -> Path:
    """A Core ML package for `model` at input (batch, 3, height, width), `shape` being
    (height, width) or one side of a square: the user's as it is, or one built from ncnn
    weights (cached per shape)."""
    if model.kind == "mlpackage":
        return model.path
    from upscaler.models.coreml_builder import build_mlpackage  # coremltools loads slowly

    height, width = (shape, shape) if isinstance(shape, int) else shape

    def build(path: Path) -> None:
        build_mlpackage(model.graph(), path, (height, width), batch,
                        precision="fp32" if precision == "fp32" else "fp16")

    return get_or_build(BuildKey(model, "mlpackage", precision, (batch, height, width)), build)
