"""Models: the registry of named models, the ncnn reader, and builders for each runtime."""

from upscaler.models.graph import Graph
from upscaler.models.ncnn_format import read_ncnn
from upscaler.models.registry import (
    DEFAULT_MODEL,
    DEFAULT_MODELS,
    MODELS,
    ModelRef,
    model_for,
    resolve_model,
)

__all__ = ["DEFAULT_MODEL", "DEFAULT_MODELS", "MODELS", "Graph", "ModelRef", "model_for",
           "read_ncnn", "resolve_model"]
