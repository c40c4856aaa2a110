"""Tell a damaged source from a whole one: decode errors and frames that never came out.

A frame is missing when the decoder gave nothing for a stretch of the timeline the source
should fill: a packet it could not decode, packets the demuxer skipped over bad bytes, or the
tail of a file cut short (the container still states the full length or frame count). Each
is reported with the time it happened, so that a user can look at the place.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass

from upscaler.media.video.probe import VideoInfo, is_vfr
from upscaler.media.video.scan import Scan

# How many places a message names before it only counts the rest.
_SHOWN = 3
# Seconds missing at the end of a source that decodes without error before it counts as cut
# short: containers may state the file's length as the video's, where audio runs on.
_SHORT_TAIL = 0.25
# What H.264, HEVC and MPEG-2 decoders say of pictures that refer to parameter sets or
# pictures from before the stream began: a recording started between keyframes.
_BEFORE_THE_START = re.compile(
    r"non-existing [PS]PS|[PS]PS id out of range|no frame!|reference picture missing|"
    r"Missing reference picture|Could not find ref with POC|Error constructing the frame RPS|"
    r"decode_slice_header error|mmco: unref short failure|first frame is not a keyframe|"
    r"Invalid frame dimensions 0x0")


@dataclass(frozen=True)
class Damage:
    """errors: (seconds, ffmpeg's line) per decode or demux error. missing: (seconds, frames)
    per run of frames that never came out. expected: the frames the source should have."""

    errors: tuple[tuple[float, str], ...]
    missing: tuple[tuple[float, int], ...]
    expected: int
    # Lines of the decoder's about pictures before the first keyframe (a recording started
    # between keyframes), which no player shows either; not damage.
    before_start: int = 0

    @property
    def lost(self) -> int:
        return sum(n for _, n in self.missing)

    def __bool__(self) -> bool:
        return bool(self.errors or self.missing)

    def describe(self) -> str:
        """One line: what is damaged and where, the first few places named."""
        parts = []
        if self.missing:
            where = ", ".join(f"{n} at {t:.3f} s" for t, n in self.missing[:_SHOWN])
            more = f" and {len(self.missing) - _SHOWN} more places" if len(
                self.missing) > _SHOWN else ""
            parts.append(f"{self.lost} of {self.expected} frames missing ({where}{more})")
        if self.errors:
            times = sorted({round(t, 3) for t, _ in self.errors})
            first = self.errors[0][1]
            n = len(self.errors)
            spots = ", ".join(f"{t:.3f} s" for t in times[:_SHOWN])
            more = f" and {len(times) - _SHOWN} more" if len(times) > _SHOWN else ""
            parts.append(f"{n} decode error{'s' if n > 1 else ''} (at {spots}{more}; first: "
                         f"{first})")
        return "; ".join(parts)


def find_damage(info: VideoInfo, found: Scan) -> Damage:
    """What of `info`'s video the decoding pass `found` did not give whole.

    A video that starts between keyframes (a broadcast recorded from mid-stream, a file cut
    without re-encoding) makes the decoder complain about the pictures before the first
    keyframe, which stream copy, and so the probe, never counts either. Where those are the
    only errors, all timed at the first picture that comes out, and everything else decodes,
    it is whole, with `before_start` saying so."""
    if found.errors and found.decoded_pts:
        first = info.seconds(min(found.decoded_pts)) + float(0.5 / info.frame_rate)
        early = [e for e in found.errors if e[0] <= first and _BEFORE_THE_START.search(e[1])]
        if len(early) == len(found.errors):
            rest = _find_damage(info, dataclasses.replace(found, errors=()))
            if not rest:
                return dataclasses.replace(rest, before_start=len(early))
    return _find_damage(info, found)


def _find_damage(info: VideoInfo, found: Scan) -> Damage:
    step = 1 / (info.frame_rate * info.time_base)  # one frame in time-base units
    decoded = sorted(found.decoded_pts)
    # Bad bytes can read as a packet far past the end: not a frame of the video.
    end = info.declared_end
    packets = [p for p in info.frame_pts
               if not end or info.seconds(p) < end + float(2 / info.frame_rate)]
    if not found.errors and decoded:
        # An MP4 edit list may start the video after its first packets, which the decoder
        # then drops on purpose: they are not lost.
        packets = [p for p in packets if p >= decoded[0]]
    if not found.errors and decoded and set(packets) <= set(decoded):
        return _clean_decode(info, packets, decoded)
    on_grid = _on_grid(sorted(set(packets) | set(decoded)), step)
    expected = len(packets)
    if info.declared_frames > len(info.frame_pts):  # the demuxer came up short of the index
        expected += info.declared_frames - len(info.frame_pts)
    elif end and on_grid:
        # By time, a frame either way is timestamp rounding, not a lost frame.
        # From the first frame that counts (after an edit list's or a cut's dropped start).
        by_time = round((end - info.seconds((packets or info.frame_pts)[0])) * info.frame_rate)
        expected = max(expected, by_time if by_time > len(packets) + 1 else 0)
    whole = not found.errors and len(decoded) >= expected and len(decoded) >= len(packets)
    if whole or not decoded:
        return Damage(found.errors, () if decoded else ((0.0, expected),), expected)
    # Frames whose packets were read but did not decode.
    kept = set(decoded)
    lost = [p for p in packets if p not in kept]
    # Gaps the demuxer skipped: only for a source whose frames lie on the nominal grid, where
    # a hole in the timeline cannot be a deliberately long frame.
    timeline = sorted(kept | set(packets))
    gaps: list[tuple[int, int]] = []
    if on_grid:
        for a, b in itertools.pairwise(timeline):
            holes = round((b - a) / step) - 1
            if holes > 0:
                gaps.append((a, holes))
    runs: dict[int, int] = {}
    for p in lost:
        runs[p] = 1
    for a, holes in gaps:
        runs[round(a + step)] = holes
    missing: list[tuple[int, int]] = _merge(sorted(runs.items()), step)
    counted = len(decoded) + sum(n for _, n in missing)
    if counted < expected:  # the file ends early
        tail = decoded[-1] + step
        missing.append((round(tail), expected - counted))
    return Damage(found.errors,
                  tuple((info.seconds(p), n) for p, n in missing), expected)


def _clean_decode(info: VideoInfo, packets: list[int], decoded: list[int]) -> Damage:
    """A source whose every packet decoded, with no error: whole, unless it stops short of
    where the container says the video ends (a download cut at a cluster's edge, a file whose
    cut left no error line).

    A hole inside its timeline is a frame shown longer, not a lost one: a held title card or
    the repeats an encoder dropped (variable frame rate, on the nominal grid or not), an AVI's
    empty "repeat the last frame" chunk (which its header counts as a frame). Nor is a short
    tail: ASF and others give the video the whole file's length, audio's longer run
    included (0.07 s past a 2-second WMV's last frame).

    An index that counts more frames than the demuxer found (MP4's samples, AVI's header) is
    damage where its count runs past the frames' own end: a cut AVI's header still counts
    the frames cut off, where its stated length is worked out from what is left; an MP4 cut
    short of its index. Frame slots up to the last frame's end are the holes above."""
    expected = len(packets)
    last_end = info.seconds(info.end_pts) if info.end_pts else 0.0
    if info.declared_frames > len(info.frame_pts) and info.frame_pts:
        slots = round((last_end - info.seconds(info.frame_pts[0])) * info.frame_rate)
        lost = info.declared_frames - max(len(info.frame_pts), slots)
        if lost > 0:
            return Damage((), ((last_end, lost),), expected + lost)
    end = info.declared_end
    tail = end - last_end if end and info.end_pts else 0.0
    if tail > max(_SHORT_TAIL, float(1.5 / info.frame_rate)):
        lost = round(tail * info.frame_rate)
        return Damage((), ((last_end, lost),), expected + lost)
    return Damage((), (), max(expected, len(decoded)))


def _on_grid(pts: list[int], step: float) -> bool:
    """Whether every timestamp sits on a multiple of the frame step (timestamp rounding aside)."""
    origin = pts[0]
    return all(abs((p - origin) / step - round((p - origin) / step)) * step <= 1.01 for p in pts)


def _merge(runs: list[tuple[int, int]], step: float) -> list[tuple[int, int]]:
    """Adjacent runs of missing frames as one."""
    merged: list[tuple[int, int]] = []
    for p, n in runs:
        if merged and abs(merged[-1][0] + merged[-1][1] * step - p) < step / 2:
            merged[-1] = (merged[-1][0], merged[-1][1] + n)
        else:
            merged.append((p, n))
    return merged


def accept(info: VideoInfo, found: Scan) -> VideoInfo:
    """`info` as it decodes: the frames that came out, at their own times."""
    pts = tuple(sorted(set(found.decoded_pts)))
    return dataclasses.replace(info, frame_pts=pts, frame_count=len(pts),
                               vfr=is_vfr(pts, info.time_base, info.frame_rate))
