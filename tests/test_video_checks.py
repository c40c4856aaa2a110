"""Video settings that cannot work are refused before any work, with the option named."""

from __future__ import annotations

from pathlib import Path

import pytest
from clips import make_clip, packet_checksums

from upscaler.cli import main
from upscaler.errors import UsageError
from upscaler.job.preflight import _trial
from upscaler.media import ffmpeg
from upscaler.media.video.encoding import VideoSettings
from upscaler.video import check_video_job

FAST = ["--model", "realesr-animevideov3", "--quiet"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "ep.mkv", seconds=0.5)


@pytest.mark.parametrize(("output", "args", "message"), [
    ("out.mkv", ["--pix-fmt", "yuv999p"],
     "--pix-fmt yuv999p: libx264 does not accept it; it takes yuv420p, "),
    ("out.mkv", ["--preset", "superduper"],
     "--preset superduper: libx264 does not accept it (Error setting preset"),
    ("out.mkv", ["--codec", "libx265", "--preset", "superduper"],
     "--preset superduper: libx265 does not accept it"),
    ("out.webm", ["--codec", "libx264"],
     "--codec libx264: a .webm file cannot hold libx264 video; write .mkv, .mp4, .m4v, .mov "
     "instead"),
    ("out.mp4", ["--codec", "prores_ks"],
     "--codec prores_ks: a .mp4 file cannot hold prores_ks video; write .mkv, .mov instead"),
    ("out.mkv", ["--codec", "nosuch"],
     "--codec nosuch: this ffmpeg has no encoder named 'nosuch'"),
    ("out.mkv", ["--codec", "libx265", "--crf", "60"],
     "--crf 60: libx265 does not accept it"),
    # x264 encodes a rate factor past its top at the top, without a word: it was written so.
    ("out.mkv", ["--crf", "60"], "--crf 60: libx264 takes 0-51 (it would encode at 51 instead)"),
    ("folder.mkv", [], "is a folder; give "),
])
def test_bad_video_settings_fail_before_any_work(clip: Path, tmp_path: Path, output: str,
                                                 args: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "folder.mkv").mkdir()
    dst = tmp_path / output
    assert main([str(clip), "-o", str(dst), *FAST, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"upscale: error: {dst}: {message}"), err
    assert err.count("\n") == 1
    # Neither the output nor a work folder was made.
    assert [p.name for p in tmp_path.iterdir()] == ["folder.mkv"]
    assert list((tmp_path / "folder.mkv").iterdir()) == []


def test_check_video_job_caches_trials_for_a_batch(clip: Path, tmp_path: Path) -> None:
    settings = VideoSettings(preset="veryfast", crf=20)
    check_video_job(clip, tmp_path / "a.mkv", settings)
    before = _trial.cache_info()
    other = make_clip(tmp_path / "other.mkv", seconds=0.3, tags=())
    check_video_job(other, tmp_path / "b.mkv", settings)
    after = _trial.cache_info()
    assert (after.misses, after.hits) == (before.misses, before.hits + 1)
    with pytest.raises(UsageError, match="yuv999p"):
        check_video_job(clip, tmp_path / "c.mkv", VideoSettings(pix_fmt="yuv999p"))
    (tmp_path / "d.mkv").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        check_video_job(clip, tmp_path / "d.mkv", settings)


@pytest.fixture(scope="module")
def ttml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MP4 with a TTML subtitle track (stpp), as streaming services deliver subtitles:
    no decoder here reads it, MP4 and MOV hold it, Matroska cannot."""
    work = tmp_path_factory.mktemp("ttml")
    src = make_clip(work / "plain.mkv", subtitles=True)
    out = work / "stream.mp4"
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(src), "-map", "0",
                "-c:v", "copy", "-c:s", "ttml", "-time_base:s", "1:1000", str(out)], out)
    return out


def test_a_stream_the_output_format_cannot_hold_is_refused_before_any_work(
        ttml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ffmpeg is asked up front, with the streams themselves: the job failed at the final mux
    before, after all the upscaling."""
    out = tmp_path / "out.mkv"
    assert main([str(ttml), "-o", str(out), *FAST]) == 5
    err = capsys.readouterr().err
    assert ("out.mkv: .mkv cannot hold the other streams of stream.mp4 (Subtitle codec ttml "
            in err and "is not supported); write .mp4 or .mov instead" in err), err
    assert list(tmp_path.iterdir()) == []  # nothing written, no work folder
    # Where it fits, the track is copied as it was.
    out = tmp_path / "out.mp4"
    assert main([str(ttml), "-o", str(out), *FAST]) == 0
    assert packet_checksums(out, "s:0") == packet_checksums(ttml, "s:0")
