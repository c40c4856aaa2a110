"""Options for one job, and YAML job files: plain frozen dataclasses, validated before any work.

The CLI and the YAML file share one description of every option (OPTION_FIELDS), so an option
added here is at once a command-line flag, a `defaults:` key and a per-job key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from upscaler.errors import ConfigError, raise_all
from upscaler.models.registry import DEFAULT_MODELS

PRECISIONS = ("fp32", "fp16", "bf16")
DEINTERLACE_MODES = ("auto", "fieldmatch", "bwdif", "yadif", "off")
IMAGE_FORMATS = ("png", "apng", "jpg", "jpeg", "webp", "avif", "tif", "tiff", "bmp", "gif")


@dataclass(frozen=True)
class Options:
    """Everything that shapes how one input is upscaled. None means "the executor's choice"
    (for `model`: the default for the media kind, see upscaler.models.registry.model_for)."""

    model: str | None = None
    executor: str = "auto"
    precision: str | None = None
    device: str | None = None
    threads: int | None = None
    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    tta: bool = False
    scale: float | None = None
    format: str | None = None
    suffix: str = "_upscaled"
    overwrite: bool = False
    background: str | None = None
    quality: int | None = None
    # Video only.
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    segment_seconds: float = 4.0
    resume: bool = True
    work_dir: str | None = None
    reuse: bool = True
    accept_damage: bool = False
    deinterlace: str = "auto"


@dataclass(frozen=True)
class Job:
    """One input to upscale, as the user gave it.

    output_is_folder: the output was typed as a folder (with a trailing slash), which a Path
      cannot remember. where: the job file and line the job came from, for error messages.
    """

    input: Path
    output: Path | None
    options: Options = field(default_factory=Options)
    output_is_folder: bool = False
    where: tuple[Path, int] | None = None


@dataclass(frozen=True)
class RaySettings:
    """Where a run's work goes with --ray (`ray:` in a job file).

    address: None starts a local Ray; "auto" joins the cluster this machine belongs to;
      "HOST:PORT" or "ray://HOST:PORT" another.
    workers: how many segments or files are worked on at once; None: as many as the cluster's
      CPUs (or GPUs, for CUDA executors) take.
    cpus: CPU cores each worker asks Ray for, which its executor uses as threads (unless
      --threads says otherwise).
    """

    address: str | None = None
    workers: int | None = None
    cpus: int = 1

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError("ray workers must be >= 1")
        if self.cpus < 1:
            raise ValueError("ray cpus must be >= 1")


def names_folder(typed: str) -> bool:
    """Whether a path as typed ends with a separator, which means "a folder"."""
    return typed.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep))


@dataclass(frozen=True)
class OptionField:
    """One option as the CLI and YAML see it. A bool whose default is True is turned off on the
    command line with `--no-NAME` (`NAME: false` in YAML)."""

    name: str
    kind: type
    help: str
    default: Any = None

    @property
    def flag(self) -> str:
        name = self.name.replace("_", "-")
        return f"--no-{name}" if self.kind is bool and self.default is True else f"--{name}"


_HELP = {
    "model": "model name (see `upscale models`) or a .param/.onnx/.mlpackage/.pth file "
             f"(default: {DEFAULT_MODELS['video']} for videos, {DEFAULT_MODELS['image']} for "
             "images)",
    "executor": "auto, coreml, openvino, onnxruntime, ncnn or torch",
    "precision": "fp32, fp16 or bf16 (default: the executor's fastest that keeps >= 45 dB)",
    "device": "executor device, e.g. cuda:0, GPU, vulkan:0, or Core ML compute units (ALL)",
    "threads": "CPU threads for the executor",
    "tile": "longest tile side in input pixels (default: whole frames, or even tiles that "
            "fit the executor's memory budget); 0 = whole frames",
    "overlap": "least tile overlap in input pixels (default: the model's, 24 for the x4plus "
               "models, 16 for others; at least twice the border padding)",
    "batch": "tiles per executor call (default: 1; Core ML: all of a frame's tiles)",
    "tta": "run the model on the eight flips and transposes of each tile and average them "
           "(the ncnn-vulkan programs' -x): a little cleaner lines for 8x the model's time",
    "scale": "output scale if not the model's (the model runs, then a good resize; a "
             "waifu2x model runs again on its output until it reaches the scale)",
    "format": "output image format: png, jpg, webp, avif, tif, bmp or gif",
    "suffix": "suffix for outputs placed next to their input",
    "overwrite": "replace existing outputs",
    "background": "colour to flatten transparency onto for JPEG/BMP output: #rrggbb, #rgb, "
                  "R,G,B or a name (white) (without it, a transparent image to those formats "
                  "is refused)",
    "quality": "JPEG, WebP and AVIF quality, 1-100 (default: the source's own, estimated, at "
               "least 95 for JPEG, 95 for AVIF; WebP stays lossless unless the source was "
               "lossy)",
    "codec": "video codec (ffmpeg name, e.g. libx264, libx265, hevc_nvenc)",
    "crf": "video constant rate factor",
    "preset": "video encoder preset (ffmpeg name)",
    "pix_fmt": "video pixel format (ffmpeg name, e.g. yuv420p10le)",
    "segment_seconds": "video segment length in seconds",
    "resume": "start a video over, discarding segments an unfinished earlier run left",
    "work_dir": "folder for a video's segments until it is done (default: beside the output)",
    "reuse": "run every video frame through the model, even the unchanged tiles of held "
             "drawings, which are otherwise reused",
    "accept_damage": "upscale what decodes of a damaged video (decode errors, missing frames) "
                     "instead of failing; a warning counts what was lost",
    "deinterlace": "auto (fieldmatch for telecined film, bwdif where the video is "
                   "interlaced), fieldmatch, bwdif, yadif or off; one frame per frame",
}


def option_fields() -> list[OptionField]:
    hints = {"str | None": str, "str": str, "int | None": int, "int": int,
             "float | None": float, "float": float, "bool": bool}
    return [OptionField(f.name, hints[str(f.type)], _HELP[f.name], f.default)
            for f in dataclasses.fields(Options)]


def validate_options(opts: Options) -> None:
    """Value checks shared by the CLI and YAML; raises ValueError with the reason."""
    if opts.precision is not None and opts.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if opts.tile is not None and (opts.tile < 0 or 0 < opts.tile < 16):
        raise ValueError("tile must be 0 (no tiling) or at least 16")
    if opts.overlap is not None and opts.overlap < 0:
        raise ValueError("overlap must be >= 0")
    if opts.batch is not None and opts.batch < 1:
        raise ValueError("batch must be >= 1")
    if opts.threads is not None and opts.threads < 1:
        raise ValueError("threads must be >= 1")
    if opts.scale is not None and not 0 < opts.scale <= 16:
        raise ValueError("scale must be in (0, 16]")
    if opts.format is not None and opts.format.lower() not in IMAGE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(IMAGE_FORMATS)}")
    if opts.quality is not None and not 1 <= opts.quality <= 100:
        raise ValueError("quality must be in [1, 100]")
    if opts.crf is not None and not 0 <= opts.crf <= 63:
        raise ValueError("crf must be in [0, 63]")
    if opts.deinterlace not in DEINTERLACE_MODES:
        raise ValueError(f"deinterlace must be one of {', '.join(DEINTERLACE_MODES)}")
    if opts.segment_seconds <= 0:
        raise ValueError("segment_seconds must be > 0")
    if any(sep in opts.suffix for sep in (os.sep, os.altsep, "\0") if sep):
        raise ValueError(f"suffix must be part of a file name, not a path: {opts.suffix!r}")
    if opts.background is not None:
        parse_colour(opts.background)


def parse_colour(text: str) -> tuple[int, int, int]:
    """#rrggbb, #rgb, "r,g,b" (0-255 each) or a CSS colour name ("white") as an RGB triple;
    ValueError naming the text."""
    from PIL import ImageColor

    value = text.strip()
    rgb: tuple[int, ...] = ()
    try:
        if (value.startswith("#") and len(value) in (4, 7)) or value.isalpha():
            rgb = ImageColor.getrgb(value)
        else:
            rgb = tuple(int(part) for part in value.split(","))
    except ValueError:
        pass
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"background must be #rrggbb, #rgb, R,G,B (0-255) or a colour name "
                         f"(white), not {text!r}")
    return rgb[0], rgb[1], rgb[2]


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _scalar(node: yaml.Node, kind: type, where: str, path: Path) -> Any:
    line = node.start_mark.line + 1
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"{where}: expected {_KIND_NAMES[kind]}", path, line)
    value = yaml.safe_load(node.value) if node.style is None else node.value
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        value = node.value
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {_KIND_NAMES[kind]}, got {value!r}", path, line)
    return value


def _options_from(node: yaml.Node, base: Options, where: str, path: Path,
                  mistakes: list[ConfigError], extra: tuple[str, ...] = (),
                  ) -> tuple[Options, dict[str, Any]]:
    """The options a mapping sets over `base`, and its `extra` keys' values; each key that is
    wrong is added to `mistakes` and left out, so that one reading finds them all."""
    if not isinstance(node, yaml.MappingNode):
        mistakes.append(ConfigError(f"{where}: expected a mapping", path,
                                    node.start_mark.line + 1))
        return base, {}
    kinds = {f.name: f.kind for f in option_fields()}
    values: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    seen: set[str] = set()
    found = len(mistakes)
    for key_node, value_node in node.value:
        key = key_node.value
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise ConfigError(f"{where}: duplicate key {key!r}", path, line)
            seen.add(key)
            if key in extra:
                extras[key] = _scalar(value_node, str, f"{where}.{key}", path)
            elif key in kinds:
                values[key] = _scalar(value_node, kinds[key], f"{where}.{key}", path)
            else:
                close = difflib.get_close_matches(str(key).replace("-", "_"),
                                                  [*kinds, *extra], n=1)
                guess = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: unknown key {key!r}{guess}", path, line)
        except ConfigError as e:
            mistakes.append(e)
    opts = dataclasses.replace(base, **values)
    if len(mistakes) == found:  # values that are each fine: now whether they go together
        try:
            validate_options(opts)
        except ValueError as e:
            mistakes.append(ConfigError(f"{where}: {e}", path, node.start_mark.line + 1))
    return opts, extras


def read_job_text(path: Path) -> str:
    """A job file's text; ConfigError naming the file (and the line) when it cannot be read
    or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read job file: {e.strerror or e}", path) from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{data[e.start]:02x}); save the job file as "
                          "UTF-8", path, line) from e


def load_jobs(path: str | Path, base: Options | None = None) -> list[Job]:
    """Read and validate a YAML job file; relative paths are relative to the file's folder.

    Every mistake is reported with its line and key before any job runs: ConfigError for
    one, PlanError holding each for several.
    """
    path = Path(path)
    try:
        root = yaml.compose(read_job_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', e)}", path, line) from e
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError("expected a mapping with 'jobs' (and optionally 'defaults')", path, 1)
    sections = {k.value: (k, v) for k, v in root.value}
    for key, (key_node, _) in sections.items():
        if key not in ("defaults", "jobs", "ray"):
            raise ConfigError(f"unknown key {key!r} (expected defaults, jobs, ray)", path,
                              key_node.start_mark.line + 1)
    mistakes: list[ConfigError] = []
    defaults = base or Options()
    if "defaults" in sections:
        given, _ = _options_from(sections["defaults"][1], defaults, "defaults", path, mistakes)
        # Wrong defaults are said once, not again in every job that would take them.
        defaults = defaults if mistakes else given
    if "jobs" not in sections:
        mistakes.append(ConfigError("missing key 'jobs'", path, 1))
        raise_all(mistakes)
    jobs_node = sections["jobs"][1]
    if not isinstance(jobs_node, yaml.SequenceNode) or not jobs_node.value:
        mistakes.append(ConfigError("jobs: expected a non-empty list", path,
                                    jobs_node.start_mark.line + 1))
        raise_all(mistakes)

    jobs = []
    for i, node in enumerate(jobs_node.value, start=1):
        where = f"jobs[{i}]"
        opts, extras = _options_from(node, defaults, where, path, mistakes,
                                     extra=("input", "output"))
        line = node.start_mark.line + 1
        if "input" not in extras or not extras["input"]:
            # A job that is no mapping, or whose input is no string, was said already.
            said = not isinstance(node, yaml.MappingNode) or any(
                k.value == "input" for k, _ in node.value)
            if not said:
                mistakes.append(ConfigError(f"{where}: missing key 'input'", path, line))
            continue
        # Relative to the job file's folder, after ~ is expanded; existence and everything
        # else about the paths is checked with the other jobs' before any work (job/plan.py).
        src = path.parent / Path(extras["input"]).expanduser()
        output = extras.get("output")
        dst = path.parent / Path(output).expanduser() if output else None
        jobs.append(Job(src, dst, opts, output_is_folder=names_folder(output or ""),
                        where=(path, line)))
    raise_all(mistakes)
    return jobs


_RAY_KEYS = {"address": str, "workers": int, "cpus": int}


def load_ray_settings(path: str | Path) -> RaySettings | None:
    """The `ray:` section of a job file (load_jobs has checked the file), None without one.

        ray:
          address: auto    # or HOST:PORT; leave out to start a local Ray
          workers: 8
    """
    path = Path(path)
    root = yaml.compose(read_job_text(path))
    node = next((v for k, v in root.value if k.value == "ray"), None)
    if node is None:
        return None
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return RaySettings()  # `ray:` alone: a local Ray with the defaults
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError("ray: expected a mapping (address, workers, cpus)", path, line)
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        if key not in _RAY_KEYS:
            raise ConfigError(f"ray: unknown key {key!r} (expected address, workers, cpus)",
                              path, key_node.start_mark.line + 1)
        values[key] = _scalar(value_node, _RAY_KEYS[key], f"ray.{key}", path)
    try:
        return RaySettings(**{k: v for k, v in values.items() if v is not None})
    except ValueError as e:
        raise ConfigError(str(e), path, line) from e
