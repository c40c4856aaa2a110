"""Whether a source is interlaced, and the filter that makes whole frames of it.

The stream's own flags say so for most interlaced video, but broadcast captures and old DVD
rips are often flagged wrongly, so idet's measurement of the pictures decides where the two
disagree. Film telecined to 29.97 frames a second (3:2 pulldown: four film frames spread over
ten fields, so that two frames of every five are woven from two film frames) is not interlaced
video: its fields pair up again into whole film frames (fieldmatch), where deinterlacing would
remake every frame from one field and lose half its lines. Either way one frame comes out per
frame (bwdif or yadif in send_frame mode; fieldmatch matches without decimating), so the
frame count, timestamps and audio sync stay as they were; the picture pulldown shows twice
goes to the held-frame checks like any held drawing.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from upscaler.media.video.scan import Scan
from upscaler.media.video.ycbcr import is_rgb


@dataclass(frozen=True)
class Interlacing:
    """interlaced: the decision (telecined film counts); order: "tff" or "bff"; why: how it
    was decided, for the note; filter: the ffmpeg filter to apply before the model, None for
    none; telecined: whether pulldown was found."""

    interlaced: bool
    order: str
    why: str
    filter: str | None
    telecined: bool = False


def decide(found: Scan, mode: str, frame_rate: Fraction | None = None,
           matchable: bool = True) -> Interlacing:
    """How to treat the source, for --deinterlace `mode` (one of config.DEINTERLACE_MODES);
    `frame_rate`, the stream's nominal rate, where known; `matchable`: whether fieldmatch
    takes its pictures (it takes 8-bit Y'CbCr and grey: RGB would be converted on the way in
    and rounded, an alpha dropped), else bwdif deinterlaces telecined film too."""
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
    telecined = _pulldown(found, frame_rate)
    if telecined:
        top, bottom = found.repeated
        interlaced, why = True, (f"telecined film: idet finds pulldown's repeated fields in "
                                 f"{top + bottom} of {frames} frames")
    elif tagged and looks_progressive:
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
    automatic = ("fieldmatch" if telecined else "bwdif") if interlaced else None
    name = {"auto": automatic, "off": None}.get(mode, mode)
    if name == "fieldmatch" and not matchable:
        name = "bwdif"
        why += "; fieldmatch takes no RGB or alpha, so bwdif deinterlaces it"
    if name == "fieldmatch":
        # Frames no field pairs up for (a cut between film frames, video laid over the film)
        # stay combed; fieldmatch marks them and bwdif deinterlaces those alone. Its combed
        # scores choose the match only at scene changes (ffmpeg's default, "sc"): scoring
        # every frame ("full") chose worse matches on testsrc2 telecined (9 of 179 frames under
        # 30 dB against the film, none with "sc") and made bwdif's frames depend on where
        # decoding began, 60 frames back and more, so a resumed segment differed.
        filter_: str | None = (f"fieldmatch=order={order}:combmatch=sc,"
                               f"bwdif=mode=send_frame:parity={order}:deint=interlaced")
    else:
        filter_ = f"{name}=mode=send_frame:parity={order}:deint=all" if name else None
    if mode != "auto" and mode != "off" and not interlaced:
        why += f"; deinterlaced anyway (--deinterlace {mode})"
    elif mode == "fieldmatch" and not telecined:
        why += "; fields matched anyway (--deinterlace fieldmatch)"
    return Interlacing(interlaced, order, why, filter_, telecined)


def takes_fieldmatch(pix_fmt: str, alpha: bool) -> bool:
    """Whether fieldmatch takes a source's pictures as they are (decide's `matchable`): not
    RGB, which it would convert on the way in and round, nor Y'CbCr with an alpha it would
    drop."""
    return not alpha and not is_rgb(pix_fmt)


def _pulldown(found: Scan, frame_rate: Fraction | None) -> bool:
    """Whether idet's counts show 3:2 pulldown: at 29.97 (30) frames a second, where the
    picture moves, one frame of five repeats the top field of the frame before and another the
    bottom field, and two are woven. Interlaced video repeats no field (each is a new moment:
    0 of 90 frames of a 60-field clip), a progressive stream weaves none. The two kinds of
    repeat need not come as often: a still drawing with one box moving, telecined, gave 4 top
    and 50 bottom."""
    if frame_rate is not None and not 29 < float(frame_rate) < 31:
        return False
    repeats = sum(found.repeated)
    woven = found.idet[0] + found.idet[1]
    return repeats >= 4 and woven >= repeats and repeats * 5 >= woven
