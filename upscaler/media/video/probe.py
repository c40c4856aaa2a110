"""Describe a video file: its picture, timing, colour and every stream it carries.

Two back ends give the same answer. ffprobe is used where it is installed. A pip-only machine
has no ffprobe (imageio-ffmpeg ships ffmpeg alone), so there we read the header with PyAV
(`pip install av`): it is maintained by the FFmpeg-adjacent PyAV project, ships wheels with its
own FFmpeg libraries for Linux, macOS and Windows, and exposes the demuxer's structured fields,
where scraping `ffmpeg -i`'s human-readable banner would break with each FFmpeg release. The
PyAV reading (probe_pyav.py) is turned into ffprobe's JSON shape so that a single parser builds
`VideoInfo`.

Frame timestamps (and so the exact frame count) come from one pass of the ffmpeg binary that
copies the video packets into the `framecrc` muxer: it demuxes without decoding, works with any
ffmpeg, and gives every packet's pts, which the segment planner needs for variable-frame-rate
sources.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from upscaler.errors import MediaError
from upscaler.media import ffmpeg
from upscaler.media.video.probe_pyav import pyav_json

# Matrix names as ffprobe prints them -> as swscale's in/out_color_matrix options take them.
SWS_MATRICES = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470", "fcc": "fcc",
                "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}


@dataclass(frozen=True)
class StreamInfo:
    """One stream of the container. kind: video, audio, subtitle, attachment or data."""

    index: int
    kind: str
    codec: str
    tags: Mapping[str, str] = field(default_factory=dict)
    attached_pic: bool = False
    start: float | None = None  # first timestamp in seconds, on the container's clock
    size: tuple[int, int] | None = None  # (width, height) of a video stream
    default: bool = False  # the container marks it as its kind's track to play


@dataclass(frozen=True)
class Chapter:
    start: float
    end: float
    title: str


@dataclass(frozen=True)
class Hdr:
    """HDR10 static metadata, as the decoder reports it on the first frame.

    mastering: the mastering display's primaries and white point as CIE 1931 xy (rx, ry, gx,
      gy, bx, by, wx, wy), then its min and max luminance in cd/m2; None when absent.
    light: (MaxCLL, MaxFALL) in cd/m2; None when absent.
    dolby_vision: the stream carries Dolby Vision metadata (RPU or configuration).
    dynamic: the frames carry HDR10+ (SMPTE 2094-40) dynamic metadata.
    """

    mastering: tuple[float, ...] | None = None
    light: tuple[int, int] | None = None
    dolby_vision: bool = False
    dynamic: bool = False


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about a source's main video stream and its neighbours.

    width, height: the stored picture; `display_size` applies `rotation` (degrees
      counter-clockwise, as ffprobe reports the display matrix, normalised to 0/90/180/270).
    sar: the sample (pixel) aspect ratio of the stored picture, 32/27 for 16:9 DVD; 1 for
      square pixels or when the file does not say. `display_aspect` is the shape shown.
    frame_rate: the nominal rate as an exact rational (24000/1001); for a variable-frame-rate
      source (`vfr`) it is only the base the timestamps are laid on.
    frame_pts: every frame's presentation timestamp in `time_base` units, in display order;
      `end_pts` is where the last frame ends. Decoders emit one frame per entry.
    video_bytes: the size of the video stream's packets, which tells the rest of the file
      (audio, subtitles, fonts) apart when estimating an output's size.
    color_*: ffmpeg's names, None when the file does not say.
    declared_frames, declared_end: the video's frame count, and where it ends in seconds on
      the container's clock, as the container states them (0 when it does not), against which
      a file cut short or damaged is measured.
    deinterlace: the ffmpeg filter the frames are deinterlaced with before the transform
      (media/video/interlace.py decides it), None for none.
    damaged: the source has decoding errors that the job accepted (--accept-damage); its
      frames are those the scan saw decode.
    hdr: HDR10 static metadata and Dolby Vision, which only decoding shows (media/video/scan.py
      fills it in; probe leaves it empty).
    captions: the pictures carry closed captions (CEA-608/708), which only decoding shows
      (scan.py again); the mux extracts them into a subtitle stream of their own.
    alpha: the stored pictures carry an alpha channel (yuva444p12le from ProRes 4444, qtrle's
      argb, VP9 in WebM), which a job keeps where its output can hold it (encoding.py).
    decoder: the ffmpeg decoder that reads the stream whole where FFmpeg's own would leave
      part of it out (libvpx-vp9 for VP9 with alpha, which the native decoder drops); None for
      FFmpeg's choice.
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
    sar: Fraction = Fraction(1)
    declared_frames: int = 0
    declared_end: float = 0.0
    deinterlace: str | None = None
    damaged: bool = False
    hdr: Hdr = field(default_factory=Hdr)
    captions: bool = False
    alpha: bool = False
    decoder: str | None = None

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
    def video_stream(self) -> StreamInfo | None:
        """The main video stream among `streams` (None only for an info built without them)."""
        return next((s for s in self.streams if s.index == self.video_index), None)

    @property
    def timecode(self) -> str | None:
        """The start timecode editors conform by (SMPTE HH:MM:SS:FF, ';' before the frames
        when drop-frame), from the video stream or the timecode track (QuickTime's tmcd);
        None when the source has none."""
        main = [self.video_stream] if self.video_stream else []
        # Matroska names the tag TIMECODE.
        return next((value for s in (*main, *self.streams) for key, value in s.tags.items()
                     if key.lower() == "timecode" and value), None)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, which is how the decoder hands frames over."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height

    @property
    def display_aspect(self) -> Fraction:
        """Width / height as shown: the upright frames' shape times their pixel aspect."""
        width, height = self.display_size
        sar = 1 / self.sar if self.rotation in (90, 270) else self.sar
        return Fraction(width, height) * sar

    def seconds(self, pts: int) -> float:
        """A timestamp of this stream in seconds on the container's clock."""
        return float(pts * self.time_base)


def probe(path: str | Path) -> VideoInfo:
    """Read everything about `path`; MediaError naming the file when it is not a usable video."""
    path = Path(path)
    if not path.is_file():
        raise MediaError("no such file", path)
    exe = ffmpeg.ffprobe_exe()
    raw = _ffprobe_json(exe, path) if exe else pyav_json(path)
    return _parse(path, raw)


def _ffprobe_json(exe: str, path: Path) -> dict[str, Any]:
    text = ffmpeg.run([exe, "-v", "error", "-print_format", "json", "-show_format",
                       "-show_streams", "-show_chapters", ffmpeg.file_url(path)], path)
    try:
        return dict(json.loads(text))
    except json.JSONDecodeError as e:
        raise MediaError(f"ffprobe wrote unreadable JSON: {e}", path) from e


def _alpha_decoder(exe: str, video: Mapping[str, Any]) -> str | None:
    """libvpx's decoder for VP8/VP9 whose alpha WebM carries beside the picture (the stream's
    alpha_mode tag); FFmpeg's native decoders read the picture only."""
    name = {"vp8": "libvpx", "vp9": "libvpx-vp9"}.get(str(video.get("codec_name")))
    tags = {str(k).lower(): str(v) for k, v in video.get("tags", {}).items()}
    if name and tags.get("alpha_mode") == "1" and name in ffmpeg.decoders(exe):
        return name
    return None


def _parse(path: Path, raw: Mapping[str, Any]) -> VideoInfo:
    streams = raw.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    if video is None:
        raise MediaError("no video stream", path)
    fmt = raw.get("format", {})
    container = str(fmt.get("format_name", ""))
    if container == "image2" or container.endswith("_pipe"):
        # A still under a video's name (pic.mkv): as a video it came out as one frame of
        # H.264, the picture's alpha and depth gone.
        codec = str(video.get("codec_name", ""))
        codec = {"mjpeg": "JPEG"}.get(codec, codec.upper())
        raise MediaError(f"holds a {codec} picture, not a video; give it the picture's "
                         "extension to upscale it as an image", path)
    rate = _fraction(video.get("r_frame_rate")) or _fraction(video.get("avg_frame_rate"))
    if not rate:
        raise MediaError("video stream has no frame rate", path)
    exe = ffmpeg.ffmpeg_exe()
    pix_fmt = str(video.get("pix_fmt") or "")
    if not pix_fmt:
        raise MediaError("video stream has no pixel format (unsupported codec?)", path)
    decoder = _alpha_decoder(exe, video)
    if decoder:
        pix_fmt = "yuva420p"  # what libvpx decodes VP8/VP9 with alpha to
    start = float(fmt.get("start_time") or 0.0)
    try:
        tb, pts, end, size = _frame_pts(exe, path, int(video["index"]), rate)
    except _ClockGoesBack as e:
        # Data streams (a broadcast's EPG and data carousels) left out, as the job leaves them.
        remux = path.with_name(f"{path.stem}-remux.mkv")
        raise MediaError(f"the video's timestamps go back {e.seconds - start:.3f} s into the "
                         "file (recordings joined end to end?); remux it first, which runs them "
                         f"on: ffmpeg -i {shlex.quote(str(path))} -map 0 -map -0:d? -c copy "
                         f"{shlex.quote(str(remux))}", path) from None
    described = ffmpeg.pix_fmts(exe).get(pix_fmt)
    return VideoInfo(
        path=path,
        container=container,
        video_index=int(video["index"]),
        codec=str(video.get("codec_name", "")),
        width=int(video["width"]),
        height=int(video["height"]),
        rotation=_rotation(video),
        pix_fmt=pix_fmt,
        bit_depth=described.depth if described else 8,
        alpha=bool(described and described.alpha),
        decoder=decoder,
        color_range=_known(video.get("color_range")),
        color_primaries=_known(video.get("color_primaries")),
        color_transfer=_known(video.get("color_transfer")),
        color_matrix=_known(video.get("color_space")),
        frame_rate=rate,
        time_base=tb,
        frame_count=len(pts),
        vfr=is_vfr(pts, tb, rate),
        start_time=start,
        duration=float(fmt.get("duration") or 0.0),
        streams=tuple(StreamInfo(index=int(s["index"]), kind=str(s.get("codec_type", "data")),
                                 codec=_known(s.get("codec_name")) or "none",
                                 tags=dict(s.get("tags", {})),
                                 attached_pic=bool(s.get("disposition", {}).get("attached_pic")),
                                 default=bool(s.get("disposition", {}).get("default")),
                                 start=_seconds(s.get("start_time")),
                                 size=(int(s["width"]), int(s["height"]))
                                 if s.get("width") and s.get("height") else None)
                      for s in streams),
        chapters=tuple(Chapter(float(c["start_time"]), float(c["end_time"]),
                               str(c.get("tags", {}).get("title", "")))
                       for c in raw.get("chapters", [])),
        frame_pts=pts,
        end_pts=end,
        video_bytes=size,
        # "0:1" means unknown, which players show as square pixels.
        sar=_fraction(str(video.get("sample_aspect_ratio", "")).replace(":", "/")) or Fraction(1),
        declared_frames=int(_seconds(video.get("nb_frames")) or 0),
        declared_end=_declared_end(video, fmt, alone=len(streams) == 1),
    )


def _declared_end(video: Mapping[str, Any], fmt: Mapping[str, Any], alone: bool) -> float:
    """Where the video stream ends as the container states it, in seconds on its clock: the
    stream's own duration, Matroska's DURATION tag (an end time), else the whole file's when
    the video is all it holds (audio may run longer); 0 when unknown."""
    start = _seconds(video.get("start_time")) or _seconds(fmt.get("start_time")) or 0.0
    own = _seconds(video.get("duration"))
    if own:
        return start + own
    tag = next((v for k, v in video.get("tags", {}).items() if k.upper() == "DURATION"), "")
    hours, _, rest = str(tag).partition(":")
    minutes, _, secs = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(secs)
    except ValueError:
        whole = _seconds(fmt.get("duration"))
        return (_seconds(fmt.get("start_time")) or 0.0) + whole if whole and alone else 0.0


def _frame_pts(exe: str, path: Path, index: int,
               rate: Fraction) -> tuple[Fraction, tuple[int, ...], int, int]:
    """(time base, sorted packet pts, end pts, bytes) of one stream, by demuxing without
    decoding."""
    text = ffmpeg.run([exe, "-hide_banner", "-v", "error", "-nostdin", "-copyts", "-i",
                       ffmpeg.file_url(path), "-map", f"0:{index}", "-c", "copy", "-f",
                       "framecrc", "-"], path)
    tb: Fraction | None = None
    pts: list[int] = []
    dts: list[int] = []
    last_duration = 0
    size = 0
    for line in text.splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            cols = [c.strip() for c in line.split(",")]
            dts.append(int(cols[1]))
            pts.append(int(cols[2]))
            last_duration = max(last_duration, int(cols[3]))
            size += int(cols[4])
    if tb is None or not pts:
        raise MediaError("video stream has no frames", path)
    back = _goes_back(dts, max(3, round(rate / 2)))  # half a second
    if back is not None:
        # ffmpeg's own stream copy (without -copyts) carries such a file's clock on across
        # the jump; the reader's cuts and the scan run on the file's own clock, where the
        # frames after the jump would be taken for those before it (half a joined pair was
        # dropped without a word).
        raise _ClockGoesBack(float(back * tb))
    pts = _fill_missing(pts, dts, 1 / (rate * tb))
    pts.sort()
    frame = round(1 / (rate * tb))
    end = pts[-1] + (last_duration if last_duration > 0 else max(frame, 1))
    return tb, tuple(pts), end, size


class _ClockGoesBack(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds  # on the container's clock, the last time before the jump


def _timed(t: int) -> bool:
    """Whether a packet's time is there: framecrc prints ffmpeg's NOPTS (-2**63) otherwise."""
    return abs(t) < 2**62


def _goes_back(dts: list[int], frames: int) -> int | None:
    """Where the decoding times go back for at least `frames` packets (the time before the
    jump), or None. Stream copy with -copyts, as the probe reads packets, holds a time that
    went back at the last one until the clock passes it again; a packet or two held is the
    jitter of times a program stream's demuxer guessed (ffmpeg's own VOBs have it)."""
    top, held = None, 0
    for d in dts:
        if not _timed(d):
            continue
        if top is not None and d <= top:
            held += 1
            if held >= frames:
                return top
        else:
            top, held = d, 0
    return None


def _fill_missing(pts: list[int], dts: list[int], step: Fraction) -> list[int]:
    """Packets' presentation times where some or all are missing (ffmpeg's NOPTS).

    Raw elementary streams carry none: their frames are laid on the nominal rate from 0, as
    the decoder times them. A program stream may leave some out (ffmpeg's own MPEG-PS muxer
    does so for a DVD's last frame): each gets its decoding time plus the usual gap between
    the two, keeping the others on the container's clock, where the reader cuts segments by
    them (laid from 0, a VOB starting at 0.53 s gave a resumed segment no frames at all).
    """
    if not any(_timed(p) for p in pts):
        return [round(i * step) for i in range(len(pts))]
    frame = round(step)
    gaps = sorted(p - d for p, d in zip(pts, dts, strict=True) if _timed(p) and _timed(d))
    gap = gaps[len(gaps) // 2] if gaps else frame
    # Neither time known: just after the packets before it in decoding order.
    filled, latest = [], min(p for p in pts if _timed(p)) - frame
    for p, d in zip(pts, dts, strict=True):
        if not _timed(p):
            p = d + gap if _timed(d) else latest + frame
        latest = max(latest, p)
        filled.append(p)
    return filled


def is_vfr(pts: tuple[int, ...], tb: Fraction, rate: Fraction) -> bool:
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
