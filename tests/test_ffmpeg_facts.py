"""What ffmpeg lists about itself is asked once per binary and kept in the user cache."""

import os
import stat
from pathlib import Path

import pytest

from upscaler.cli import main
from upscaler.media import ffmpeg
from upscaler.models.cache import CACHE_ENV

# Listings as ffmpeg prints them, cut down to a row each.
PIX_FMTS = """Pixel formats:
I.... = Supported Input  format for conversion
FLAGS NAME            NB_COMPONENTS BITS_PER_PIXEL BIT_DEPTHS
-----
IO... yuv420p                3             12      8-8-8
IO... yuv420p10le            3             15      10-10-10
"""
ENCODERS = """Encoders:
 V..... = Video
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    yield tmp_path / "cache"
    for query in (ffmpeg.pix_fmts, ffmpeg.encoders, ffmpeg.encoder_pix_fmts):
        query.cache_clear()  # the next test's binary is another


@pytest.fixture
def counting_ffmpeg(tmp_path: Path) -> Path:
    """A stand-in binary that answers -pix_fmts and -encoders and counts how often it ran."""
    exe = tmp_path / "bin" / "ffmpeg"
    exe.parent.mkdir()
    exe.write_text(f"""#!/bin/sh
echo "$*" >> "{tmp_path / 'runs'}"
case "$*" in
  *-pix_fmts*) cat <<'X'
{PIX_FMTS}X
  ;;
  *) cat <<'X'
{ENCODERS}X
  ;;
esac
""")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs"
    return path.read_text().splitlines() if path.exists() else []


def asked_anew(query, *args):  # type: ignore[no-untyped-def]
    query.cache_clear()  # as a new process starts
    return query(*args)


def test_a_new_process_asks_a_binary_once(cache: Path, counting_ffmpeg: Path,
                                          tmp_path: Path) -> None:
    exe = str(counting_ffmpeg)
    first = asked_anew(ffmpeg.pix_fmts, exe)
    assert first == {"yuv420p": ffmpeg.PixFmt(3, 8), "yuv420p10le": ffmpeg.PixFmt(3, 10)}
    assert asked_anew(ffmpeg.pix_fmts, exe) == first
    assert asked_anew(ffmpeg.encoders, exe) == frozenset({"libx264"})
    assert asked_anew(ffmpeg.encoders, exe) == frozenset({"libx264"})
    assert runs(tmp_path) == ["-hide_banner -pix_fmts", "-hide_banner -encoders"]

    # An upgraded binary in the same place is asked again.
    os.utime(counting_ffmpeg, ns=(0, counting_ffmpeg.stat().st_mtime_ns + 10**9))
    assert asked_anew(ffmpeg.pix_fmts, exe) == first
    assert len(runs(tmp_path)) == 3


@pytest.mark.parametrize("damage", ["torn", "not a folder"])
def test_a_damaged_cache_is_asked_around(cache: Path, counting_ffmpeg: Path, tmp_path: Path,
                                         damage: str) -> None:
    exe = str(counting_ffmpeg)
    asked_anew(ffmpeg.pix_fmts, exe)
    (kept,) = (cache / "ffmpeg").iterdir()
    if damage == "torn":
        kept.write_text('{"pix_fmts": {"yuv4')
    else:
        (cache / "ffmpeg").rename(cache / "elsewhere")
        (cache / "ffmpeg").write_text("a file where the folder was")
    assert len(asked_anew(ffmpeg.pix_fmts, exe)) == 2
    assert len(asked_anew(ffmpeg.pix_fmts, exe)) == 2
    assert len(runs(tmp_path)) == (2 if damage == "torn" else 3)  # mended, or nowhere to keep it


def test_the_real_binarys_answers_are_kept_as_given(cache: Path) -> None:
    exe = ffmpeg.ffmpeg_exe()
    fresh = (asked_anew(ffmpeg.pix_fmts, exe), asked_anew(ffmpeg.encoders, exe),
             asked_anew(ffmpeg.encoder_pix_fmts, exe, "libx264"))
    assert (cache / "ffmpeg").is_dir()
    kept = (asked_anew(ffmpeg.pix_fmts, exe), asked_anew(ffmpeg.encoders, exe),
            asked_anew(ffmpeg.encoder_pix_fmts, exe, "libx264"))
    assert kept == fresh
    assert fresh[1] >= {"libx264", "rawvideo"} and "yuv420p" in fresh[2]


def test_clearing_the_cache_counts_built_models_only(cache: Path, counting_ffmpeg: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    asked_anew(ffmpeg.pix_fmts, str(counting_ffmpeg))
    (cache / "realesr-animevideov3-fp32-dyn-0123456789ab-v0.2.9.onnx").write_bytes(b"built")
    assert main(["models", "--clear-cache"]) == 0
    assert capsys.readouterr().out == f"removed 1 built model(s) from {cache}\n"
    assert list(cache.iterdir()) == []


def test_an_encoders_trial_that_passed_is_not_run_again(
        cache: Path, logged_ffmpeg: Path, tmp_path: Path) -> None:
    from clips import make_clip

    from upscaler.errors import UsageError
    from upscaler.job.preflight import _trial
    from upscaler.media.video.encoding import VideoSettings
    from upscaler.video import check_video_job

    clip = make_clip(tmp_path / "ep.mkv", seconds=0.25)

    def trials_in_a_new_process(settings: VideoSettings) -> list[str]:
        _trial.cache_clear()
        (tmp_path / "runs").unlink(missing_ok=True)
        try:
            check_video_job(clip, tmp_path / "out.mkv", settings)
        finally:
            tried = [run for run in runs(tmp_path) if "upscaler-trial-" in run]
        return tried

    good = VideoSettings(preset="veryfast")
    assert len(trials_in_a_new_process(good)) == 2  # the frame encoded, then muxed
    assert trials_in_a_new_process(good) == []
    bad = VideoSettings(preset="superduper")
    with pytest.raises(UsageError, match="superduper"):
        trials_in_a_new_process(bad)
    # A failure is tried again, for its reason; the trial without the preset that found the
    # option at fault passed the first time, and is remembered.
    with pytest.raises(UsageError, match="superduper"):
        trials_in_a_new_process(bad)
    assert [run.split()[-1].endswith("trial.nut") for run in runs(tmp_path)] == [True]
