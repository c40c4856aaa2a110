"""Whether a source is interlaced, and the filter that makes whole frames of it.

The stream's own flags say so for most interlaced video, but broadcast captures and old DVD
rips are often flagged wrongly, so idet's measurement of the pictures decides where the two
disagree. Deinterlacing keeps one frame per frame (bwdif or yadif in send_frame mode), so the
frame count, timestamps and audio sync stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from upscaler.media.video.scan import Scan


@dataclass(frozen=True)
class Interlacing:
    """interlaced: the decision; order: "tff" or "bff"; why: how it was decided, for the note;
    filter: the ffmpeg filter to apply before the model, None for none."""

    interlaced: bool
    order: str
    why: str
    filter: str | None


def decide(found: Scan, mode: str, frame_rate: Fraction | None = None) -> Interlacing:
    """How to treat the source, for --deinterlace `mode` (one of config.DEINTERLACE_MODES);
    `frame_rate`, the stream's nominal rate, where known."""
    tff, bff = found.flagged
    idet_tff, idet_bff, progressive = found.idet
    frames = max(len(found.decoded_pts), 1)
    tagged = tff + bff > frames / 2
    measured = idet_tff + idet_bff
    # Unflagged streams are deinterlaced only on idet's clear word: moving detail in a
    # progressive picture can look woven to it on some frames (a few of 8 on drawn waves).
    looks = measured >= 3 * progressive and measured >= 5
    looks_progressive = progressive > measured
    # Interlaced video runs at 25 or 30000/1001 frames a second (50 or 60 fields). At film rates
    # (23.976, 24) and at 48 to 60 frames a second no frame is woven from two fields, and what
    # idet calls woven there is fine lines moving: credits scrolling at some speeds (a 9-px
    # grid at 61 px a frame, 23.976 frames/s: 70 of 96 frames "woven"), ffmpeg's testsrc2.
    field_rate = frame_rate is None or 24.5 < float(frame_rate) < 31
    if tagged and looks_progressive:
        interlaced, why = False, "flagged interlaced, but idet finds progressive pictures"
    elif tagged:
        interlaced, why = True, "flagged by the stream"
    elif looks and field_rate:
        interlaced, why = True, "flagged progressive, but idet finds woven fields"
    elif looks:
        interlaced, why = False, (f"progressive: idet finds combing in {measured} of "
                                  f"{frames} frames, but at {float(frame_rate or 0):.3f} "
                                  "frames/s they are not woven from fields (moving fine lines)")
    else:
        interlaced, why = False, "progressive"
    # idet measures the pictures; where it found fields, its order beats the flags.
    first, second = (idet_tff, idet_bff) if looks else (tff, bff)
    order = "tff" if first >= second else "bff"
    name = {"auto": "bwdif" if interlaced else None, "off": None}.get(mode, mode)
    chosen = mode in ("bwdif", "yadif")
    filter_ = f"{name}=mode=send_frame:parity={order}:deint=all" if name else None
    if chosen and not interlaced:
        why += f"; deinterlaced anyway (--deinterlace {mode})"
    return Interlacing(interlaced, order, why, filter_)
