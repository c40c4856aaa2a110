"""The `upscale` command's arguments: its parsers (the main command, `models`, `compare`) and
their mistakes as our one-line errors.

Options come from the fields of config.Options, so the command line, job files and the API
take the same names; `as_typed` names them as typed (`--segment-seconds`) in value errors.
"""

from __future__ import annotations

import argparse
import difflib
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from upscaler.config import OptionField, option_fields
from upscaler.errors import EXIT_CODES, UsageError
from upscaler.version import __version__

PROG = "upscale"


def exit_code_table() -> str:
    """The exit codes as `upscale --help` ends with them."""
    return "exit codes (the same for a job file and the API's UpscalerError.exit_code):\n" + \
        "\n".join(textwrap.fill(text, 79, initial_indent=f"  {code:<5}",
                                 subsequent_indent=" " * 7) for code, text in EXIT_CODES)


# The flags of realesrgan-, realcugan- and waifu2x-ncnn-vulkan, which users come from.
_NCNN_VULKAN_FLAGS = {
    "-i": "the input, given without a flag", "-s": "--scale", "-t": "--tile",
    "-m": "--model", "-n": "a denoise level, part of a model's name here: waifu2x-cunet-x2-noise1",
    "-g": "--device", "-x": "--tta", "-f": "--format", "-j": "automatic here",
}
# ffmpeg's flags, which its users type; no option is near `-c:v` in spelling.
_AUDIO_KEPT = "has no match: the source's audio is copied unchanged"
_FFMPEG_FLAGS = {
    "-c:v": "is --codec", "-codec:v": "is --codec", "-vcodec": "is --codec",
    "-b:v": "sets a bitrate; here --crf sets the quality",
    "-c:a": _AUDIO_KEPT, "-acodec": _AUDIO_KEPT,
}
# Other names for an option, which spelling does not find (`--encoder` comes near none).
_SYNONYMS = {"encoder": "codec", "vcodec": "codec", "video-codec": "codec"}


class Parser(argparse.ArgumentParser):
    """argparse with its mistakes as our one-line errors: an unknown option names the closest
    one (`--qualty`: did you mean --quality?), instead of the whole usage and no hint. Options
    are not abbreviated: `--overw` was --overwrite and `upscale models --clear` emptied the
    cache, unasked."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:
            names = [f[2:] for f in self._option_string_actions if f.startswith("--")]
            for word in unknown.split():
                typed = word.partition("=")[0].lstrip("-")
                starts = [n for n in names if n.startswith(typed)]
                close = ([_SYNONYMS[typed]] if typed in _SYNONYMS
                         else starts if len(starts) == 1
                         else difflib.get_close_matches(typed, names, n=1, cutoff=0.7))
                if word in _NCNN_VULKAN_FLAGS:
                    message += f" (the ncnn-vulkan programs' {word} is {_NCNN_VULKAN_FLAGS[word]})"
                    break
                if word in _FFMPEG_FLAGS:
                    message += f" (ffmpeg's {word} {_FFMPEG_FLAGS[word]})"
                    break
                if word.startswith("-") and close:
                    message += f" (did you mean --{close[0]}?)"
                    break
        raise UsageError(f"{message}; `{self.prog} --help` lists the options")


def command_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Upscale anime images, folders of images and videos with Real-ESRGAN, "
                    "Real-CUGAN or waifu2x.",
        epilog=textwrap.fill("`upscale models` lists the models and their built files; "
                             "`upscale compare INPUT` writes a page comparing models on a few "
                             "of INPUT's frames. A folder named like either is given as a path: "
                             "./models.", 79)
        + "\n\n" + exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("inputs", nargs="*", type=Path, metavar="input",
                        help="image, folder or video; several (ep*.mkv) are a batch, each "
                        "beside its input or in the folder -o names")
    parser.add_argument("-o", "--output", help="output file or folder (a trailing / means a "
                        "folder; missing folders are made)")
    parser.add_argument("--config", type=Path, help="YAML file with a list of jobs")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (errors, skips and the summary still show)")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="run on Ray: video segments and images become Ray tasks; ADDRESS "
                        "joins a cluster (auto: the one this machine is in); without one (or "
                        "with none or local) a local Ray starts. Work folders (--work-dir) "
                        "must be on storage all nodes see")
    parser.add_argument("--ray-workers", type=int, metavar="N",
                        help="with --ray: segments or files worked on at once (default: as "
                        "many as the cluster takes)")
    parser.add_argument("--ray-cpus", type=int, metavar="N",
                        help="with --ray: CPU cores (executor threads) per worker (default 1)")
    for f in option_fields():
        add_option(parser, f)
    return parser


def models_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=f"{PROG} models", description="List the models and their built files.")
    parser.add_argument("--clear-cache", action="store_true", help="delete every built model")
    return parser


def compare_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} compare",
        description="Run a few frames of INPUT through several models and write one "
        "self-contained HTML page to choose by looking: the frames side by side with a "
        "draggable divider, a 1:1 zoom, and each model's time and output size for the whole "
        "input.")
    parser.add_argument("input", type=Path, help="video, image or folder of images")
    parser.add_argument("--models", metavar="A,B,...",
                        help="models to compare, comma-separated (default: the video and image "
                        "defaults and one model of every other family installed)")
    parser.add_argument("--at", action="append", default=[], metavar="TIME",
                        help="a video time to compare, in seconds or [HH:]MM:SS[.ms]; give it "
                        "once per time (default: 3 frames spread over the video)")
    parser.add_argument("-o", "--output", metavar="PAGE.html",
                        help="the page, or a folder for it (default: INPUT_compare.html "
                        "beside the input)")
    parser.add_argument("--full", action="store_true",
                        help="keep every output whole at 1:1 in the page (heavy for large "
                        "frames; by default the 1:1 zoom covers the most detailed part)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    for f in option_fields():
        if f.name not in ("model", "suffix", "resume", "work_dir", "segment_seconds"):
            add_option(parser, f)  # those shape no frame and no estimate
    return parser


def add_option(parser: argparse.ArgumentParser, f: OptionField) -> None:
    if f.kind is bool:
        action = "store_false" if f.flag.startswith("--no-") else "store_true"
        parser.add_argument(f.flag, dest=f.name, action=action, default=None, help=f.help)
    else:
        parser.add_argument(f.flag, type=f.kind, default=None, help=f.help,
                            metavar=f.name.upper())


def as_typed(error: ValueError) -> UsageError:
    """validate_options' reason with the option as the user typed it: `--segment-seconds must
    be > 0` (a job file's key, segment_seconds, is what job files are told)."""
    text = str(error)
    name, space, rest = text.partition(" ")
    if space and name in {f.name for f in option_fields()}:
        text = f"--{name.replace('_', '-')} {rest}"
    return UsageError(text)
