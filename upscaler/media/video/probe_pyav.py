"""The PyAV back end of probe.py, for machines without ffprobe (a pip-only install).

It reads the demuxer's structured fields through PyAV and returns them in the shape of
ffprobe's JSON, so that probe.py has a single parser for both.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from upscaler.errors import MediaError, one_line
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


# How FFmpeg's Matroska demuxer names attachments by MIME type (PyAV does not expose it).
_FONT_MIMETYPES = {"application/x-truetype-font": "ttf", "application/x-font": "ttf",
                   "font/ttf": "ttf", "font/sfnt": "ttf", "application/font-sfnt": "ttf",
                   "application/vnd.ms-opentype": "otf", "font/otf": "otf",
                   "application/x-font-opentype": "otf"}


def pyav_json(path: Path) -> dict[str, Any]:
    """The fields of ffprobe's JSON that _parse reads, filled from PyAV."""
    try:
        import av
    except ImportError as e:
        if importlib.util.find_spec("av") is None:
            raise MediaError("probing needs ffprobe on PATH or PyAV (pip install av)",
                             path) from e
        # Installed, but its libraries would not load (under `ulimit -v`, say): say why.
        raise MediaError(f"PyAV, which probes without ffprobe, cannot load: {one_line(e)}",
                         path) from e
    try:
        with av.open(ffmpeg.file_url(path)) as box:
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
                           "disposition": {"default": int(bool(s.disposition & 1)),
                                           "attached_pic": int(bool(s.disposition & 1024))}}
    if s.start_time is not None:
        out["start_time"] = str(float(s.start_time * s.time_base))
    if s.duration is not None:
        out["duration"] = str(float(s.duration * s.time_base))
    if s.frames:
        out["nb_frames"] = str(s.frames)
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
               color_transfer=_TRANSFERS.get(ctx.color_trc),
               sample_aspect_ratio=str(s.sample_aspect_ratio or ctx.sample_aspect_ratio or "0/1"))
    # PyAV has no getter for the stream's display matrix; the decoder copies it onto frames.
    if not out["disposition"]["attached_pic"] and s is box.streams.video[0]:
        try:
            frame = next(box.decode(s), None)
        except Exception:  # a file whose first frame fails will fail loudly in the decoder
            frame = None
        if frame is not None and frame.rotation:
            out["side_data_list"] = [{"rotation": frame.rotation}]
    return out
