"""Where each output goes: the rules that turn an input and what the user typed into a file name.

- No output: beside the input, named `<stem><suffix><ext>` (a folder: `<name><suffix>`).
- An output that names a folder (it ends with a slash, or is a folder that exists and has no
  media extension): the output goes inside it under the input's own name, or under the suffixed
  name when that folder is the input's own.
- An image output's extension must name the format it gets: `-o out.jpg --format png` and
  `-o out.xyz` are mistakes, not silent PNGs. A name without extension takes `--format`.
- A video output must be a container we can write; a source in one we cannot (.avi, .ts) gets
  `.mkv` by default.

Nothing here touches the disk except to ask what exists; every mistake raises UsageError.
"""

from __future__ import annotations

import os
from pathlib import Path

from upscaler.config import Options
from upscaler.errors import UsageError
from upscaler.media.images import IMAGE_EXTENSIONS, format_of_extension, format_of_name
from upscaler.media.video.mux import WRITABLE_CONTAINERS

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ts", ".m2ts", ".mts",
                    ".flv", ".wmv", ".mpg", ".mpeg", ".vob", ".3gp", ".ogv")
DEFAULT_VIDEO_CONTAINER = ".mkv"  # holds every stream kind a source may carry
DEFAULT_IMAGE_EXTENSION = ".png"


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("._")


def names_a_folder(output: Path, typed_as_folder: bool) -> bool:
    """Whether `output` is where outputs go rather than the output itself.

    A trailing slash always means a folder. An existing folder does too, unless its name looks
    like a media file (`mkdir out.mkv`): writing inside that would surprise more than an error.
    """
    if typed_as_folder:
        return True
    if not output.is_dir():
        return False
    if output.suffix.lower() in IMAGE_EXTENSIONS or is_video_path(output):
        raise UsageError("is a folder; give a file name, or end it with / to write into it",
                         output)
    return True


def image_output(src: Path, output: Path | None, typed_as_folder: bool,
                 options: Options) -> Path:
    """The file an image job writes."""
    if output is None:
        return src.with_name(src.stem + options.suffix + _image_extension(src, options))
    if names_a_folder(output, typed_as_folder):
        return _inside(output, src, _image_extension(src, options), options)
    check_image_name(output, options)
    return output


def check_image_name(path: Path, options: Options) -> None:
    """UsageError unless `path`'s extension names the format it will be written in."""
    ext = path.suffix.lower()
    if not ext:
        if options.format is None:
            raise UsageError("output has no extension to tell its format; add one (.png) "
                             "or give --format", path)
        return
    by_ext = format_of_extension(ext)
    if by_ext is None:
        raise UsageError(f"{ext} is not an image format we write; use .png, .jpg, .webp, "
                         ".avif, .tif, .bmp or .gif", path)
    if options.format is not None and format_of_name(options.format) != by_ext:
        raise UsageError(f"the name says {by_ext} but --format says "
                         f"{format_of_name(options.format)}; make them agree", path)


def _image_extension(src: Path, options: Options) -> str:
    if options.format:
        return "." + options.format.lower()
    if format_of_extension(src.suffix.lower()) is not None:
        return src.suffix
    return DEFAULT_IMAGE_EXTENSION


def video_output(src: Path, output: Path | None, typed_as_folder: bool,
                 options: Options) -> Path:
    """The file a video job writes."""
    ext = src.suffix if src.suffix.lower() in WRITABLE_CONTAINERS else DEFAULT_VIDEO_CONTAINER
    if output is None:
        return src.with_name(src.stem + options.suffix + ext)
    if names_a_folder(output, typed_as_folder):
        return _inside(output, src, ext, options)
    if output.suffix.lower() not in WRITABLE_CONTAINERS:
        shown = output.suffix or "a name without extension"
        raise UsageError(f"cannot write video as {shown}; use "
                         f"{', '.join(WRITABLE_CONTAINERS)}", output)
    return output


def folder_output(src: Path, output: Path | None, options: Options) -> Path:
    """The folder a folder job mirrors its images into."""
    if output is not None:
        return output
    named = Path(os.path.abspath(src))  # `upscale .` names the folder it is in
    if not named.name:
        raise UsageError("give -o for the output of a file system's root", src)
    return named.with_name(named.name + options.suffix)


def folder_item_output(image: Path, src_root: Path, dst_root: Path, options: Options) -> Path:
    """Where one image of a folder job goes: the same relative place under the output folder."""
    out = dst_root / image.relative_to(src_root)
    return out.with_suffix(_image_extension(image, options))


def _inside(folder: Path, src: Path, ext: str, options: Options) -> Path:
    # Into the input's own folder the plain name would be the input itself.
    own = folder.resolve() == src.parent.resolve()
    return folder / (src.stem + (options.suffix if own else "") + ext)
