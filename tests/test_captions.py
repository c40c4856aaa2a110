"""Closed captions (CEA-608 in the pictures' SEI or MPEG-2 user data, as US broadcasts and
DVDs carry them) live inside the video stream a job replaces: they come out as a subtitle stream
of their own. A caption track of its own (QuickTime's c608) goes into every format."""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from pathlib import Path

import pytest
from clips import add_caption_track, add_captions, make_clip
from conftest import INSTANT_MODEL

from upscaler.cli import main
from upscaler.media import ffmpeg
from upscaler.media.video import mux
from upscaler.media.video.probe import VideoInfo, probe
from upscaler.media.video.scan import from_json, parse, scan, to_json

FAST = [*INSTANT_MODEL, "--preset", "ultrafast", "--crf", "30"]
RATE = Fraction(24000, 1001)
SHOWN, ERASED = 8, 20  # frames
CUE = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+) --> (\d+):(\d+):(\d+)[,.](\d+)\n(.*)")


def cues(path: Path, stream: int) -> list[tuple[float, float, str]]:
    """(start, end, text) of subtitle stream `stream` (counted among subtitles), timed from
    the start of the file's video, without formatting."""
    text = ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(path),
                       "-map", f"0:s:{stream}", "-f", "srt", "-"], path)
    info = probe(path)
    video_start = info.seconds(info.frame_pts[0])
    found = []
    for m in CUE.finditer(text):
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(v) for v in m.groups()[:8])
        found.append((h1 * 3600 + m1 * 60 + s1 + ms1 / 1000 - video_start,
                      h2 * 3600 + m2 * 60 + s2 + ms2 / 1000 - video_start,
                      re.sub(r"<[^>]*>|\{[^}]*\}", "", m[9]).strip()))
    return found


def assert_the_caption(path: Path, stream: int) -> None:
    """Subtitle stream `stream` of `path` is the caption, on the frames it was sent with,
    timed against the output's own video."""
    [(start, end, text)] = cues(path, stream)
    assert text == "HELLO CC"
    assert start == pytest.approx(float(SHOWN / RATE), abs=0.002)
    assert end == pytest.approx(float(ERASED / RATE), abs=0.002)


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Video with audio, a subtitle stream of its own and closed captions."""
    work = tmp_path_factory.mktemp("captions")
    src = make_clip(work / "plain.mkv", audio=True, subtitles=True, seconds=0.9)  # 21 frames
    return add_captions(src, work / "captioned.mkv", "HELLO CC", SHOWN, ERASED)


@pytest.mark.parametrize(("name", "codec"), [("out.mkv", "ass"), ("out.mp4", "mov_text")])
def test_captions_come_out_as_a_subtitle_stream(captioned: Path, tmp_path: Path, name: str,
                                                codec: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "new folder" / name
    assert main([str(captioned), "-o", str(dst), *FAST]) == 0
    err = capsys.readouterr().err
    assert "closed captions in the video (CEA-608/708): carried as a subtitle stream" in err
    streams = [s for s in probe(dst).streams if s.kind == "subtitle"]
    # The source's own subtitles first, as they were (MP4 holds text as mov_text), then the
    # captions, named.
    assert [s.codec for s in streams] == ["subrip" if codec == "ass" else "mov_text", codec]
    # QuickTime reads a track's title back as its name.
    assert streams[1].tags.get("title", streams[1].tags.get("name")) == "Closed captions"
    assert [text for *_, text in cues(dst, 0)] == ["Hello", "World"]
    assert_the_caption(dst, 1)


def test_captions_of_a_broadcast_whose_name_a_filter_graph_would_split(
        captioned: Path, tmp_path: Path) -> None:
    """The captions are read through a filter graph, which gives quotes, colons, commas,
    brackets and the like meanings of their own: the name reaches it escaped. An MPEG-TS
    starts its clock at 1.4 s, its video a little after its audio: the captions keep to the
    video's frames all the same."""
    odd = tmp_path / "it's [ep 1], part=2; a:b \\c.ts"
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(captioned),
                "-map", "0:v", "-map", "0:a", "-c", "copy", str(odd)], odd)
    info = probe(odd)
    assert info.seconds(info.frame_pts[0]) - info.start_time > 0.01
    assert main([str(odd), "-o", str(tmp_path / "out.mkv"), *FAST, "--quiet"]) == 0
    assert_the_caption(tmp_path / "out.mkv", 0)


def test_the_scan_finds_captions_and_a_resumed_job_remembers_them(captioned: Path,
                                                                   tmp_path: Path) -> None:
    found = scan(probe(captioned))
    assert found.captions
    assert from_json(to_json(found)).captions  # the work folder's scan.json, for a resume
    assert not scan(probe(make_clip(tmp_path / "plain.mkv"))).captions
    # Older FFmpeg named the side data otherwise.
    line = ("[Parsed_showinfo_0 @ 0x1] [info]   side data - A/53 closed captions: "
            "(3 bytes)")
    assert parse(line, Fraction(1, 1000)).captions


def test_a_dvds_captions_in_mpeg2_come_out_too(captioned: Path, tmp_path: Path) -> None:
    """DVDs carry their captions in MPEG-2's picture user data, which FFmpeg decodes to the
    same side data."""
    vob = tmp_path / "VTS_01_1.VOB"
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(captioned),
                "-map", "0:v", "-map", "0:a", "-c:v", "mpeg2video", "-a53cc", "1", "-q:v", "4",
                "-c:a", "mp2", "-f", "vob", str(vob)], vob)
    out = tmp_path / "out.mkv"
    assert main([str(vob), "-o", str(out), *FAST, "--quiet"]) == 0
    assert_the_caption(out, 0)


def test_captions_that_cannot_be_taken_out_do_not_hold_the_video_back(
        captioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Hours of upscaling are not lost to the captions: where the mux cannot take them out
    (here, the movie filter pointed at a file that is not there), the output is written
    without them and a line says why."""
    real = mux._caption_input

    def broken(info: VideoInfo, offset: float) -> list[str]:
        return real(dataclasses.replace(info, path=tmp_path / "gone.mkv"), offset)

    monkeypatch.setattr(mux, "_caption_input", broken)
    out = tmp_path / "out.mkv"
    assert main([str(captioned), "-o", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "captioned.mkv: closed captions not carried: the mux could not take them out" in err
    assert [s.codec for s in probe(out).streams if s.kind == "subtitle"] == ["subrip"]
    assert [text for *_, text in cues(out, 0)] == ["Hello", "World"]


@pytest.fixture(scope="module")
def quicktime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A QuickTime file with a closed-caption track of its own (c608), as iTunes episodes and
    broadcast masters have: a stream that Matroska cannot hold as it is."""
    work = tmp_path_factory.mktemp("c608")
    src = make_clip(work / "plain.mkv", audio=True, seconds=0.9)
    return add_caption_track(src, work / "episode.mov", "HELLO CC", "00:00:00:10", "00:00:00:25")


@pytest.mark.parametrize(("name", "codec"), [("out.mkv", "ass"), ("out.mp4", "mov_text"),
                                             ("out.mov", "eia_608")])
def test_a_caption_track_goes_into_every_format(quicktime: Path, tmp_path: Path, name: str,
                                                codec: str) -> None:
    """Matroska takes it as ASS, MP4 as mov_text, MOV as it is (the job failed at the final
    mux into .mkv, after all the upscaling, and refused .mp4)."""
    out = tmp_path / name
    assert main([str(quicktime), "-o", str(out), *FAST, "--quiet"]) == 0
    assert [s.codec for s in probe(out).streams if s.kind == "subtitle"] == [codec]
    [(start, end, text)] = cues(out, 0)
    [(source_start, source_end, _)] = cues(quicktime, 0)
    assert text == "HELLO CC"
    assert (start, end) == pytest.approx((source_start, source_end), abs=0.002)


def test_a_full_disk_at_the_mux_is_not_taken_for_the_captions(
        captioned: Path, tmp_path: Path, logged_ffmpeg: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A mux that fails for a full disk is not run again without the captions (the whole
    mux once more, and an output without them should space turn up): the job stops with its
    segments kept, as any job does on a full disk."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    out = tmp_path / "out.mkv"
    (tmp_path / ".out.partial.mkv").symlink_to("/dev/full")  # every write: ENOSPC
    assert main([str(captioned), "-o", str(out), *FAST]) == 5
    err = capsys.readouterr().err
    assert f"disk full while writing {out}" in err and "captions not carried" not in err
    muxes = [run for run in logged_ffmpeg.read_text().splitlines() if "-f concat" in run]
    assert len(muxes) == 1 and "movie=" in muxes[0]
