"""Built model files for each runtime, from the cache or built on first use."""

from __future__ import annotations

from pathlib import Path

import onnx

from upscaler.models.cache import BuildKey, get_or_build
from upscaler.models.onnx_builder import Precision, build_onnx
from upscaler.models.registry import ModelRef


def onnx_file(model: ModelRef, precision: Precision = "fp32") -> Path:
    """An ONNX file for `model`: the user's own .onnx as it is, or one built from ncnn weights."""
    if model.kind == "onnx":
        return model.path

    def build(path: Path) -> None:
        onnx.save_model(build_onnx(model.graph(), precision), path)

    return get_or_build(BuildKey(model, "onnx", precision), build)
