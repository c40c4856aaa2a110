"""Decode a source once before any work, to learn what its headers cannot say.

One pass of ffmpeg decodes the main video stream (on every core; a source that shows damage is
decoded again on one thread, so that error lines come near the frames they damaged) through
`showinfo`, which logs every frame's timestamp, its interlacing flags and its side data (HDR10
mastering display and content light level, Dolby Vision), and `idet`, which measures whether
the pictures are woven from two fields whatever the stream says. From that:

- damage: decode errors with the time they happened (within a few frames), and frames that
  never came out (lost in the middle, or a file that ends before its container's duration);
- interlacing: the field order the frames are flagged with, idet's verdict, and the fields
  idet finds repeated from the frame before (telecined film: 3:2 pulldown repeats one field in
  two frames of every five);
- HDR: the static metadata to carry to the output;
- closed captions (CEA-608/708 in the pictures' side data, as US broadcasts and DVDs carry
  them): they live inside the video stream that is replaced, so the mux extracts them.

It costs one decode of the source (two for a damaged one), small beside upscaling it: a
24-minute 1080p H.264 episode is about 34,000 frames, 2 minutes on this 2-core machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from upscaler.errors import MediaError
from upscaler.media import ffmpeg
from upscaler.media.video.probe import Hdr, VideoInfo

_FRAME = re.compile(r"\bn:\s*\d+\s+pts:\s*(-?\d+)\s.*?\bi:([PTB])")
_FRAME_NUMBER = re.compile(r"\bn:\s*(\d+)\s+pts:")
_SIZE = re.compile(r"\bs:(\d+)x(\d+)\b")
_TIME_BASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")
_IDET = re.compile(r"Multi frame detection:\s*TFF:\s*(\d+)\s*BFF:\s*(\d+)\s*"
                   r"Progressive:\s*(\d+)")
_REPEATED = re.compile(r"Repeated Fields:\s*Neither:\s*\d+\s*Top:\s*(\d+)\s*Bottom:\s*(\d+)")
# showinfo's line for caption side data: "ATSC A53 Part 4 Closed Captions" (older FFmpeg:
# "A/53 closed captions").
_CAPTIONS = re.compile(r"closed captions", re.IGNORECASE)
_PREFIXES = re.compile(r"^(\[[^\]]*\] ?)+")
# A message of another component inside a showinfo line: "[mov,mp4,... @ 0x..] [error] ...".
_EMBEDDED = re.compile(r"(?<=.)\[[^\]]* @ 0x[0-9a-f]+\] \[(?:error|warning)\] .*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Lines that repeat or summarise an error already counted (ffmpeg's aftermath of a failure, and
# the decoder's own summaries), and the scan's own null muxer, whose complaints (timestamps it
# is handed under -copyts) are about the scan, not the source.
_NOISE = (*ffmpeg.AFTERMATH, "Error submitting packet to decoder",
          "Error while decoding stream", "[null @", "to muxer")


@dataclass(frozen=True)
class Scan:
    """What decoding the whole main video stream showed.

    decoded_pts: the timestamps of the frames that came out, in the stream's time base.
    errors: (seconds, ffmpeg's line) for each decode or demux error, timed at the frame it
      came before (the last frame, for errors after it).
    flagged: frames the stream flags as top-field-first and bottom-field-first interlaced.
    idet: idet's multi-frame counts (top field first, bottom field first, progressive).
    repeated: frames whose top field, and frames whose bottom field, idet finds repeated from
      the frame before while the other field changed (pulldown's mark).
    sizes: (seconds, width, height) of the first frame and of each frame whose size differs
      from the one before it: more than one where the picture size changes mid-stream (a TV
      capture around its adverts).
    captions: whether frames carry closed captions (ATSC A/53 side data).
    """

    decoded_pts: tuple[int, ...]
    errors: tuple[tuple[float, str], ...]
    flagged: tuple[int, int]
    idet: tuple[int, int, int]
    hdr: Hdr
    sizes: tuple[tuple[float, int, int], ...] = ()
    captions: bool = False
    repeated: tuple[int, int] = (0, 0)


def to_json(found: Scan) -> dict[str, Any]:
    """`found` as JSON values (a job keeps it in its work folder for a resumed run)."""
    return asdict(found)


def from_json(data: Any) -> Scan:
    """The Scan `to_json` gave; ValueError for anything else (another version's file)."""
    try:
        hdr = data["hdr"]
        mastering, light = hdr["mastering"], hdr["light"]
        # A work folder of a version before 0.2.16 has none: no pulldown found, as then.
        top, bottom = data.get("repeated", (0, 0))
        return Scan(
            decoded_pts=tuple(int(p) for p in data["decoded_pts"]),
            errors=tuple((float(t), str(line)) for t, line in data["errors"]),
            flagged=(int(data["flagged"][0]), int(data["flagged"][1])),
            idet=(int(data["idet"][0]), int(data["idet"][1]), int(data["idet"][2])),
            hdr=Hdr(mastering=None if mastering is None else tuple(float(v) for v in mastering),
                    light=None if light is None else (int(light[0]), int(light[1])),
                    dolby_vision=bool(hdr["dolby_vision"]), dynamic=bool(hdr["dynamic"])),
            sizes=tuple((float(t), int(w), int(h)) for t, w, h in data["sizes"]),
            captions=bool(data["captions"]),
            repeated=(int(top), int(bottom)))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"not a scan: {e}") from e


# What a pass is doing, as a watcher of `scan` hears it: the first decodes everything, the
# second (only where the first met errors) finds where each error is.
CHECKING = "checking"
LOCATING = "finding where the damage is"

# (CHECKING or LOCATING, frames decoded so far, frames the container holds)
Watch = Callable[[str, int, int], None]


def scan(info: VideoInfo, watch: Watch | None = None) -> Scan:
    """Decode `info`'s video stream once; MediaError when ffmpeg cannot even start on it.
    `watch`, where given, hears how many frames each pass has decoded (an episode's scan is
    minutes).

    The pass decodes with every core: a frame-threaded decoder prints an error as many frames
    before the frame it damaged comes out as it has threads, so a source that shows any
    error is decoded again on one thread, where an error line comes within a few frames of its
    own (ffmpeg still decodes and filters in
    threads of their own: the times of one clip's errors varied by 0.1 s between runs). A
    whole source, the common case, is decoded once, on every core (1080p H.264 on 2 cores:
    3.4 ms a frame, against 4.7 ms on one thread; more cores, more gain).
    """
    code, found, log = _decode(info, 0, _frames_to(watch, CHECKING, info.frame_count))
    # Not on a frame count short of the container's alone: frames lost without an error line
    # are found from the timestamps, which threads do not change, and whole MP4s with an edit
    # list decode to fewer frames than they hold packets (a second pass would be minutes).
    if code != 0 or found.errors:
        code, found, log = _decode(info, 1, _frames_to(watch, LOCATING, info.frame_count))
    return _decoded(info, code, found, log)


def sample(info: VideoInfo, starts: Sequence[int], frames: int) -> Scan:
    """A look at about `frames` frames from each of the frames `starts` (indices; ffmpeg's
    filters see one more), where a scan of the whole video would take minutes (`upscale
    compare`): its interlacing counts (flagged, idet, repeated) are those of the frames looked
    at, which decoded_pts holds; it finds no damage. MediaError when ffmpeg cannot decode at
    all."""
    parts = []
    for start in starts:
        seek = info.seconds(info.frame_pts[start]) - info.start_time
        parts.append(_decoded(info, *_decode(info, 0, within=(seek, frames))))
    return Scan(decoded_pts=tuple(p for part in parts for p in part.decoded_pts), errors=(),
                flagged=_total(part.flagged for part in parts),
                idet=_total(part.idet for part in parts), hdr=parts[0].hdr,
                repeated=_total(part.repeated for part in parts))


def _decoded(info: VideoInfo, code: int, found: Scan, log: str) -> Scan:
    """`found`, or MediaError where ffmpeg could not even start decoding (exit `code`)."""
    if code != 0 and not found.decoded_pts:
        raise MediaError(f"cannot decode: {ffmpeg.telling_line(log.splitlines())}", info.path)
    return found


def _total(counts: Iterable[tuple[int, ...]]) -> Any:
    return tuple(sum(column) for column in zip(*counts, strict=True))


def _decode(info: VideoInfo, threads: int, on_line: Callable[[str], None] | None = None,
            within: tuple[float, int] | None = None) -> tuple[int, Scan, str]:
    """ffmpeg's exit code, the Scan and the log of one pass with `threads` (0: every core),
    of the whole video or, `within` (seconds from its start, frames), of a part."""
    part = ["-ss", f"{within[0]:.6f}"] if within else []
    count = ["-frames:v", str(within[1])] if within else []
    args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel",
            "level+info", "-copyts", "-threads", str(threads), *part,
            "-i", ffmpeg.file_url(info.path),
            "-map", f"0:{info.video_index}", *count, "-vf", "showinfo=checksum=0,idet",
            "-f", "null", "-"]
    code, log = ffmpeg.run_log(args, info.path, on_line)
    return code, parse(log, info.time_base), log


def _frames_to(watch: Watch | None, what: str, total: int) -> Callable[[str], None] | None:
    """A log-line reader that tells `watch` each frame showinfo logs, as `what`."""
    if watch is None:
        return None
    watch(what, 0, total)

    def on_line(line: str) -> None:
        found = _FRAME_NUMBER.search(line)
        if found:
            watch(what, int(found.group(1)) + 1, total)
    return on_line


def parse(log: str, time_base: Fraction) -> Scan:
    """The Scan of one `scan` pass's log (its stderr)."""
    filter_tb = time_base
    pts: list[int] = []
    pending: list[str] = []
    errors: list[tuple[float, str]] = []
    tff = bff = 0
    idet = (0, 0, 0)
    repeated = (0, 0)
    mastering: tuple[float, ...] | None = None
    light: tuple[int, int] | None = None
    dolby = dynamic = False
    sizes: list[tuple[float, int, int]] = []
    captions = False
    for line in log.splitlines():
        if "Parsed_showinfo" in line and (inside := _EMBEDDED.search(line)) and _is_damage(
                inside[0]):
            # Another thread's error written into the middle of a showinfo line (the demuxer's
            # "partial file" of a cut MP4 now and then): still an error.
            pending.append(_PREFIXES.sub("", inside[0].strip()))
        if "Parsed_showinfo" in line:
            if m := _TIME_BASE.search(line):
                filter_tb = Fraction(int(m[1]), int(m[2]) or 1)
            elif m := _FRAME.search(line):
                p = round(int(m[1]) * filter_tb / time_base)
                pts.append(p)
                tff += m[2] == "T"
                bff += m[2] == "B"
                errors += [(float(p * time_base), e) for e in pending]
                pending = []
                if (size := _SIZE.search(line)) and (
                        not sizes or sizes[-1][1:] != (int(size[1]), int(size[2]))):
                    sizes.append((float(p * time_base), int(size[1]), int(size[2])))
            elif "Mastering display metadata" in line and mastering is None:
                numbers = [float(n) for n in _NUMBER.findall(line.split(":", 2)[-1])]
                # has_primaries:1 has_luminance:1, then 8 coordinates and 2 luminances
                mastering = tuple(numbers[-10:]) if len(numbers) >= 10 else None
            elif "Content light level" in line and light is None:
                values = re.findall(r"Max(?:CLL|FALL)=(\d+)", line)
                light = (int(values[0]), int(values[1])) if len(values) == 2 else None
            if "Dolby Vision" in line or "DOVI" in line:
                dolby = True
            if "HDR10+" in line or "2094-40" in line:
                dynamic = True
            if _CAPTIONS.search(line):
                captions = True
        elif m := _IDET.search(line):
            idet = (int(m[1]), int(m[2]), int(m[3]))
        elif m := _REPEATED.search(line):
            repeated = (int(m[1]), int(m[2]))
        elif "DOVI configuration" in line or "Dolby Vision" in line:
            dolby = True
        elif _is_damage(line):
            pending.append(_PREFIXES.sub("", line.strip()))
    end = float(pts[-1] * time_base) if pts else 0.0
    errors += [(end, e) for e in pending]
    return Scan(tuple(pts), tuple(errors), (tff, bff), idet, Hdr(mastering, light, dolby, dynamic),
                tuple(sizes), captions, repeated)


def _is_damage(line: str) -> bool:
    if "[error]" not in line and not ("[warning]" in line and "corrupt" in line.lower()):
        return False
    return not any(n in line for n in _NOISE)
