"""Upscale a video file frame by frame, keeping everything else about it.

`upscale_video` is the seam where the model pipeline plugs in: it decodes the source in
segments, passes each frame through `transform`, encodes the results and muxes them with the
source's audio, subtitles, attachments, chapters and metadata. The output appears only when it
is complete. Until then the finished segments wait in a work folder (job/resume.py), so that
a job stopped by anything, and run again the same way, goes on from where it was.

`check_video_job` checks everything about a job that can be known before any work, so that a
batch can check all of its jobs first.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from upscaler.errors import (
    DiskFilledError,
    DiskFullError,
    Interrupted,
    MediaError,
    OutputExistsError,
    SourceChangedError,
    UpscalerError,
    UsageError,
    ran_out,
)
from upscaler.job.preflight import check_encoding
from upscaler.job.resume import OutputLock, Resumed, WorkFolder, work_dir
from upscaler.job.space import check_space, is_disk_full
from upscaler.media.video.damage import accept, find_damage
from upscaler.media.video.encoding import (
    ALPHA_DEFAULTS,
    ALPHA_ENCODERS,
    HDR10_ENCODERS,
    VideoSettings,
    keeps_alpha,
)
from upscaler.media.video.interlace import decide, takes_fieldmatch
from upscaler.media.video.mux import (
    carries_captions,
    check_container,
    cut_cue_notes,
    join_and_mux,
)
from upscaler.media.video.probe import StreamInfo, VideoInfo, probe
from upscaler.media.video.scan import Scan, Watch, from_json, scan, to_json
from upscaler.media.video.segments import (
    PARTIAL,
    Segment,
    encode_segments,
    plan_segments,
    segment_suffix,
)
from upscaler.media.video.stage_times import StageTimes
from upscaler.media.video.writer import Encoding

__all__ = ["StageTimes", "VideoSettings", "check_source", "check_video_job", "upscale_video",
           "work_dir"]

Progress = Callable[[int, int], None]
# Makes the segments a job has left: (source, segments, their files, the output's container,
# on_frames(n) as frames are upscaled, on_segment(segment, file) once each file is complete).
SegmentEncoder = Callable[[VideoInfo, Sequence[Segment], Sequence[Path], str,
                           Callable[[int], None], Callable[[Segment, Path], None]], None]
log = logging.getLogger(__name__)


def check_video_job(src: str | Path, dst: str | Path,
                    settings: VideoSettings | None = None) -> None:
    """Raise now what a video job would otherwise fail on after hours of work.

    The output is not a folder; the source can be read; the encoder exists here and takes the
    pixel format, preset, CRF and the output's container (tried on one frame); the output's
    format can hold the source's other streams. UsageError (exit 2) for a bad option or
    output, MediaError (exit 5) for a source or container problem. Probes and trials are
    cached, so checking a batch up front and each job again when it runs costs once.
    The source is probed, not decoded: the decoding pass that finds damage and interlacing
    (scan.py, minutes for an episode) runs when the job starts, before its first frame, so
    that a season's batch does not decode every episode before upscaling the first.
    """
    settings = settings or VideoSettings()
    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        raise UsageError("is a folder; give the output file's name (e.g. -o out/name.mkv)", dst)
    info = _probe(src)
    check_encoding(info, settings, dst)
    check_container(info, dst)


def check_source(src: str | Path, dst: str | Path, settings: VideoSettings | None = None,
                 watch: Watch | None = None) -> None:
    """Decode `src` once (scan.py; cached, so the job does not decode it again, and kept in
    the job's work folder for a resumed run) and raise MediaError now for damage the job would
    refuse: what a job runs before its model loads. `watch` hears how far the decoding has
    come (scan.Watch), where it is not already known."""
    _source(Path(src), Path(dst), settings or VideoSettings(), watch)


def upscale_video(src: str | Path, dst: str | Path,
                  transform: Callable[[np.ndarray], np.ndarray] | None,
                  settings: VideoSettings | None = None,
                  progress: Progress | None = None, *,
                  identity: Mapping[str, str] | None = None,
                  scale: float | None = None,
                  on_segment_start: Callable[[Segment], None] | None = None,
                  times: StageTimes | None = None,
                  encode: SegmentEncoder | None = None,
                  watch: Watch | None = None) -> Path:
    """Write `dst`: the video of `src` with every frame passed through `transform`.

    transform: maps one decoded frame, (H, W, 3) RGB uint8 (uint16 for sources deeper than 8
      bits, full 16-bit scale; (H, W, 4) RGBA where the output keeps the source's alpha), to
      the upscaled frame of the same dtype and channels. It runs in a thread of its own, beside
      the decoding and encoding threads.
    progress: called as progress(frames_done, frames_total) after each frame, from that
      thread; a resumed job starts at the frames it reuses.
    identity: what makes `transform` what it is (model, executor, precision, tile...), as
      strings. Segments an earlier run of the job finished are reused only when it, the source
      file and the encoder settings are unchanged; None never reuses any.
    scale: how much larger `transform` makes frames, for the disk space check before the
      work; None skips that check.
    on_segment_start: called with each segment before its first frame goes to `transform`, in
      its thread; a transform that remembers earlier frames resets there, so that a segment
      comes out the same whether it follows the one before, is redone on resume, or runs
      alone on another worker.
    times: added to as the stages run: seconds each spent working and waiting (stage_times).
    encode: makes the segments left to do in place of `encode_segments` with `transform` in
      this process (which is then unused): the Ray runner's, which makes them on a cluster.
      Everything else (resume, the manifest, the join and mux) stays here.
    watch: hears how far the steps before the first frame have come (the source's decoding
      pass where check_source has not run it, the disk space trial), as scan.Watch.
    Raises OutputExistsError when `dst` exists and settings.overwrite is off, UsageError or
    MediaError from `check_video_job`, DiskFullError when the job does not fit or a write
    finds the disk full, and Interrupted on Ctrl-C or SIGTERM. After any failure the finished
    segments stay in the work folder, which the error names.
    """
    if transform is None and encode is None:
        raise ValueError("upscale_video needs a transform or an encode")
    settings = settings or VideoSettings()
    src, dst = Path(src), Path(dst)
    check_video_job(src, dst, settings)
    _check_output(src, dst, settings.overwrite)
    info, notes = _source(src, dst, settings, watch)
    container = dst.suffix.lower()
    encoding = check_encoding(info, settings, dst)
    for note in [*notes, *_alpha_notes(info, settings, encoding, container),
                 *_hdr_notes(info, encoding.encoder)]:
        log.warning(f"{src.name}: {note}")
    segments = plan_segments(info, settings.segment_seconds, segment_suffix(encoding))
    fingerprint = _fingerprint(src, info, settings, encoding, container, identity)
    with OutputLock(dst), WorkFolder(work_dir(dst, settings.work_dir), fingerprint) as folder:
        upscaled = 0
        done = 0

        def on_frames(count: int = 1) -> None:
            nonlocal upscaled
            upscaled += count
            if progress is not None:
                progress(done + upscaled, info.frame_count)

        try:
            resumed = folder.start(segments, settings.resume and identity is not None)
            # After start(), which clears the folder of everything but its segments.
            _keep_scan(folder.path, src, _scan_of(src, dst, settings))
            _report_start(dst, resumed, segments, settings.resume)
            reused = {s.index for s in resumed.reused}
            todo = [s for s in segments if s.index not in reused]
            done = sum(s.count for s in resumed.reused)
            if scale is not None:
                width, height = info.display_size
                out_size = (max(1, round(width * scale)), max(1, round(height * scale)))
                check_space(info, encoding, settings.crf, segments, todo, out_size,
                            folder.path, dst, watch)
            if progress is not None:
                progress(done, info.frame_count)
            paths = [folder.path_of(s) for s in todo]
            if encode is not None:
                encode(info, todo, paths, container, on_frames, folder.finished)
            elif transform is not None:
                encode_segments(info, todo, transform, settings, paths, container, on_frames,
                                folder.finished, on_segment_start, times)
            _check_unchanged(src, fingerprint["source"])
            _mux(info, segments, [folder.path_of(s) for s in segments], dst, encoding,
                 settings.overwrite)
        except BaseException as e:
            explained = _explain(e, folder, len(segments), dst)
            if explained is e:
                raise
            raise explained from e
        if resumed.reused or resumed.discarded:
            log.info(f"{dst.name}: {upscaled} frames upscaled, {done} reused from the "
                     "earlier run")
        folder.remove()
    return dst


def _check_unchanged(src: Path, began: Mapping[str, int]) -> None:
    """SourceChangedError where `src` is no longer the file the job began with (`began`: its
    size and modification time then): the mux takes the sound, subtitles and chapters from the
    file as it is now, and its segments may hold the pictures of both."""
    try:
        stat = src.stat()
    except OSError as e:
        raise SourceChangedError("was removed while it was upscaled; no output written",
                                 src) from e
    if (stat.st_size, stat.st_mtime_ns) != (began["size"], began["mtime_ns"]):
        raise SourceChangedError("changed while it was upscaled (its size or time is not what it "
                                 "was when the job began): no output written, since its sound "
                                 "would come from the new file; the same command upscales it "
                                 "as it is now", src)


def _mux(info: VideoInfo, segments: list[Segment], files: list[Path], dst: Path,
         encoding: Encoding, overwrite: bool) -> None:
    """join_and_mux, and where taking the closed captions out is what fails, the output
    without them: the upscaled video is not held back for its captions. A full disk is not
    the captions' failure: the job stops with its segments kept, as on any full disk."""
    try:
        join_and_mux(info, segments, files, dst, encoding, overwrite)
    except MediaError as e:
        if not info.captions or is_disk_full(e):
            raise
        join_and_mux(dataclasses.replace(info, captions=False), segments, files, dst, encoding,
                     overwrite)
        log.warning(f"{info.path.name}: closed captions not carried: the mux could not take "
                    f"them out ({e.message})")


@functools.lru_cache(maxsize=16)
def _probe_file(path: Path, size: int, mtime_ns: int) -> VideoInfo:
    return probe(path)


def _probe(src: Path) -> VideoInfo:
    """probe(), once per version of a file: a batch checks every job before running it."""
    try:
        stat = src.stat()
    except OSError:
        return probe(src)  # which says what is wrong with it
    return _probe_file(src, stat.st_size, stat.st_mtime_ns)


SCAN_FILE = "scan.json"  # in a job's work folder: the source's scan, for a resumed run


def _scan_of(src: Path, dst: Path, settings: VideoSettings, watch: Watch | None = None
             ) -> Scan:
    stat = src.stat()
    kept = work_dir(dst, settings.work_dir) / SCAN_FILE
    key = (src, stat.st_size, stat.st_mtime_ns, kept)
    found = _SCANS.get(key)
    if found is None:
        found = _scan_file(*key, watch)
        while len(_SCANS) >= _SCANS_KEPT:
            del _SCANS[next(iter(_SCANS))]
        _SCANS[key] = found
    return found


# Scans made or read by this process, by file version and work folder: the check before the
# model loads and the job itself read one scan, not two.
_SCANS: dict[tuple[Path, int, int, Path], Scan] = {}
_SCANS_KEPT = 16


def _scan_file(path: Path, size: int, mtime_ns: int, kept: Path, watch: Watch | None) -> Scan:
    """The scan an earlier run of the job kept for this version of the file (an episode's is
    minutes of decoding), else a new one."""
    try:
        data = json.loads(kept.read_text(encoding="utf-8"))
        if data["source"] == _scanned(path, size, mtime_ns):
            return from_json(data["scan"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none kept, or another file's or version's: decoded again
    return scan(_probe_file(path, size, mtime_ns), watch)


def _scanned(path: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    return {"path": str(path.resolve()), "size": size, "mtime_ns": mtime_ns}


def _keep_scan(folder: Path, src: Path, found: Scan) -> None:
    """Write the scan into the work folder (renamed into place), for a resumed run."""
    stat = src.stat()
    data = {"source": _scanned(src, stat.st_size, stat.st_mtime_ns), "scan": to_json(found)}
    tmp = folder / f".{SCAN_FILE}.tmp"
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(folder / SCAN_FILE)
    except OSError as e:
        raise MediaError(f"cannot write to the work folder: {e.strerror or e}", folder) from e


def _source(src: Path, dst: Path, settings: VideoSettings, watch: Watch | None = None
            ) -> tuple[VideoInfo, list[str]]:
    """The source as the job reads it, and what the user must hear about it.

    Decoded once (media/video/scan.py, cached per file version): a damaged source raises MediaError
    unless settings.accept_damage, which then takes the frames that decode; an interlaced
    one gets its deinterlacing filter; HDR10 metadata is attached for the encoder.
    """
    info = _probe(src)
    found = _scan_of(src, dst, settings, watch)
    notes = []
    damage = find_damage(info, found)
    if damage and not settings.accept_damage:
        raise MediaError(f"damaged video: {damage.describe()}; nothing written "
                         "(--accept-damage upscales what decodes)", src)
    if damage or tuple(sorted(found.decoded_pts)) != info.frame_pts:
        # Also whole sources can decode to fewer frames than they hold packets (an MP4 edit
        # list that starts the video later): the frames that come out are the video.
        info = accept(info, found)
    if damage:
        # describe() counts the missing frames and the errors itself.
        kept = "upscaling what decodes" if damage.missing else "no frame lost"
        notes.append(f"damaged video accepted, {kept}: {damage.describe()}")
    elif damage.before_start:
        late = info.seconds(info.frame_pts[0]) - info.start_time
        notes.append("starts between keyframes (a recording begun mid-stream?): the pictures "
                     "before its first keyframe cannot be decoded, by any player, and are left "
                     f"out; the picture starts {late:.3f} s into the file, in step with the "
                     "other streams as there")
    way = decide(found, settings.deinterlace, info.frame_rate,
                 matchable=takes_fieldmatch(info.pix_fmt, info.alpha))
    order = "top field first" if way.order == "tff" else "bottom field first"
    # A filter forced on a progressive source: said so, not called interlaced.
    head = f"interlaced ({order}; {way.why})" if way.interlaced else f"{way.why} ({order})"
    if way.filter and way.filter.startswith("fieldmatch"):
        # ffmpeg's fieldmatch takes 8-bit pictures alone: a deeper one is converted for it.
        depth = (f"; fieldmatch works in 8 bits, so the source's {info.bit_depth} bits are "
                 "rounded to 8" if info.bit_depth > 8 else "")
        notes.append(f"{head}: fields paired into whole frames with "
                     "fieldmatch (bwdif for any left combed), one frame per frame; output is "
                     "progressive at the source's frame rate (--deinterlace off keeps the "
                     f"fields, bwdif deinterlaces instead){depth}")
    elif way.filter:
        name = way.filter.split("=", 1)[0]
        notes.append(f"{head}: deinterlaced with {name}, one frame per"
                     " frame; output is progressive (--deinterlace off keeps the fields)")
    elif way.interlaced:
        notes.append(f"interlaced ({order}; {way.why}) but --deinterlace off: the fields go "
                     "through the model woven")
    elif "flagged interlaced" in way.why or "not woven" in way.why:
        notes.append(f"{way.why}: not deinterlaced (--deinterlace bwdif forces it)")
    notes += _stream_notes(info) + cut_cue_notes(info, dst)
    if len(found.sizes) > 1:
        # ffmpeg scales every later frame to the size the decoder's filters were set up with.
        (_, width, height), changes = found.sizes[0], found.sizes[1:]
        shown = ", ".join(f"{w}x{h} from {t:.3f} s" for t, w, h in changes[:3])
        more = f" and {len(changes) - 3} more changes" if len(changes) > 3 else ""
        notes.append(f"the picture size changes mid-stream ({width}x{height}, then {shown}"
                     f"{more}): later pictures are scaled to {width}x{height} before the model"
                     " (right where only the pixels' shape differs, as between ISDB's 1440x1080"
                     " and 1920x1080; a picture of another shape is stretched)")
    captions = found.captions and carries_captions()
    if captions:
        notes.append("closed captions in the video (CEA-608/708): carried as a subtitle stream "
                     "of their own")
    elif found.captions:
        notes.append("closed captions in the video (CEA-608/708) are not carried: this ffmpeg "
                     "lacks the movie filter or the cc_dec decoder that take them out")
    return dataclasses.replace(info, deinterlace=way.filter, hdr=found.hdr,
                               damaged=bool(damage), captions=captions), notes


def _stream_notes(info: VideoInfo) -> list[str]:
    """A line for the source's pictures that are not upscaled but kept as they were."""
    others = [s for s in info.streams if s.kind == "video" and s.index != info.video_index]
    if not others:
        return []

    def name(s: StreamInfo) -> str:
        size = f" {s.size[0]}x{s.size[1]}" if s.size else ""
        return f"#{s.index} {s.codec}{size}"

    videos = [name(s) for s in others if not s.attached_pic]
    covers = [name(s) for s in others if s.attached_pic]
    parts = []
    if videos:
        parts.append(f"{len(videos)} other video stream{'s' if len(videos) > 1 else ''} "
                     f"({', '.join(videos)})")
    if covers:
        parts.append(f"cover art ({', '.join(covers)})")
    return [f"{' and '.join(parts)} kept as they were, not upscaled"]


def _alpha_notes(info: VideoInfo, settings: VideoSettings, encoding: Encoding,
                 container: str) -> list[str]:
    """What happens to a source's alpha channel: kept, or why not."""
    if not info.alpha:
        return []
    if keeps_alpha(encoding):
        return [f"alpha channel kept: upscaled by the model beside the colours, written as "
                f"{encoding.encoder} {encoding.pix_fmt}"]
    keeping = ", ".join(ALPHA_DEFAULTS)
    if settings.codec and encoding.encoder not in ALPHA_ENCODERS:
        why = f"--codec {settings.codec} has none (without --codec, {keeping} keep it)"
    elif settings.pix_fmt:
        why = f"--pix-fmt {settings.pix_fmt} has none"
    elif container not in ALPHA_DEFAULTS:
        why = f"no {container} codec here keeps it ({keeping} do)"
    else:
        why = f"this ffmpeg has no {ALPHA_DEFAULTS[container]} encoder"
    return [f"the source's alpha channel ({info.pix_fmt}) is not kept: {why}; the video is "
            "written opaque"]


def _hdr_notes(info: VideoInfo, encoder: str) -> list[str]:
    """What happens to HDR: HDR10 metadata carried or named as lost; HLG and Dolby Vision."""
    notes = []
    hdr = info.hdr
    if hdr.mastering or hdr.light:
        what = " and ".join(w for w, v in (("mastering display", hdr.mastering),
                                            ("content light level", hdr.light)) if v)
        if encoder in HDR10_ENCODERS:
            notes.append(f"HDR10 {what} metadata carried to the output by {encoder}")
        else:
            notes.append(f"HDR10 {what} metadata lost: {encoder} cannot write it (--codec "
                         f"{' or '.join(HDR10_ENCODERS)} keeps it)")
    if hdr.dynamic:
        notes.append("HDR10+ dynamic metadata dropped: no encoder here takes it from frames "
                     "(the static HDR10 metadata is handled as said)")
    if info.color_transfer == "arib-std-b67":
        notes.append("HLG video: upscaled as HLG and tagged so (not converted)")
    if hdr.dolby_vision:
        notes.append("Dolby Vision metadata dropped: the output is the base layer, tagged "
                     f"{info.color_primaries or 'untagged'}/{info.color_transfer or 'untagged'}"
                     " (a profile 5 source, which has no such base, shows wrong colours)")
    return notes


def _check_output(src: Path, dst: Path, overwrite: bool) -> None:
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(f"{dst}: the output would replace the source")
    if dst.exists() and not overwrite:
        raise OutputExistsError("already exists (pass --overwrite to replace it)", dst)
    dst.parent.mkdir(parents=True, exist_ok=True)


def _fingerprint(src: Path, info: VideoInfo, settings: VideoSettings, encoding: Encoding,
                 container: str, identity: Mapping[str, str] | None) -> dict[str, Any]:
    """What a segment's content depends on; a finished segment is reused only when it matches.

    The source by size and modification time (a hash would read the whole file again), the
    transform by the identity its caller gives, the encoder by its settings and colour tags,
    and the segment plan by its length (the frames of each segment are checked one by one).
    """
    stat = src.stat()
    return {
        "source": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "transform": dict(identity or {}),
        "encoding": {"encoder": encoding.encoder, "pix_fmt": encoding.pix_fmt,
                     "crf": settings.crf, "preset": settings.preset,
                     "matrix": encoding.matrix, "range": encoding.range,
                     "primaries": encoding.primaries, "transfer": encoding.transfer,
                     "display_aspect": str(encoding.display_aspect)},
        "deinterlace": info.deinterlace,
        "frames": info.frame_count,
        "container": container,
        "segment_seconds": settings.segment_seconds,
    }


def _report_start(dst: Path, resumed: Resumed, segments: Sequence[Segment],
                  resume: bool) -> None:
    if resumed.reused:
        left = [s for s in segments if s not in resumed.reused]
        where = (f"continuing at segment {left[0].index + 1}" if left
                 else "only the output is left to write")
        log.info(f"resuming {dst.name}: {len(resumed.reused)} of {len(segments)} segments "
                 f"done, {where}")
    if not resumed.discarded:
        return
    if not resume:
        why = "--no-resume"
    elif resumed.changed:
        why = f"{', '.join(resumed.changed)} changed since the earlier run"
    else:
        why = "incomplete or changed files"
    one = resumed.discarded == 1
    log.info(f"{dst.name}: {resumed.discarded} finished segment{'' if one else 's'} of an "
             f"earlier run discarded ({why}); redoing {'it' if one else 'them'}")


def _explain(error: BaseException, folder: WorkFolder, total: int,
             dst: Path) -> BaseException:
    """The error to raise for a job that stopped: it says what was kept, and where."""
    if isinstance(error, SourceChangedError):
        folder.remove()  # pictures of a file that is no more: no run could use them
        return error
    kept = folder.finished_count
    if kept == 0:
        folder.remove()  # nothing worth keeping: leave no folder behind
    where = (f"{kept} of {total} segments kept in {folder.path}" if kept
             else "no segment was finished")
    if isinstance(error, KeyboardInterrupt):
        resume = "; run the same command again to resume (--no-resume starts over)"
        return Interrupted(f"interrupted: {where}{resume if kept else ''}",
                           getattr(error, "exit_code", 130))
    if is_disk_full(error) and not isinstance(error, DiskFullError):
        kept_note = f": {kept} of {total} segments kept for resume in {folder.path}"
        return DiskFilledError(f"disk full while writing {_written_file(error, dst)}"
                             f"{kept_note if kept else ''}")
    # Our buffers around the model (the reader's frames, the writer's Y'CbCr planes): one line
    # and exit 4, as for the model's own, instead of a traceback.
    error = ran_out(error, dst) or error
    if isinstance(error, OutputExistsError) and kept:
        # The same command would skip the output that is there now, and the segments with it.
        error.message += (f" ({where}; move that file away, or add --overwrite, and run the "
                          "same command again to finish)")
    elif isinstance(error, UpscalerError) and kept:
        error.message += f" ({where}; run the same command again to resume)"
    return error


def _written_file(error: BaseException, dst: Path) -> Path:
    """The file a failed write was for, under the name it was to have."""
    name = getattr(error, "path", None) or getattr(error, "filename", None) or dst
    path = Path(name)
    return path.with_name(re.sub(rf"\.\d+\{PARTIAL}", "", path.name))
