"""Whether a source is interlaced, and the filter that makes whole frames of it.

The stream's own flags say so for most interlaced video, but broadcast captures and old DVD
rips are often flagged wrongly, so idet's measurement of the pictures decides where the two
disagree. Deinterlacing keeps one frame per frame (bwdif or yadif in send_frame mode), so the
frame count, timestamps and audio sync stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

from upscaler.media.video.scan import Scan


@dataclass(frozen=True)
class Interlacing:
    """interlaced: the decision; order: "tff" or "bff"; why: how it was decided, for the note;
    filter: the ffmpeg filter to apply before the model, None for none."""

    interlaced: bool
    order: str
    why: str
    filter: str | None


def decide(found: Scan, mode: str) -> Interlacing:
    """How to treat the source, for --deinterlace `mode` (one of config.DEINTERLACE_MODES)."""
    tff, bff = found.flagged
    idet_tff, idet_bff, progressive = found.idet
    frames = max(len(found.decoded_pts), 1)
    tagged = tff + bff > frames / 2
    measured = idet_tff + idet_bff
    # Unflagged streams are deinterlaced only on idet's clear word: moving detail in a
    # progressive picture can look woven to it on some frames (a few of 8 on drawn waves).
    looks = measured >= 3 * progressive and measured >= 5
    looks_progressive = progressive > measured
    if tagged and looks_progressive:
        interlaced, why = False, "flagged interlaced, but idet finds progressive pictures"
    elif tagged:
        interlaced, why = True, "flagged by the stream"
    elif looks:
        interlaced, why = True, "flagged progressive, but idet finds woven fields"
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
