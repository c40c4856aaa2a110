"""Describe a video file: its picture, timing, colour and every stream it carries.

Two back ends give the same answer. ffprobe is used where it is installed. A pip-only machine
has no ffprobe (imageio-ffmpeg ships ffmpeg alone), so there we read the header with PyAV
(`pip install av`): it is maintained by the FFmpeg-adjacent PyAV project, ships wheels with its
own FFmpeg libraries for Linux, macOS and Windows, and exposes the demuxer's structured fields,
where scraping `ffmpeg -i`'s human-readable banner would break with each FFmpeg release. The
PyAV reading is turned into ffprobe's JSON shape so that a single parser builds `VideoInfo`.

Frame timestamps (and so the exact frame count) come from one pass of the ffmpeg binary that
copies the video packets into the `framecrc` muxer: it demuxes without decoding, works with any
ffmpeg, and gives every packet's pts, which the segment planner needs for variable-frame-rate
sources.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from upscaler.errors import MediaError
from upscaler.media import ffmpeg

# FFmpeg's enum values (stable across releases) -> the names ffprobe prints.
_RANGES = {1: "tv", 2: "pc"}
_MATRICES = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
             8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085",
             12: "chroma-derived-nc", 13: "chroma-derived-c", 14: "ictcp"}
_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
              9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
_TRANSFERS = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
              8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
              13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084",
              17: "smpte428", 18: "arib-std-b67"}

# Matrix names as ffprobe prints them -> as swscale's in/out_color_matrix options take them.
SWS_MATRICES = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470", "fcc": "fcc",
                "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}
# How FFmpeg's Matroska demuxer names attachments by MIME type (PyAV does not expose it).
_FONT_MIMETYPES = {"application/x-truetype-font": "ttf", "application/x-font": "ttf",
                   "font/ttf": "ttf", "font/sfnt": "ttf", "application/font-sfnt": "ttf",
                   "application/vnd.ms-opentype": "otf", "font/otf": "otf",
                   "application/x-font-opentype": "otf"}


@dataclass(frozen=True)
class StreamInfo:
    """One stream of the container. kind: video, audio, subtitle, attachment or data."""

    index: int
    kind: str
    codec: str
    tags: Mapping[str, str] = field(default_factory=dict)
    attached_pic: bool = False
    start: float | None = None  # first timestamp in seconds, on the container's clock


@dataclass(frozen=True)
class Chapter:
    start: float
    end: float
    title: str


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about a source's main video stream and its neighbours.

    width, height: the stored picture; `display_size` applies `rotation` (degrees
      counter-clockwise, as ffprobe reports the display matrix, normalised to 0/90/180/270).
    frame_rate: the nominal rate as an exact rational (24000/1001); for a variable-frame-rate
      source (`vfr`) it is only the base the timestamps are laid on.
    frame_pts: every frame's presentation timestamp in `time_base` units, in display order;
      `end_pts` is where the last frame ends. Decoders emit one frame per entry.
    video_bytes: the size of the video stream's packets, which tells the rest of the file
      (audio, subtitles, fonts) apart when estimating an output's size.
    color_*: ffmpeg's names, None when the file does not say.
    start_time: the container's start in seconds, which ffmpeg's -ss is relative to.
    """

    path: Path
    container: str
    video_index: int
    codec: str
    width: int
    height: int
    rotation: int
    pix_fmt: str
    bit_depth: int
    color_range: str | None
    color_primaries: str | None
    color_transfer: str | None
    color_matrix: str | None
    frame_rate: Fraction
    time_base: Fraction
    frame_count: int
    vfr: bool
    start_time: float
    duration: float
    streams: tuple[StreamInfo, ...]
    chapters: tuple[Chapter, ...]
    frame_pts: tuple[int, ...] = field(repr=False, compare=False, default=())
    end_pts: int = 0
    video_bytes: int = 0

    @property
    def yuv_matrix(self) -> str:
        """The YUV matrix to convert with: the tagged one, else what players assume for the size.

        Untagged video is BT.709 above 576 lines (or from 1280 wide) and BT.601 below, as mpv
        and most players assume.
        """
        if self.color_matrix in SWS_MATRICES:
            return self.color_matrix
        return "bt709" if self.height > 576 or self.width >= 1280 else "smpte170m"

    @property
    def yuv_range(self) -> str:
        """"tv" (limited) unless the file says "pc" (full); untagged video is limited range."""
        return "pc" if self.color_range == "pc" else "tv"

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, which is how the decoder hands frames over."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height

    def seconds(self, pts: int) -> float:
        """A timestamp of this stream in seconds on the container's clock."""
        return float(pts * self.time_base)


def probe(path: str | Path) -> VideoInfo:
    """Read everything about `path`; MediaError naming the file when it is not a usable video."""
    path = Path(path)
    if not path.is_file():
        raise MediaError("no such file", path)
    exe = ffmpeg.ffprobe_exe()
    raw = _ffprobe_json(exe, path) if exe else _pyav_json(path)
    return _parse(path, raw)


def _ffprobe_json(exe: str, path: Path) -> dict[str, Any]:
    text = ffmpeg.run([exe, "-v", "error", "-print_format", "json", "-show_format",
                       "-show_streams", "-show_chapters", str(path)], path)
    try:
        return dict(json.loads(text))
    except json.JSONDecodeError as e:
        raise MediaError(f"ffprobe wrote unreadable JSON: {e}", path) from e


def _pyav_json(path: Path) -> dict[str, Any]:
    """The fields of ffprobe's JSON that _parse reads, filled from PyAV."""
    try:
        import av
    except ImportError as e:
        raise MediaError("probing needs ffprobe on PATH or PyAV (pip install av)", path) from e
    try:
        with av.open(str(path)) as box:
            streams = [_pyav_stream(box, s) for s in box.streams]
            chapters = [{"start_time": str(float(c["start"] * c["time_base"])),
                         "end_time": str(float(c["end"] * c["time_base"])),
                         "tags": dict(c.get("metadata", {}))} for c in box.chapters()]
            fmt = {"format_name": box.format.name,
                   "start_time": str(box.start_time / 1e6) if box.start_time is not None else "0",
                   "duration": str(box.duration / 1e6) if box.duration is not None else "0"}
    except av.FFmpegError as e:
        # str(e) carries the errno and the path again; the reason alone reads better.
        raise MediaError(f"cannot read: {e.strerror or e}", path) from e
    return {"streams": streams, "format": fmt, "chapters": chapters}


def _pyav_stream(box: Any, s: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"index": s.index, "codec_type": s.type, "tags": dict(s.metadata),
                           "time_base": str(s.time_base),
                           "disposition": {"attached_pic": int(bool(s.disposition & 1024))}}
    if s.start_time is not None:
        out["start_time"] = str(float(s.start_time * s.time_base))
    ctx = s.codec_context
    if s.type == "attachment":
        out["codec_name"] = _FONT_MIMETYPES.get(str(getattr(s, "mimetype", "")).lower())
        return out
    # canonical_name is the codec's own name (subrip), as ffprobe prints it; name is the
    # decoder's (srt).
    out["codec_name"] = getattr(ctx.codec, "canonical_name", ctx.name) if ctx is not None else None
    if s.type != "video" or ctx is None:
        return out
    out.update(width=ctx.width, height=ctx.height, pix_fmt=ctx.pix_fmt,
               r_frame_rate=str(s.base_rate or s.guessed_rate or 0),
               color_range=_RANGES.get(ctx.color_range),
               color_space=_MATRICES.get(ctx.colorspace),
               color_primaries=_PRIMARIES.get(ctx.color_primaries),
               color_transfer=_TRANSFERS.get(ctx.color_trc))
    # PyAV has no getter for the stream's display matrix; the decoder copies it onto frames.
    if not out["disposition"]["attached_pic"] and s is box.streams.video[0]:
        try:
            frame = next(box.decode(s), None)
        except Exception:  # a file whose first frame fails will fail loudly in the decoder
            frame = None
        if frame is not None and frame.rotation:
            out["side_data_list"] = [{"rotation": frame.rotation}]
    return out


def _parse(path: Path, raw: Mapping[str, Any]) -> VideoInfo:
    streams = raw.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    if video is None:
        raise MediaError("no video stream", path)
    fmt = raw.get("format", {})
    rate = _fraction(video.get("r_frame_rate")) or _fraction(video.get("avg_frame_rate"))
    if not rate:
        raise MediaError("video stream has no frame rate", path)
    exe = ffmpeg.ffmpeg_exe()
    pix_fmt = str(video.get("pix_fmt") or "")
    if not pix_fmt:
        raise MediaError("video stream has no pixel format (unsupported codec?)", path)
    start = float(fmt.get("start_time") or 0.0)
    tb, pts, end, size = _frame_pts(exe, path, int(video["index"]), rate)
    return VideoInfo(
        path=path,
        container=str(fmt.get("format_name", "")),
        video_index=int(video["index"]),
        codec=str(video.get("codec_name", "")),
        width=int(video["width"]),
        height=int(video["height"]),
        rotation=_rotation(video),
        pix_fmt=pix_fmt,
        bit_depth=ffmpeg.pix_fmt_depths(exe).get(pix_fmt, 8),
        color_range=_known(video.get("color_range")),
        color_primaries=_known(video.get("color_primaries")),
        color_transfer=_known(video.get("color_transfer")),
        color_matrix=_known(video.get("color_space")),
        frame_rate=rate,
        time_base=tb,
        frame_count=len(pts),
        vfr=_is_vfr(pts, tb, rate),
        start_time=start,
        duration=float(fmt.get("duration") or 0.0),
        streams=tuple(StreamInfo(index=int(s["index"]), kind=str(s.get("codec_type", "data")),
                                 codec=_known(s.get("codec_name")) or "none",
                                 tags=dict(s.get("tags", {})),
                                 attached_pic=bool(s.get("disposition", {}).get("attached_pic")),
                                 start=_seconds(s.get("start_time")))
                      for s in streams),
        chapters=tuple(Chapter(float(c["start_time"]), float(c["end_time"]),
                               str(c.get("tags", {}).get("title", "")))
                       for c in raw.get("chapters", [])),
        frame_pts=pts,
        end_pts=end,
        video_bytes=size,
    )


def _frame_pts(exe: str, path: Path, index: int,
               rate: Fraction) -> tuple[Fraction, tuple[int, ...], int, int]:
    """(time base, sorted packet pts, end pts, bytes) of one stream, by demuxing without
    decoding."""
    text = ffmpeg.run([exe, "-hide_banner", "-v", "error", "-nostdin", "-copyts", "-i", str(path),
                       "-map", f"0:{index}", "-c", "copy", "-f", "framecrc", "-"], path)
    tb: Fraction | None = None
    pts: list[int] = []
    last_duration = 0
    size = 0
    for line in text.splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            cols = [c.strip() for c in line.split(",")]
            pts.append(int(cols[2]))
            last_duration = max(last_duration, int(cols[3]))
            size += int(cols[4])
    if tb is None or not pts:
        raise MediaError("video stream has no frames", path)
    if any(abs(p) >= 2**62 for p in pts):
        # Raw elementary streams carry no timestamps: lay the frames on the nominal rate.
        step = 1 / (rate * tb)
        pts = [round(i * step) for i in range(len(pts))]
    pts.sort()
    frame = round(1 / (rate * tb))
    end = pts[-1] + (last_duration if last_duration > 0 else max(frame, 1))
    return tb, tuple(pts), end, size


def _is_vfr(pts: tuple[int, ...], tb: Fraction, rate: Fraction) -> bool:
    """Whether the frames stray from the nominal grid by more than timestamp rounding."""
    step = float(1 / (rate * tb))
    origin = pts[0]
    # Matroska rounds 41.708 ms to whole ms, so a constant rate can show one tick of jitter.
    return any(abs((p - origin) - i * step) > 1.01 for i, p in enumerate(pts))


def _rotation(video: Mapping[str, Any]) -> int:
    degrees = 0.0
    for side in video.get("side_data_list", []):
        if "rotation" in side:
            degrees = float(side["rotation"])
    if not degrees and "rotate" in video.get("tags", {}):
        # ffmpeg before 5 reported the rotation as a clockwise tag instead of side data.
        degrees = -float(video["tags"]["rotate"])
    return round(degrees / 90.0) * 90 % 360


def _fraction(text: object) -> Fraction | None:
    try:
        value = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def _seconds(text: object) -> float | None:
    try:
        return float(str(text))
    except ValueError:
        return None


def _known(name: object) -> str | None:
    return None if name in (None, "", "unknown", "unspecified", "reserved") else str(name)
