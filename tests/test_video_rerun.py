"""A video job run again: which finished segments it keeps (only those made the same way),
where they wait (--work-dir), and a second run on the same output refused.

Split from test_video_resume.py (kills and signals on an 8-second clip), so that the two files
run on different test workers; these run the CLI in this process on a 2-second clip, with the
output's disk "full" (a link to /dev/full) so that a job stops after its last segment.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from clips import make_clip
from conftest import INSTANT_MODEL
from test_video_resume import SEGMENT, finished_segments

from upscaler.cli import main
from upscaler.job.resume import work_dir
from upscaler.media.video.probe import probe

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file locks and /dev/full are POSIX")

FAST = [*INSTANT_MODEL, "--quiet", *SEGMENT]


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s with audio: 48 frames in 4 segments of 12, small."""
    path = tmp_path_factory.mktemp("clips") / "short.mkv"
    return make_clip(path, size="32x18", seconds=2.0, audio=True)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """The CLI in this process (no signals needed): exit code and stderr lines."""
    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


def stop_at_mux(capsys: pytest.CaptureFixture[str], src: Path, out: Path, *extra: str) -> Path:
    """Run a job that finishes all its segments and then finds the disk full writing the
    output (ffmpeg's output is a link to /dev/full, where every write fails with ENOSPC);
    return its work folder."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    (out.parent / f".{out.stem}.partial{out.suffix}").symlink_to("/dev/full")
    code, err = run_cli(capsys, str(src), "-o", str(out), *FAST, *extra)
    assert code == 5, err
    under = extra[extra.index("--work-dir") + 1] if "--work-dir" in extra else None
    folder = work_dir(out, under)
    assert err == [f"upscale: error: disk full while writing {out}: 4 of 4 segments kept for "
                   f"resume in {folder}"]
    assert not out.exists()
    assert finished_segments(folder) == 4
    return folder


@pytest.mark.parametrize(("change", "expected"), [
    ([], ("resuming out.mkv: 4 of 4 segments done, only the output is left to write",
          "out.mkv: 0 frames upscaled, 48 reused from the earlier run")),
    (["--crf", "30"], ("out.mkv: 4 finished segments of an earlier run discarded (crf changed "
                       "since the earlier run); redoing them",
                       "out.mkv: 48 frames upscaled, 0 reused from the earlier run")),
    (["--tile", "64"], ("out.mkv: 4 finished segments of an earlier run discarded (tile "
                        "changed since the earlier run); redoing them",
                        "out.mkv: 48 frames upscaled, 0 reused from the earlier run")),
    (["--tta"], ("out.mkv: 4 finished segments of an earlier run discarded (tta changed "
                 "since the earlier run); redoing them",
                 "out.mkv: 48 frames upscaled, 0 reused from the earlier run")),
    (["--no-resume"], ("out.mkv: 4 finished segments of an earlier run discarded "
                       "(--no-resume); redoing them",
                       "out.mkv: 48 frames upscaled, 0 reused from the earlier run")),
    ("version", ("out.mkv: 4 finished segments of an earlier run discarded (upscaler version "
                 "changed since the earlier run); redoing them",
                 "out.mkv: 48 frames upscaled, 0 reused from the earlier run")),
    ("truncate", ("resuming out.mkv: 3 of 4 segments done, continuing at segment 2",
                  "out.mkv: 1 finished segment of an earlier run discarded (incomplete or "
                  "changed files); redoing it",
                  "out.mkv: 12 frames upscaled, 36 reused from the earlier run")),
])
def test_a_rerun_reuses_only_segments_made_the_same_way(
        short_clip: Path, tmp_path: Path, change: list[str] | str, expected: tuple[str, ...],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mkv"
    folder = stop_at_mux(capsys, short_clip, out)
    if change == "truncate":
        segment = folder / "segment-00001.nut"
        segment.write_bytes(segment.read_bytes()[:1000])
        change = []
    elif change == "version":  # segments an older upscaler made
        manifest = folder / "resume.json"
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data["fingerprint"]["transform"]["upscaler version"] = "0.1.0"
        manifest.write_text(json.dumps(data), encoding="utf-8")
        change = []
    code, err = run_cli(capsys, str(short_clip), "-o", str(out), *FAST, *change)
    assert code == 0, err
    assert sorted(err) == sorted(f"upscale: {e}" for e in expected)
    assert probe(out).frame_count == 48
    assert not folder.exists()


def test_work_dir_option_keeps_the_segments_there(short_clip: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mkv"
    scratch = tmp_path / "scratch"
    folder = stop_at_mux(capsys, short_clip, out, "--work-dir", str(scratch))
    assert folder.parent == scratch and folder.name.startswith("out.mkv-")
    assert not work_dir(out).exists()
    code, err = run_cli(capsys, str(short_clip), "-o", str(out), *FAST, "--work-dir",
                        str(scratch))
    assert code == 0, err
    assert "upscale: resuming out.mkv: 4 of 4 segments done, only the output is left to " \
        "write" in err
    assert probe(out).frame_count == 48
    assert list(scratch.iterdir()) == []


def test_names_ffmpeg_would_read_as_urls_are_files(short_clip: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """ffmpeg takes a path with a colon before any slash for a protocol ("S1:E1/ep.mkv":
    Protocol not found, after the checks), and the concat demuxer resolved the segments'
    names against their folder as a URL, where "?" or "#" began a query or a fragment: an
    output "Episode #1?.mkv" failed at its join on every run, its segments all made."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "S1:E1").mkdir()
    shutil.copy(short_clip, tmp_path / "S1:E1" / "ep.mkv")
    code, err = run_cli(capsys, "S1:E1/ep.mkv", "-o", "Episode #1?.mkv", *FAST)
    assert code == 0, err
    code, err = run_cli(capsys, "S1:E1/ep.mkv", "-o", "pipe:2.mkv", *FAST, "--work-dir", "w:k#")
    assert code == 0, err
    for name in ("Episode #1?.mkv", "pipe:2.mkv"):
        info = probe(tmp_path / name)
        assert info.frame_count == 48 and [s.kind for s in info.streams] == ["video", "audio"]


def test_a_second_run_on_the_same_output_is_refused(short_clip: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import fcntl

    out = tmp_path / "out.mkv"
    folder = work_dir(out)
    folder.mkdir()
    with open(folder / ".lock", "w") as held:  # what a running job holds
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main([str(short_clip), "-o", str(out), *FAST]) == 5
    assert capsys.readouterr().err == (f"upscale: error: {folder}: another upscale is working "
                                       "in this folder\n")
    assert not out.exists()


def test_a_resumed_job_does_not_decode_its_source_again(
        short_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoding scan (minutes for an episode) is kept in the work folder; a rerun of the
    same job on the same file takes it from there, a changed file is decoded again."""
    import upscaler.video as video

    out = tmp_path / "out.mkv"
    folder = stop_at_mux(capsys, short_clip, out)
    kept = json.loads((folder / video.SCAN_FILE).read_text(encoding="utf-8"))
    assert len(kept["scan"]["decoded_pts"]) == 48
    scans: list[Path] = []
    real_scan = video.scan
    monkeypatch.setattr(video, "scan", lambda info, watch=None: scans.append(info.path)
                        or real_scan(info, watch))
    video._SCANS.clear()  # as a new process would start
    code, err = run_cli(capsys, str(short_clip), "-o", str(out), *FAST)
    assert code == 0, err
    assert scans == [] and probe(out).frame_count == 48
    assert not folder.exists()

    moved = tmp_path / "moved.mkv"
    moved.write_bytes(short_clip.read_bytes())
    stop_at_mux(capsys, moved, out.with_name("two.mkv"))
    os.utime(moved, ns=(1, 1))  # another version of the file: its old scan is not used
    video._SCANS.clear()
    scans.clear()
    code, err = run_cli(capsys, str(moved), "-o", str(out.with_name("two.mkv")), *FAST)
    assert code == 0, err
    assert scans == [moved]
