"""Make small test clips with ffmpeg, so the video tests need no downloaded media.

Every clip is a few dozen frames of ffmpeg's moving test pattern at a tiny size; options add
what a test needs: audio, subtitles, an attachment, chapters, rotation, 10-bit HEVC, variable
frame rate, colour tags.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from upscaler.errors import MediaError
from upscaler.media import ffmpeg

SRT = """1
00:00:00,200 --> 00:00:00,700
Hello

2
00:00:00,800 --> 00:00:01,200
World
"""

CHAPTERS = """;FFMETADATA1
title=Test clip
[CHAPTER]
TIMEBASE=1/1000
START=0
END=600
title=Opening
[CHAPTER]
TIMEBASE=1/1000
START=600
END=1200
title=Ending
"""

BT709 = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
         "-color_range", "tv")


def make_clip(path: Path, *, size: str = "64x36", rate: str = "24000/1001",
              seconds: float = 1.25, codec: str = "libx264", pix_fmt: str = "yuv420p",
              audio: bool = False, subtitles: bool = False, attachment: bool = False,
              chapters: bool = False, rotation: int = 0, vfr: bool = False,
              tags: tuple[str, ...] = BT709, sar: str | None = None) -> Path:
    """Write a clip to `path` and return it.

    vfr: frames alternate between two durations (a jittery phone-camera rhythm), stored with a
      1/90000 time base. rotation: a display-matrix rotation in degrees, as phones write it.
    sar: a pixel aspect such as "32/27" (anamorphic 16:9 DVD), tagged on the stream.
    """
    exe = ffmpeg.ffmpeg_exe()
    work = path.parent
    # Smooth waves that move every frame, so each frame differs from its neighbours.
    waves = ("geq=r='128+100*sin(X/5+N/2)':g='128+100*sin(Y/4+N/3)'"
             ":b='128+100*sin((X+Y)/7-N/5)'")
    args = [exe, "-hide_banner", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"nullsrc=s={size}:r={rate}:d={seconds},format=gbrp,{waves}"]
    maps = ["-map", "0:v"]
    n = 1
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=f=440:d={seconds}:sample_rate=48000"]
        maps += ["-map", f"{n}:a", "-ac", "2", "-c:a", "aac"]
        n += 1
    if subtitles:
        srt = work / f"{path.stem}.srt"
        srt.write_text(SRT, encoding="utf-8")
        args += ["-i", str(srt)]
        maps += ["-map", f"{n}:s", "-c:s", "srt"]
        n += 1
    if chapters:
        meta = work / f"{path.stem}.ffmeta"
        meta.write_text(CHAPTERS, encoding="utf-8")
        args += ["-i", str(meta)]
        maps += ["-map_metadata", str(n), "-map_chapters", str(n)]
        n += 1
    if attachment:
        font = work / "font.ttf"
        font.write_bytes(bytes(range(256)) * 4)  # only carried, never parsed
        maps += ["-attach", str(font), "-metadata:s:t", "mimetype=application/x-truetype-font"]
    params = [f"colorspace={tags[1]}", f"color_primaries={tags[3]}", f"color_trc={tags[5]}",
              f"range={tags[7]}"] if tags else []
    sws = f"scale=out_color_matrix={tags[1]}:flags=accurate_rnd" if tags else "scale"
    filters = [sws, f"format={pix_fmt}", *(["setparams=" + ":".join(params)] if params else []),
               *([f"setsar={sar}"] if sar else [])]
    video = ["-c:v", codec, "-pix_fmt", pix_fmt, *tags]
    if codec == "libx265":
        video += ["-x265-params", "log-level=error"]
    if vfr:
        filters = ["settb=1/90000", "setpts='N*3750+mod(N,2)*1200'", *filters]
        video += ["-fps_mode", "passthrough", "-enc_time_base", "1:90000"]
    args += [*maps, "-vf", ",".join(filters), *video]
    target = path.with_name(f"unrotated-{path.name}") if rotation else path
    ffmpeg.run([*args, str(target)], target)
    if rotation:
        copy = [exe, "-hide_banner", "-v", "error", "-y"]
        try:
            ffmpeg.run([*copy, "-display_rotation", str(rotation), "-i", str(target),
                        "-c", "copy", "-map", "0", str(path)], path)
        except MediaError:
            # ffmpeg before 6.1 has no -display_rotation; its MP4 muxer reads a clockwise tag.
            ffmpeg.run([*copy, "-i", str(target), "-c", "copy", "-map", "0",
                        "-metadata:s:v:0", f"rotate={rotation}", str(path)], path)
    return path


def make_flat_clip(path: Path, rgb: tuple[int, int, int], matrix: str, size: str = "64x48",
                   pix_fmt: str = "yuv444p") -> Path:
    """A clip of one flat RGB colour, converted to YUV with `matrix` and tagged with it."""
    sws = {"bt709": "bt709", "smpte170m": "smpte170m"}[matrix]
    # geq paints exact RGB values; the color source would round them through YUV first.
    paint = "geq=r={}:g={}:b={}".format(*rgb)
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y",
                "-f", "lavfi", "-i", f"nullsrc=s={size}:r=25:d=0.2,format=gbrp,{paint}",
                "-vf", f"format=rgb24,scale=out_color_matrix={sws}:out_range=tv"
                f":flags=accurate_rnd+full_chroma_inp,"
                f"format={pix_fmt},setparams=colorspace={matrix}:range=tv",
                "-c:v", "libx264", "-qp", "0", "-colorspace", matrix, "-color_range", "tv",
                str(path)], path)
    return path


def remux(src: Path, dst: Path) -> Path:
    """ffmpeg's own lossless copy of `src` into `dst`'s format: the timing oracle."""
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-i", str(src),
                "-map", "0", "-c", "copy", str(dst)], dst)
    return dst


def packet_checksums(path: Path, spec: str) -> list[str]:
    """The CRC of every packet of the streams `spec` selects (e.g. "a:0"), to prove a copy."""
    text = ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(path),
                       "-map", f"0:{spec}", "-c", "copy", "-f", "framecrc", "-"], path)
    return [line.split(",")[5].strip() for line in text.splitlines()
            if line and not line.startswith("#")]


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame of `path` as RGB, through probe and VideoReader."""
    from upscaler.media.video.probe import probe
    from upscaler.media.video.reader import VideoReader

    with VideoReader(probe(path)) as reader:
        return list(reader)


def add_captions(src: Path, dst: Path, text: str, shown: int, erased: int,
                 rate: str = "24000/1001") -> Path:
    """`src` with its video re-encoded (H.264) to carry `text` as a CEA-608 closed caption,
    as US broadcasts and DVDs carry them: in each picture's SEI (ATSC A/53), shown from frame
    `shown` (pop-on: loaded off screen, then flipped on) and erased at frame `erased`. The
    other streams are copied."""
    exe = ffmpeg.ffmpeg_exe()
    plain = dst.with_name(f"{dst.stem}-plain.h264")
    # No B-frames: each picture's caption bytes go in decoding order, which is then also the
    # order they are shown in.
    ffmpeg.run([exe, "-hide_banner", "-v", "error", "-y", "-i", str(src), "-map", "0:v",
                "-c:v", "libx264", "-bf", "0", "-f", "h264", str(plain)], plain)
    padded = text + "\0" * (len(text) % 2)
    script = {shown - 3 - len(padded) // 2: (0x14, 0x20)}  # resume caption loading
    for i in range(0, len(padded), 2):
        script[shown - 2 - len(padded) // 2 + i // 2] = (ord(padded[i]), ord(padded[i + 1]))
    script[shown] = (0x14, 0x2F)  # end of caption: the loaded caption is shown
    script[erased] = (0x14, 0x2C)  # erase displayed memory
    out = bytearray()
    frame = 0
    for nal in plain.read_bytes().split(b"\x00\x00\x01"):
        nal = nal.rstrip(b"\x00")
        if not nal:
            continue
        # A picture's first slice (first_mb_in_slice 0, coded as a single 1 bit) gets an SEI.
        if nal[0] & 0x1F in (1, 5) and nal[1] & 0x80:
            out += b"\x00\x00\x00\x01" + _caption_sei(*script.get(frame, (0, 0)))
            frame += 1
        out += b"\x00\x00\x00\x01" + nal
    captioned = dst.with_name(f"{dst.stem}-captioned.h264")
    captioned.write_bytes(bytes(out))
    ffmpeg.run([exe, "-hide_banner", "-v", "error", "-y", "-r", rate, "-i", str(captioned),
                "-i", str(src), "-map", "0:v", "-map", "1", "-map", "-1:v", "-c", "copy",
                str(dst)], dst)
    return dst


def add_caption_track(src: Path, dst: Path, text: str, shown: str, erased: str) -> Path:
    """`src` (copied) with `text` as a QuickTime closed-caption track (CEA-608, c608), as
    iTunes and broadcast masters carry them, from a Scenarist (.scc) file: shown at SMPTE
    timecode `shown` (HH:MM:SS:FF at 29.97 frames a second), erased at `erased`."""
    padded = text + "\0" * (len(text) % 2)
    words = [f"{_odd(ord(a)):02x}{_odd(ord(b)):02x}" for a, b in zip(padded[::2], padded[1::2],
                                                                       strict=True)]
    # Resume caption loading, carriage position, the text, end of caption (each sent twice,
    # as captioners do); then erase displayed memory.
    scc = dst.with_suffix(".scc")
    scc.write_text(f"Scenarist_SCC V1.0\n\n{shown}\t9420 9420 94ae 94ae {' '.join(words)} "
                   f"942f 942f\n\n{erased}\t942c 942c\n", encoding="ascii")
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-i", str(src),
                "-i", str(scc), "-map", "0", "-map", "1", "-c", "copy", str(dst)], dst)
    return dst


def _odd(byte: int) -> int:
    """A CEA-608 byte with its odd parity bit (the top one)."""
    return byte | (0x80 if bin(byte).count("1") % 2 == 0 else 0)


def _caption_sei(first: int, second: int) -> bytes:
    """An H.264 SEI NAL unit carrying one CEA-608 byte pair for field 1 (ATSC A/53 cc_data)."""
    cc_data = bytes([0xFC, _odd(first), _odd(second)])  # marker, valid, field 1
    payload = (bytes([0xB5, 0x00, 0x31]) + b"GA94" + bytes([0x03, 0x40 | 1, 0xFF]) + cc_data
               + bytes([0xFF]))
    rbsp = bytes([4, len(payload)]) + payload + bytes([0x80])  # user data registered, T.35
    escaped = bytearray()
    zeros = 0
    for byte in rbsp:  # emulation prevention: no 00 00 0x (x <= 3) inside a NAL unit
        if zeros >= 2 and byte <= 3:
            escaped.append(3)
            zeros = 0
        escaped.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes([0x06]) + bytes(escaped)
