"""Join finished segment files losslessly and mux them with the source's other streams.

`check_container` says before any work whether the output's format can hold the source's
audio, subtitles and attachments; `join_and_mux` writes the output atomically at the end.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from upscaler.errors import MediaError, OutputExistsError
from upscaler.media import ffmpeg
from upscaler.media.video.encoding import CODEC_CANDIDATES
from upscaler.media.video.probe import StreamInfo, VideoInfo
from upscaler.media.video.segments import Segment, segment_duration
from upscaler.media.video.writer import Encoding
from upscaler.names import hidden_name


def join_and_mux(info: VideoInfo, segments: Sequence[Segment], files: Sequence[Path],
                 dst: str | Path, encoding: Encoding | None = None,
                 overwrite: bool = False) -> Path:
    """Join segment files losslessly and mux them with the source's other streams into `dst`.

    Each segment's exact length goes into the concat list, so timestamps (and audio sync) do
    not drift however many segments there are. `dst` appears only when complete: ffmpeg writes
    a hidden temporary name that is renamed at the end. `encoding` made the segments: its
    encoder decides the codec tag MP4 needs (hvc1, which Apple players require for HEVC), and
    its colour tags go on the video, which not every codec's bitstream holds (VP9 holds no
    primaries or transfer, FFV1 and VP8 none at all).
    """
    dst = Path(dst)
    partial = dst.with_name(hidden_name(dst.stem, f".partial{dst.suffix}"))
    listing = _write_listing(info, segments, [Path(f).resolve() for f in files])
    # ffmpeg moves each input to start at zero, the source by its earliest stream (an audio
    # pre-roll, say). The joined video starts at zero, so it gets the source video's lead over
    # that earliest stream; chapters move with the source, so everything stays in step.
    offset = info.seconds(info.frame_pts[0]) - info.start_time
    covers: list[Path] = []
    try:
        cover_args = _cover_attachments(info, dst, covers)
        # Run in the segments' folder, the listing named from there: the concat demuxer finds
        # the segments by resolving their names against the listing's path as a URL, where a
        # "?" or "#" in a folder's name (an output "Episode #1.mkv") began a query or a
        # fragment, and the join failed on every run. Every other path is absolute.
        ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
                    "-f", "concat", "-safe", "0", "-itsoffset", f"{offset:.6f}",
                    "-i", ffmpeg.file_url(listing.name),
                    "-i", ffmpeg.file_url(os.path.abspath(info.path)),
                    *_caption_input(info, offset),
                    "-map", "0:v:0", "-map", "1", "-map", f"-1:{info.video_index}",
                    "-map", "-1:d?", *cover_args, *(["-map", "2:s"] if info.captions else []),
                    "-map_metadata", "1", "-map_chapters", "1",
                    "-c", "copy", *_container_args(info, dst, encoding),
                    *_caption_codec(info, dst),
                    "-f", MUXERS[dst.suffix.lower()], ffmpeg.file_url(os.path.abspath(partial))],
                   dst, cwd=listing.parent)
        if dst.exists() and not overwrite:
            raise OutputExistsError("appeared while encoding; not replaced", dst)
        os.replace(partial, dst)
    finally:
        listing.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
        for cover in covers:
            cover.unlink(missing_ok=True)
    return dst


def _write_listing(info: VideoInfo, segments: Sequence[Segment], files: Sequence[Path]) -> Path:
    """The concat demuxer's list of `files` (a job's segments, all in its segments folder),
    each with its segment's exact length.

    Written in that folder and naming them relative to it: the list is read line by line, so
    a folder whose name has a line break in it (an output named so) could not be named inside
    it, and the folder's path is given on the command line.
    """
    folders = {path.parent for path in files}
    if len(folders) != 1:
        raise ValueError(f"segments to join lie in {len(folders)} folders, not one")
    listing = folders.pop() / "join.ffconcat"
    lines = ["ffconcat version 1.0"]
    for segment, path in zip(segments, files, strict=True):
        escaped = path.name.replace("'", "'\\''")
        lines += [f"file '{escaped}'", f"duration {float(segment_duration(info, segment)):.6f}"]
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return listing


# Closed captions come out of FFmpeg's caption decoder as ASS events; each container gets
# the text format it holds.
_CAPTION_CODECS = {".mkv": "ass", ".webm": "webvtt", ".mp4": "mov_text", ".m4v": "mov_text",
                   ".mov": "mov_text"}


def carries_captions() -> bool:
    """Whether this ffmpeg can take closed captions out of a video: the movie filter, which
    gives them as a stream of their own (its subcc output), and the decoder that reads them."""
    exe = ffmpeg.ffmpeg_exe()
    return "cc_dec" in ffmpeg.decoders(exe) and ffmpeg.has_filter(exe, "movie")


def _caption_input(info: VideoInfo, offset: float) -> list[str]:
    """The source's closed captions as input 2, read by the movie filter, which decodes the
    video for them. The input starts where the source video does (the captions are
    its frames' side data), so the joined video's offset puts them in step."""
    if not info.captions:
        return []
    name = _filter_escape(_filter_escape(str(info.path.resolve())))
    graph = f"movie={name}:s={info.video_index}[out0+subcc]"
    return ["-itsoffset", f"{offset:.6f}", "-f", "lavfi", "-i", graph]


def _caption_codec(info: VideoInfo, dst: Path) -> list[str]:
    """The captions' stream (after the source's own subtitles) in the container's text format;
    after `-c copy`, which FFmpeg lets the last option it finds for a stream override."""
    if not info.captions:
        return []
    n = sum(s.kind == "subtitle" for s in info.streams)
    return [f"-c:s:{n}", _CAPTION_CODECS[dst.suffix.lower()],
            f"-metadata:s:s:{n}", "title=Closed captions"]


def _filter_escape(text: str) -> str:
    """`text` as one value in an FFmpeg filter graph, which reads it through two levels of
    escaping (the option's value, then the graph): called once for each. A backslash before
    any character keeps it as it is."""
    return "".join(c if c.isalnum() or c in "/._-" else "\\" + c for c in text)


_COVER_TYPES = {"mjpeg": ("jpg", "image/jpeg"), "png": ("png", "image/png")}


def _cover_attachments(info: VideoInfo, dst: Path, files: list[Path]) -> list[str]:
    """Arguments that carry the source's cover art into a Matroska output as what Matroska
    calls cover art: an image attachment. (Copied as a stream, FFmpeg writes it as a
    one-frame video track, which players show as a second video.) The pictures are
    extracted beside `dst` into `files`, for the caller to remove."""
    if dst.suffix.lower() != ".mkv":
        return []
    args: list[str] = []
    attachments = sum(s.kind == "attachment" for s in info.streams)
    covers = [s for s in info.streams if s.attached_pic and s.codec in _COVER_TYPES]
    for n, stream in enumerate(covers):
        ext, mime = _COVER_TYPES[stream.codec]
        picture = dst.with_name(hidden_name(dst.name, f".cover{n}.{ext}"))
        files.append(picture)
        ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
                    "-i", ffmpeg.file_url(info.path), "-map", f"0:{stream.index}", "-c",
                    "copy", "-frames:v", "1", "-f", "image2", ffmpeg.file_url(picture)],
                   info.path)
        name = stream.tags.get("filename") or (f"cover.{ext}" if n == 0 else f"cover{n}.{ext}")
        k = attachments + n
        args += ["-map", f"-1:{stream.index}", "-attach", os.path.abspath(picture),
                 f"-metadata:s:t:{k}", f"mimetype={mime}", f"-metadata:s:t:{k}", f"filename={name}"]
    return args


_MP4_LIKE = (".mp4", ".m4v", ".mov")
MUXERS = {".mkv": "matroska", ".webm": "webm", ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
WRITABLE_CONTAINERS: tuple[str, ...] = tuple(MUXERS)
_WEBM_CODECS = {"vp8", "vp9", "av1", "opus", "vorbis", "webvtt"}
# Text subtitles that MP4 and MOV hold as mov_text (lossless for plain text); CEA-608 (a
# QuickTime c608 track) among them, which MOV also holds as it is.
_TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "webvtt", "text", "mov_text", "eia_608"}
# Subtitles MP4 holds as they are: TTML (stpp), as streaming services deliver it.
_MP4_SUBTITLES = {"ttml"}


def check_container(info: VideoInfo, dst: str | Path) -> None:
    """MediaError naming `dst` when its format cannot hold the source's other streams.

    Called before any work is done, so a long job does not fail at the final mux: the
    common refusals are named here, and ffmpeg then writes a second of those streams into a
    file of the format, as the final mux will, which finds the rest (a TTML subtitle track,
    which Matroska cannot hold, say).
    """
    dst = Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in MUXERS:
        raise MediaError(f"unknown video format {suffix!r}; use one of {', '.join(MUXERS)}", dst)
    # A codec that no decoder here knows (probe names it "none") is left to the trial, which
    # has ffmpeg name it.
    known = [s for s in info.streams if s.index != info.video_index and s.codec != "none"]
    if suffix == ".webm":
        for s in known:
            if s.codec not in _WEBM_CODECS:
                raise MediaError(f".webm cannot hold the {s.codec} {s.kind} stream of "
                                 f"{info.path.name}; write .mkv instead", dst)
    covers = [s for s in info.streams if s.attached_pic]
    if suffix == ".mov" and covers:
        # FFmpeg's MOV muxer leaves attached pictures out without a word (MP4 writes them as
        # iTunes cover art), so the trial below cannot find it.
        raise MediaError(f".mov cannot hold the cover art ({covers[0].codec}) of "
                         f"{info.path.name}; write .mp4 or .mkv instead", dst)
    if suffix in _MP4_LIKE:
        if any(s.kind == "attachment" for s in info.streams):
            raise MediaError(f"{suffix} cannot hold the attachments (fonts) of "
                             f"{info.path.name}; write .mkv instead", dst)
        for s in known:
            if s.kind == "subtitle" and s.codec not in _TEXT_SUBTITLES | _MP4_SUBTITLES:
                raise MediaError(f"{suffix} cannot hold the {s.codec} subtitles of "
                                 f"{info.path.name}; write .mkv instead", dst)
    failed = _streams_trial(info, suffix)
    if failed is not None:
        fits = [s for s in (".mkv", ".mp4", ".mov") if s != suffix and
                _streams_trial(info, s) is None]
        hint = (f"write {' or '.join(fits)} instead" if fits else
                "no format here holds them: copy the source without them first (ffmpeg -map)")
        raise MediaError(f"{suffix} cannot hold the other streams of {info.path.name} "
                         f"({failed}); {hint}", dst)


def _streams_trial(info: VideoInfo, suffix: str) -> str | None:
    """Why ffmpeg cannot write the source's streams other than its video into a `suffix`
    file as the final mux does (the subtitles converted alike): None when it can."""
    others = [s for s in info.streams if s.index != info.video_index and s.kind != "data"
              and not (s.attached_pic and suffix == ".mkv")]  # a cover becomes an attachment
    if not others:
        return None
    try:
        stat = info.path.stat()
    except OSError:
        return None  # the probe said what there is to say about the file
    args = [arg for s in others for arg in ("-map", f"0:{s.index}")]
    return _mux_trial(str(info.path), stat.st_size, stat.st_mtime_ns, suffix,
                      (*args, "-c", "copy", *_subtitle_args(info, suffix)))


@functools.lru_cache(maxsize=256)
def _mux_trial(path: str, size: int, mtime_ns: int, suffix: str, args: tuple[str, ...],
               ) -> str | None:
    """The first second of `path` written with `args` into a `suffix` file that is thrown
    away: ffmpeg's reason when it fails, else None. Cached per version of the file (size and
    mtime_ns): a batch checks each job before it runs and again at its mux."""
    with tempfile.TemporaryDirectory(prefix="upscaler-mux-") as tmp:
        out = Path(tmp) / f"trial{suffix}"
        code, log = ffmpeg.run_log([ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v",
                                    "error", "-t", "1", "-i", ffmpeg.file_url(path),
                                    *args, "-f", MUXERS[suffix], str(out)], path)
    return None if code == 0 else ffmpeg.telling_line(log.splitlines()).rstrip(".")


def _to_mov_text(stream: StreamInfo, suffix: str) -> bool:
    """Whether a subtitle stream becomes mov_text in a `suffix` output."""
    keep = stream.codec == "mov_text" or (stream.codec == "eia_608" and suffix == ".mov")
    return suffix in _MP4_LIKE and stream.codec in _TEXT_SUBTITLES and not keep


_SRT_TIMES = re.compile(r"^(\d+):(\d\d):(\d\d)[,.](\d{3}) --> (\d+):(\d\d):(\d\d)[,.](\d{3})",
                        re.MULTILINE)


def cut_cue_notes(info: VideoInfo, dst: Path) -> list[str]:
    """A line for each text subtitle track that mov_text (MP4, MOV) will cut: it shows one
    cue at a time, so ffmpeg ends a cue where the next begins, and a line said while another
    is on screen (two speakers, a sign over the dialogue) loses the rest of its time."""
    suffix = dst.suffix.lower()
    subtitles = [s for s in info.streams if s.kind == "subtitle"]
    notes = []
    for n, stream in enumerate(subtitles):
        # CEA-608 captions have no cues to read as SubRip; they go as they are.
        if not _to_mov_text(stream, suffix) or stream.codec == "eia_608":
            continue
        try:
            stat = info.path.stat()
        except OSError:
            return notes  # the job says what became of its source
        cues = _cue_times(str(info.path), stat.st_size, stat.st_mtime_ns, stream.index)
        cut = sum(b[0] < a[1] for a, b in itertools.pairwise(cues))
        if cut:
            tags = {k.lower(): v for k, v in stream.tags.items()}
            name = tags.get("title") or tags.get("name") or tags.get("language") or stream.codec
            notes.append(f"subtitle track {n + 1} ({name}): {suffix}'s mov_text shows one cue "
                         f"at a time, so {cut} of its {len(cues)} cues, which overlap the next, "
                         "end where it begins (a .mkv output keeps them whole)")
    return notes


@functools.lru_cache(maxsize=64)
def _cue_times(path: str, size: int, mtime_ns: int, index: int) -> list[tuple[float, float]]:
    """The (start, end) seconds of the cues of the text subtitle stream `index`, in order:
    read once per version of the file (size and mtime_ns), since a job looks at its source
    before it runs and again as it starts, and each look reads the whole file."""
    # As SubRip, whatever the text format: only the cues' times are read.
    text = ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error",
                       "-i", ffmpeg.file_url(path), "-map", f"0:{index}", "-c:s", "srt",
                       "-f", "srt", "-"], path)
    return sorted((_seconds(m[:4]), _seconds(m[4:])) for m in _SRT_TIMES.findall(text))


def _seconds(parts: Sequence[str]) -> float:
    hours, minutes, seconds, millis = (int(p) for p in parts)
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def _subtitle_args(info: VideoInfo, suffix: str) -> list[str]:
    """The codec of each subtitle stream that `suffix`'s format cannot hold as it is (the
    rest are copied): MP4 and MOV take text as mov_text, MOV keeps CEA-608 as it is;
    Matroska takes mov_text as SubRip and CEA-608 as ASS (its positions kept)."""
    args: list[str] = []
    subtitles = [s for s in info.streams if s.kind == "subtitle"]
    for n, s in enumerate(subtitles):
        codec = None
        if suffix in _MP4_LIKE:
            codec = "mov_text" if _to_mov_text(s, suffix) else None
        elif suffix == ".mkv":
            codec = {"mov_text": "srt", "eia_608": "ass"}.get(s.codec)
        if codec:
            args += [f"-c:s:{n}", codec]
    return args


def video_tag_args(suffix: str, encoder: str) -> list[str]:
    """The video stream's codec tag where a container needs one: Apple players require hvc1
    for HEVC in MP4 and MOV."""
    hevc = encoder in CODEC_CANDIDATES["hevc"] or encoder == "libkvazaar"
    return ["-tag:v", "hvc1"] if hevc and suffix in _MP4_LIKE else []


def _track_titles(info: VideoInfo) -> list[str]:
    """An audio or subtitle track's title where the source holds it as QuickTime's "name"
    (MP4 and MOV do): copied as it is, Matroska kept it as a tag called NAME and MP4 dropped
    it, so players showed untitled tracks."""
    args: list[str] = []
    for kind, letter in (("audio", "a"), ("subtitle", "s")):
        tracks = [s for s in info.streams if s.kind == kind]
        for n, stream in enumerate(tracks):
            tags = {k.lower(): v for k, v in stream.tags.items()}
            if tags.get("name") and not tags.get("title"):
                args += [f"-metadata:s:{letter}:{n}", f"title={tags['name']}",
                         f"-metadata:s:{letter}:{n}", "name="]
    return args


def _container_args(info: VideoInfo, dst: Path, encoding: Encoding | None) -> list[str]:
    """Per-container fixes: what a format cannot hold as is, and the video stream's tags."""
    check_container(info, dst)
    suffix = dst.suffix.lower()
    args: list[str] = []
    # The video comes from the segments, which carry no tags: the source video's own go on it
    # (QuickTime reads a track's title back as "name"; the encoder and Matroska's statistics
    # tags would be stale), and its start timecode, which MOV and MP4 write as a timecode
    # track (tmcd) and Matroska as a TIMECODE tag (the source's tmcd track is data, left out).
    tags = info.video_stream.tags if info.video_stream else {}
    kept = {"language": tags.get("language"), "title": tags.get("title") or tags.get("name"),
            "timecode": info.timecode}
    for key, value in kept.items():
        if value:
            args += ["-metadata:s:v:0", f"{key}={value}"]
    # The others' flags come with them. Naming the video's even where it is not the default
    # keeps ffmpeg from marking the first audio and subtitle track default on its own, which
    # it does in a file with no -disposition at all.
    default = bool(info.video_stream and info.video_stream.default)
    args += ["-disposition:v:0", "default" if default else "0", *_track_titles(info)]
    if suffix in _MP4_LIKE:
        if info.vfr and info.time_base.numerator == 1:
            args += ["-video_track_timescale", str(info.time_base.denominator)]
        args += ["-movflags", "+faststart"]
    if encoding is not None:
        args += [*video_tag_args(suffix, encoding.encoder), *encoding.colour_args(":v:0")]
    return [*args, *_subtitle_args(info, suffix)]
