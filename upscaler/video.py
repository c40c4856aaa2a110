"""Upscale a video file frame by frame, keeping everything else about it.

`upscale_video` is the seam where the model pipeline plugs in: it decodes the source in
segments, passes each frame through `transform`, encodes the results and muxes them with the
source's audio, subtitles, attachments, chapters and metadata. The output appears only when it
is complete; the segment files stay in a work directory next to it until then.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from upscaler.errors import OutputExistsError, UsageError
from upscaler.media.probe import probe
from upscaler.media.segments import (
    VideoSettings,
    check_container,
    choose_encoding,
    encode_segments,
    join_and_mux,
    plan_segments,
    work_dir,
)
from upscaler.media.stage_times import StageTimes

__all__ = ["StageTimes", "VideoSettings", "upscale_video"]

Progress = Callable[[int, int], None]


def upscale_video(src: str | Path, dst: str | Path,
                  transform: Callable[[np.ndarray], np.ndarray],
                  settings: VideoSettings | None = None,
                  progress: Progress | None = None,
                  times: StageTimes | None = None) -> Path:
    """Write `dst`: the video of `src` with every frame passed through `transform`.

    transform: maps one decoded frame, (H, W, 3) RGB uint8 (uint16 for sources deeper than 8
      bits, full 16-bit scale), to the upscaled frame of the same dtype. It runs in this thread;
      decoding and encoding run alongside it in their own threads.
    progress: called as progress(frames_done, frames_total) after each frame.
    times: added to as the stages run: seconds each spent working and waiting (stage_times).
    Raises OutputExistsError when `dst` exists and settings.overwrite is off, MediaError for a
    source that cannot be read or an output that cannot be written.
    """
    settings = settings or VideoSettings()
    src, dst = Path(src), Path(dst)
    _check_output(src, dst, settings.overwrite)
    info = probe(src)
    check_container(info, dst)
    segments = plan_segments(info, settings.segment_seconds)
    container = dst.suffix.lower()
    encoding = choose_encoding(info, settings, container)
    work = work_dir(dst)
    work.mkdir(parents=True, exist_ok=True)
    done = 0

    def on_frame() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, info.frame_count)

    if progress is not None:
        progress(0, info.frame_count)
    files = encode_segments(info, segments, transform, settings,
                            [work / s.name for s in segments], container, on_frame, times)
    join_and_mux(info, segments, files, dst, encoding.encoder, settings.overwrite)
    shutil.rmtree(work, ignore_errors=True)
    return dst


def _check_output(src: Path, dst: Path, overwrite: bool) -> None:
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(f"{dst}: the output would replace the source")
    if dst.exists() and not overwrite:
        raise OutputExistsError("already exists (pass --overwrite to replace it)", dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
