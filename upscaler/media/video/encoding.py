"""Which encoder, pixel format and options a video is written with, from the user's settings.

Generic codec names (h264, hevc, av1, vp9) pick a hardware encoder where one works on this
machine, else the software one; an ffmpeg encoder name is used as given.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from upscaler.config import DEINTERLACE_MODES
from upscaler.errors import UsageError
from upscaler.media import ffmpeg
from upscaler.media.video.probe import Hdr, VideoInfo
from upscaler.media.video.writer import Encoding
from upscaler.media.video.ycbcr import chroma_subsampling

# Generic codec names -> encoders to try, hardware first; the last one is the software fallback.
CODEC_CANDIDATES = {
    "h264": ("h264_videotoolbox", "h264_nvenc", "h264_qsv", "h264_amf", "libx264"),
    "hevc": ("hevc_videotoolbox", "hevc_nvenc", "hevc_qsv", "hevc_amf", "libx265"),
    "av1": ("av1_nvenc", "av1_qsv", "av1_amf", "libsvtav1", "libaom-av1"),
    "vp9": ("vp9_qsv", "libvpx-vp9"),
}
# The encoder a source with alpha gets where no codec is asked for, by the output's suffix:
# ProRes 4444, the format compositing hands such video around in, and VP9 for the web (its
# alpha is a second picture WebM carries beside the first: segments.segment_suffix). H.264
# and H.265 have no alpha that FFmpeg reads back, so .mp4 has none.
ALPHA_DEFAULTS = {".mov": "prores_ks", ".mkv": "prores_ks", ".webm": "libvpx-vp9"}
# Encoders whose alpha FFmpeg decodes again, as a resumed job's checks and players need;
# libx265 lists yuva formats but its alpha layer does not come back out of FFmpeg's decoder.
ALPHA_ENCODERS = ("prores_ks", "ffv1", "png", "utvideo", "libvpx-vp9", "libvpx")
# Encoders of a format that holds limited range only (ProRes): a full-range source is written
# limited, as ffmpeg itself does; its full-range codes were read as limited, every level
# stretched (28..227 came back as 14..247).
LIMITED_RANGE_ONLY = ("prores",)
# Of those, the ones whose alpha lives outside the picture's packets (Matroska's
# BlockAdditional): their segments must be WebM, which keeps it, not NUT.
SIDE_ALPHA_ENCODERS = ("libvpx-vp9", "libvpx")
# Encoders that write HDR10's mastering display and content light level into the stream.
HDR10_ENCODERS = ("libx265", "libsvtav1")
CODEC_ALIASES = {"h265": "hevc", "x265": "hevc", "avc": "h264", "x264": "h264"}


@dataclass(frozen=True)
class VideoSettings:
    """How to encode the upscaled video. Names follow ffmpeg's options.

    codec: an ffmpeg encoder (libx264, hevc_nvenc...) used as given, or a codec name (h264,
      hevc, av1, vp9) that picks a working hardware encoder if the machine has one, else the
      software encoder. None: H.264 (VP9 for .webm), or H.265 for sources deeper than 8 bits;
      for a source with alpha, ProRes 4444 in .mov or .mkv and VP9 with alpha in .webm.
    crf: quality, in the encoder's CRF scale; mapped to -cq (NVENC), -global_quality (QSV),
      constant QP (AMF) or -q:v (VideoToolbox, 100 - 2 * crf). None keeps the encoder default.
      ProRes has no such scale and takes none (its profile sets the quality).
    preset: passed to -preset as is (medium, slow, p5...). None keeps the encoder default.
    pix_fmt: None keeps the source's pixel format (and so its bit depth and chroma) when the
      encoder takes it, else the closest 4:2:0 format of the same depth.
    segment_seconds: target length of a segment; cuts fall on the first frame at or after each
      multiple, so segments hold whole frames.
    queue_frames: frames buffered between each pair of stages; more smooths uneven stages at
      the cost of memory (frame size x 2 x queue_frames).
    overwrite: replace an existing output instead of raising OutputExistsError.
    resume: reuse the segments an earlier, unfinished run of the same job left (resume.py).
    work_dir: the folder to keep segments in until the output is written; None puts them
      beside the output.
    accept_damage: upscale what decodes of a damaged source (decode errors, missing frames)
      instead of refusing it; the frames lost are counted in a warning.
    deinterlace: "auto" pairs the fields of telecined film into whole frames (fieldmatch) and
      deinterlaces a source that is interlaced (by its flags or idet's measurement) with
      bwdif; "fieldmatch", "bwdif" or "yadif" always uses that filter; "off" never. One frame
      per frame in every case.
    """

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    segment_seconds: float = 4.0
    queue_frames: int = 4
    overwrite: bool = False
    resume: bool = True
    work_dir: Path | None = None
    accept_damage: bool = False
    deinterlace: str = "auto"

    def __post_init__(self) -> None:
        if self.deinterlace not in DEINTERLACE_MODES:
            raise UsageError(f"deinterlace must be one of {', '.join(DEINTERLACE_MODES)}, "
                             f"got {self.deinterlace!r}")
        if not self.segment_seconds > 0:
            raise UsageError(f"segment_seconds must be positive, got {self.segment_seconds}")
        if self.queue_frames < 1:
            raise UsageError(f"queue_frames must be at least 1, got {self.queue_frames}")
        if self.crf is not None and self.crf < 0:
            raise UsageError(f"crf must not be negative, got {self.crf}")


def choose_encoding(info: VideoInfo, settings: VideoSettings, container: str) -> Encoding:
    """The encoder, pixel format, options and colour tags for a source and an output suffix."""
    exe = ffmpeg.ffmpeg_exe()
    encoder = _pick_encoder(exe, info, settings.codec, container)
    pix_fmt = settings.pix_fmt or _pick_pix_fmt(exe, encoder, info)
    options: list[str] = []
    if settings.crf is not None:
        options += _quality_args(encoder, settings.crf)
    if settings.preset:
        options += ["-preset", settings.preset]
    if encoder == "libx265":
        options += ["-x265-params", ":".join(["log-level=error", *_x265_hdr(info.hdr)])]
    if encoder == "libsvtav1" and _svtav1_hdr(info.hdr):
        options += ["-svtav1-params", ":".join(_svtav1_hdr(info.hdr))]
    value_range = "tv" if encoder.startswith(LIMITED_RANGE_ONLY) else info.yuv_range
    return Encoding(encoder=encoder, pix_fmt=pix_fmt, matrix=info.yuv_matrix,
                    range=value_range, primaries=info.color_primaries,
                    transfer=info.color_transfer, options=tuple(options),
                    display_aspect=info.display_aspect if info.sar != 1 else None)


def _x265_hdr(hdr: Hdr) -> list[str]:
    """x265's SEI parameters for HDR10: chromaticities in 0.00002, luminance in 0.0001 cd/m2."""
    params = []
    if hdr.mastering:
        rx, ry, gx, gy, bx, by, wx, wy, low, high = hdr.mastering
        xy = [round(v / 0.00002) for v in (gx, gy, bx, by, rx, ry, wx, wy)]
        params.append("master-display=G({},{})B({},{})R({},{})WP({},{})".format(*xy)
                      + f"L({round(high / 0.0001)},{round(low / 0.0001)})")
    if hdr.light:
        params.append(f"max-cll={hdr.light[0]},{hdr.light[1]}")
    return params


def _svtav1_hdr(hdr: Hdr) -> list[str]:
    params = []
    if hdr.mastering:
        rx, ry, gx, gy, bx, by, wx, wy, low, high = hdr.mastering
        params.append(f"mastering-display=G({gx:.4f},{gy:.4f})B({bx:.4f},{by:.4f})"
                      f"R({rx:.4f},{ry:.4f})WP({wx:.4f},{wy:.4f})L({high:.4f},{low:.4f})")
    if hdr.light:
        params.append(f"content-light={hdr.light[0]},{hdr.light[1]}")
    return params


def _pick_encoder(exe: str, info: VideoInfo, codec: str | None, container: str) -> str:
    available = ffmpeg.encoders(exe)
    if codec is None and info.alpha and ALPHA_DEFAULTS.get(container) in available:
        return ALPHA_DEFAULTS[container]
    if codec is None:
        codec = "vp9" if container == ".webm" else "hevc" if info.bit_depth > 8 else "h264"
    codec = CODEC_ALIASES.get(codec, codec)
    if codec not in CODEC_CANDIDATES:
        if codec not in available:
            raise UsageError(f"this ffmpeg has no encoder named {codec!r}")
        return codec
    *hardware, software = [c for c in CODEC_CANDIDATES[codec] if c in available] or [None]
    if hardware:
        # Each trial is an ffmpeg start (25 ms); a Linux build lists NVENC, QSV and AMF and
        # usually has none of them, so they are tried side by side, the first that works wins.
        with ThreadPoolExecutor(len(hardware)) as pool:
            works = list(pool.map(lambda name: ffmpeg.encoder_works(exe, name), hardware))
        for name, ok in zip(hardware, works, strict=True):
            if ok:
                return name
    if software is None:
        raise UsageError(f"this ffmpeg has no encoder for {codec}")
    return software


def _pick_pix_fmt(exe: str, encoder: str, info: VideoInfo) -> str:
    supported = ffmpeg.encoder_pix_fmts(exe, encoder)
    keep = info.alpha and encoder in ALPHA_ENCODERS
    if keep and encoder in SIDE_ALPHA_ENCODERS:
        # libvpx lists deeper formats with alpha too, but refuses them without -strict
        # experimental, and browsers play VP9's alpha in 8-bit 4:2:0 only.
        return "yuva420p"
    if keep and info.pix_fmt not in supported:
        # The encoder's own format with alpha that is closest to the source: ProRes 4444
        # (decoded as yuva444p12le) is written as yuva444p10le, all prores_ks takes.
        formats = ffmpeg.pix_fmts(exe)
        with_alpha = [f for f in supported if f in formats and formats[f].alpha]
        if with_alpha:
            source = chroma_subsampling(info.pix_fmt)
            # Same chroma first, then the nearest depth, the deeper of two as near.
            return max(with_alpha, key=lambda f: (chroma_subsampling(f) == source,
                                                  -abs(formats[f].depth - info.bit_depth),
                                                  formats[f].depth))
    deep = "yuv420p10le" if info.bit_depth <= 10 else "yuv420p12le"
    # Without an encoder that keeps alpha, the source's format without its alpha plane:
    # ProRes 4444 (yuva444p12le) stays 4:4:4 where the encoder has it.
    same = [info.pix_fmt if keep or not info.alpha else without_alpha(info.pix_fmt)]
    wanted = [*same, deep, "p010le", "yuv420p"] if info.bit_depth > 8 else same
    wanted += ["yuv420p", "nv12"]
    for name in wanted:
        if not supported or name in supported:
            return name
    return supported[0]


def without_alpha(pix_fmt: str) -> str:
    """The pixel format with the same planes but the alpha one (yuva422p10le -> yuv422p10le)."""
    for with_, without in (("yuva", "yuv"), ("gbrap", "gbrp")):
        if pix_fmt.startswith(with_):
            return without + pix_fmt[len(with_):]
    return pix_fmt


def deeper_than_source(info: VideoInfo, encoding: Encoding) -> bool:
    """Whether `encoding` stores more than 8 bits of a source that has 8 (a 10-bit HEVC of an
    8-bit episode): the job's frames are then 16-bit from the reader on, so that the model's
    output reaches the encoder with its own precision, not rounded to 8 bits first (which
    would leave the 8-bit steps in gradients the 10 bits were chosen to smooth)."""
    described = ffmpeg.pix_fmts(ffmpeg.ffmpeg_exe()).get(encoding.pix_fmt)
    return info.bit_depth <= 8 and described is not None and described.depth > 8


def keeps_alpha(encoding: Encoding) -> bool:
    """Whether `encoding` writes an alpha plane, so the job passes frames with alpha."""
    described = ffmpeg.pix_fmts(ffmpeg.ffmpeg_exe()).get(encoding.pix_fmt)
    return encoding.encoder in ALPHA_ENCODERS and bool(described and described.alpha)


def _quality_args(encoder: str, crf: int) -> list[str]:
    if encoder.startswith("prores"):
        return []  # ProRes has no rate factor: its profile (4444) sets the quality
    if encoder.endswith("_nvenc"):
        return ["-rc", "vbr", "-cq", str(crf), "-b:v", "0"]
    if encoder.endswith("_qsv"):
        return ["-global_quality", str(crf)]
    if encoder.endswith("_amf"):
        return ["-rc", "cqp", "-qp_i", str(crf), "-qp_p", str(crf), "-qp_b", str(crf)]
    if encoder.endswith("_videotoolbox"):
        return ["-q:v", str(max(1, min(100, 100 - 2 * crf)))]
    if encoder in ("libvpx-vp9", "libaom-av1"):
        return ["-crf", str(crf), "-b:v", "0"]
    return ["-crf", str(crf)]
