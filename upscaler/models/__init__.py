"""Models: the registry of named models, the ncnn reader, and builders for each runtime."""

from upscaler.models.graph import Graph
from upscaler.models.ncnn_format import read_ncnn
from upscaler.models.registry import DEFAULT_MODEL, MODELS, ModelRef, resolve_model

__all__ = ["DEFAULT_MODEL", "MODELS", "Graph", "ModelRef", "read_ncnn", "resolve_model"]
