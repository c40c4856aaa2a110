"""A video job that stops (SIGKILL, Ctrl-C, SIGTERM, a full disk) and runs again goes on from
its last finished segment, and its output is the same as an uninterrupted run's.

The CLI runs as a subprocess on real clips with the real model and ffmpeg: the kills and
signals are real, and so is every full disk (a tmpfs mounted by the test, where it may mount
one, or ffmpeg writing to /dev/full).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from clips import make_clip, packet_checksums
from conftest import psnr

from upscaler.cli import main
from upscaler.job.resume import MANIFEST, work_dir
from upscaler.media import ffmpeg
from upscaler.media.video.probe import probe

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")

SEGMENT = ["--segment-seconds", "0.5"]  # 12 frames at 23.976 fps
SEGMENTS = 8  # of the 4-second clip
FAST = ["--model", "realesr-animevideov3", "--quiet", *SEGMENT]
RESUMING = re.compile(r"resuming (\S+): (\d+) of (\d+) segments done, continuing at segment (\d+)")
WORK_DONE = re.compile(r"(\S+): (\d+) frames upscaled, (\d+) reused from the earlier run")


def upscale(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upscaler", *args], cwd=cwd, text=True,
                          capture_output=True, check=False, timeout=300)


def start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "upscaler", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished_segments(work: Path) -> int:
    return len(finished_indices(work))


def finished_indices(work: Path) -> list[int]:
    try:
        names = json.loads((work / MANIFEST).read_text())["segments"]  # segment-00003.nut...
        return sorted(int(name.split("-")[1].split(".")[0]) for name in names)
    except (OSError, ValueError):
        return []  # not written yet (it is replaced atomically, so never half-written)


def wait_until(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str,
               timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the job ended (exit {proc.returncode}) before {what}: "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def running_ffmpegs(*tags: Path, also: str = "") -> list[int]:
    """Live (not zombie) ffmpeg processes whose command line mentions one of `tags` (and
    `also`), whoever their parent is now: an orphan is re-parented, so looking at the killed
    pid's children is not enough."""
    if not Path("/proc/self").is_dir():
        return _running_ffmpegs_ps(*tags, also=also)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if ("ffmpeg" in cmdline and any(str(t) in cmdline for t in tags)
                and also in cmdline and state not in ("Z", "X")):
            found.append(int(entry.name))
    return found


def described(pids: list[int]) -> list[str]:
    """Each process still there: pid, state, nice value and command line (from `ps`, on Linux
    and macOS alike), for a check on what is left and a failure's message."""
    if not pids:
        return []
    listing = subprocess.run(["ps", "-o", "pid=,stat=,nice=,command=", "-p",
                              ",".join(map(str, pids))], capture_output=True, text=True).stdout
    return [line.strip() for line in listing.splitlines() if line.strip()]


def _running_ffmpegs_ps(*tags: Path, also: str = "") -> list[int]:
    """running_ffmpegs where there is no /proc (macOS): from `ps`."""
    listing = subprocess.run(["ps", "-axo", "pid=,stat=,command="], capture_output=True,
                             text=True, check=True).stdout
    found = []
    for line in listing.splitlines():
        pid, state, cmdline = [*line.split(None, 2), "", ""][:3]
        if ("ffmpeg" in cmdline and any(str(t) in cmdline for t in tags)
                and also in cmdline and not state.startswith("Z")):
            found.append(int(pid))
    return found


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s with audio: 96 frames in 8 segments of 12 (small frames: the model's time is not
    what these tests are about)."""
    path = tmp_path_factory.mktemp("clips") / "ep.mkv"
    return make_clip(path, size="32x18", seconds=4.0, audio=True)


@pytest.fixture(scope="module")
def reference(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip upscaled in one uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "ref.mkv"
    done = upscale(out.parent, str(clip), "-o", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    return out


def assert_same_video(out: Path, ref: Path) -> None:
    a, b = probe(out), probe(ref)
    assert a.frame_count == b.frame_count
    assert [a.seconds(p) for p in a.frame_pts] == [b.seconds(p) for p in b.frame_pts]
    assert [(s.kind, s.codec) for s in a.streams] == [(s.kind, s.codec) for s in b.streams]
    assert (a.width, a.height, a.frame_rate) == (b.width, b.height, b.frame_rate)
    assert packet_checksums(out, "a:0") == packet_checksums(ref, "a:0")
    # The pixels too: the resumed run's segments decode to the uninterrupted run's frames.
    # Measured identical (inf dB): each segment is encoded alike whichever run made it.
    got, want = decoded_luma(out), decoded_luma(ref)
    assert got.shape == want.shape
    assert psnr(got, want, 255) == float("inf")


def decoded_luma(path: Path) -> np.ndarray:
    """Every frame's luma, (frames, height, width) uint8, decoded by ffmpeg."""
    info = probe(path)
    raw = subprocess.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map",
                          "0:v:0", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True, timeout=120).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width)


@pytest.mark.slow
def test_killed_job_resumes_from_its_last_finished_segment(clip: Path, reference: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    work = work_dir(out)
    args = (str(clip), "-o", str(out), *FAST)
    proc = start(tmp_path, *args)
    wait_until(proc, lambda: finished_segments(work) >= 4, "4 segments were finished")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # Its ffmpeg processes end too: the decoder on its broken pipe, the encoder at the end of
    # its input, anything started from the main thread by the parent-death signal. The
    # encoder first flushes its partial segment at the lowest CPU priority (writer.py), which
    # on a machine busy with other work (the other test worker) can take seconds: after 10 s
    # only encoders may be left, and they get a minute.
    for seconds, allowed in ((10, "pipe:0"), (60, None)):
        deadline = time.monotonic() + seconds
        while running_ffmpegs(tmp_path, clip) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = described(running_ffmpegs(tmp_path, clip))
        assert all(allowed and allowed in line for line in left), left
    assert not out.exists()
    done = finished_indices(work)
    kept = len(done)
    assert 4 <= kept < SEGMENTS
    # Each segment has an encoder of its own, and the one before may still be flushing when
    # the next finishes: the first segment missing is not always the one after the last.
    first_missing = min(set(range(SEGMENTS)) - set(done))

    again = upscale(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    resumed = RESUMING.search(again.stderr)
    assert resumed, again.stderr
    assert resumed.groups() == ("out.mkv", str(kept), str(SEGMENTS), str(first_missing + 1))
    work_done = WORK_DONE.search(again.stderr)
    assert work_done, again.stderr
    # The model ran only on the frames of the segments that were missing.
    assert (int(work_done[2]), int(work_done[3])) == (12 * (SEGMENTS - kept), 12 * kept)
    assert_same_video(out, reference)
    assert not work.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "bars"), [
    (signal.SIGINT, 130, False), (signal.SIGTERM, 143, False),
    (signal.SIGINT, 130, True),  # with the progress bar drawn: the message on a line of its own
])
def test_ctrl_c_and_sigterm_stop_at_once_and_keep_segments(clip: Path, tmp_path: Path,
                                                           sig: int, code: int,
                                                           bars: bool) -> None:
    out = tmp_path / "out.mkv"
    work = work_dir(out)
    options = [option for option in FAST if not (bars and option == "--quiet")]
    proc = start(tmp_path, str(clip), "-o", str(out), *options)
    # With ffmpegs still running (the decoder, which reads the whole of this small clip
    # early, or a segment's encoder, which writes beside `out`): the signal must end them.
    wait_until(proc, lambda: finished_segments(work) >= 2
               and bool(running_ffmpegs(tmp_path, clip)), "2 segments were finished")
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == code, err
    assert took < 2.0
    assert running_ffmpegs(tmp_path, clip) == []
    kept = finished_segments(work)
    assert err.replace("\r", "\n").strip().splitlines()[-1] == (
        f"upscale: interrupted: {kept} of {SEGMENTS} segments kept in {work}; run the same "
        "command again to resume (--no-resume starts over)")
    assert kept >= 2 and not out.exists()


@pytest.mark.slow
def test_ctrl_c_during_a_long_model_call_still_stops_within_2_s(tmp_path: Path) -> None:
    """A model call runs in native code and cannot be cut short (here a whole 640x360 frame,
    seconds on a CPU); the job stops around it and the process ends regardless."""
    src = make_clip(tmp_path / "big.mkv", size="640x360", seconds=0.5)
    proc = start(tmp_path, str(src), "-o", str(tmp_path / "out.mkv"), *FAST, "--tile", "0")
    # The decoder, which sends frames to the model (probing reads the file too, but not so).
    wait_until(proc, lambda: bool(running_ffmpegs(src, also="pipe:1")), "decoding began")
    time.sleep(0.5)  # the first frame is in the model by now
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 2.0
    assert running_ffmpegs(tmp_path) == []
    assert err.strip().splitlines()[-1] == "upscale: interrupted: no segment was finished"
    assert not work_dir(tmp_path / "out.mkv").exists()


def test_a_source_replaced_while_it_is_upscaled_gives_no_output(
        clip: Path, tmp_path: Path) -> None:
    """The join took the sound from the source as it was then: a file replaced during the job
    gave the old file's pictures with the new one's sound, exit 0 and not a word."""
    src = tmp_path / "src.mkv"
    shutil.copy(clip, src)
    other = make_clip(tmp_path / "other.mkv", size="32x18", seconds=2.5, audio=True)
    out = tmp_path / "out.mkv"
    proc = start(tmp_path, str(src), "-o", str(out), *FAST)
    wait_until(proc, lambda: finished_segments(work_dir(out)) >= 1, "a segment was finished")
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        os.replace(other, src)  # as a download or a copy would put a new version there
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 5, err
    assert err.strip().splitlines()[-1] == (
        f"upscale: error: {src}: changed while it was upscaled (its size or time is not what it "
        "was when the job began): no output written, since its sound would come from the new "
        "file; the same command upscales it as it is now")
    assert not out.exists() and not work_dir(out).exists()


def test_a_job_that_cannot_fit_is_refused_before_any_work(
        clip: Path, small_disk: Callable[[str], Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    disk = small_disk("128k")
    out = disk / "out.mkv"
    assert main([str(clip), "-o", str(out), *FAST]) == 5
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"upscale: error: {out}: not enough disk space: the job needs about [\d.]+ KiB "
        rf"\([\d.]+ KiB of segments and [\d.]+ KiB of output\) and {disk} has [\d.]+ KiB free; "
        r"free some space, or put the segments on another disk with --work-dir\n", err), err
    assert list(disk.iterdir()) == []
    # Segments on another disk: --work-dir cannot help the output (it was advised, and "the
    # output need" said); and the other way round. The job needs about 35 KiB of segments
    # and 101 KiB of output.
    roomy, smaller, tiny = small_disk("64m"), small_disk("64k"), small_disk("16k")
    out = smaller / "out.mkv"
    assert main([str(clip), "-o", str(out), *FAST, "--work-dir", str(roomy)]) == 5
    assert re.fullmatch(
        rf"upscale: error: {out}: not enough disk space: the output needs about [\d.]+ KiB "
        rf"and {smaller} has [\d.]+ KiB free; free some space, or write it to another disk\n",
        capsys.readouterr().err)
    assert main([str(clip), "-o", str(roomy / "out.mkv"), *FAST, "--work-dir", str(tiny)]) == 5
    assert re.fullmatch(
        rf"upscale: error: {roomy / 'out.mkv'}: not enough disk space: the segments need about "
        rf"[\d.]+ KiB and {tiny}/out.mkv-\w+.segments has [\d.]+ KiB free; free some space, or "
        r"put the segments on another disk with --work-dir\n", capsys.readouterr().err)


def test_the_steps_before_the_first_frame_have_bars(
        clip: Path, small_disk: Callable[[str], Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoding pass (2 minutes for an episode) and the disk space trial (25 s for a 4K
    output) went by with nothing on the screen; each has a bar of its own now, in frames."""
    from upscaler import cli

    monkeypatch.setattr(cli, "LOGGED_INTERVAL", 0.0)  # every update drawn
    out = small_disk("128k") / "out.mkv"
    assert main([str(clip), "-o", str(out), *FAST[:2], *SEGMENT]) == 5
    err = capsys.readouterr().err
    for step, frames in (("checking", 96), ("estimating the output's size", 48)):
        draws = re.findall(rf"ep\.mkv, {step}: +(\d+)%\|[^|]*\| (\d+)/{frames} ", err)
        assert draws[0] == ("0", "0") and draws[-1] == ("100", str(frames)), (step, err)
        assert any(0 < int(percent) < 100 for percent, _ in draws), (step, err)
    assert err.index(", checking:") < err.index(", estimating") < err.index("not enough disk")


@pytest.mark.slow
def test_a_disk_that_fills_mid_job_keeps_the_finished_segments(
        clip: Path, reference: Path, small_disk: Callable[[str], Path]) -> None:
    disk = small_disk("2m")
    out = disk / "out.mkv"
    work = work_dir(out)
    args = (str(clip), "-o", str(out), *FAST)
    proc = start(disk, *args)
    wait_until(proc, lambda: finished_segments(work) >= 3, "3 segments were finished")
    filler = disk / "filler"
    # Another program takes the rest of the disk.
    with open(filler, "wb") as f, pytest.raises(OSError, match="No space left"):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err
    kept = finished_segments(work)
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"upscale: error: disk full while writing {work}/\S+: {kept} of "
                        rf"{SEGMENTS} segments kept for resume in {work}", line), err
    assert kept >= 3 and not out.exists()

    filler.unlink()
    again = upscale(disk, *args)
    assert again.returncode == 0, again.stderr
    assert f"resuming out.mkv: {kept} of {SEGMENTS} segments done" in again.stderr
    assert_same_video(out, reference)
    assert sorted(p.name for p in disk.iterdir()) == ["out.mkv"]


def test_an_output_that_appears_before_the_join_keeps_the_segments_and_says_how_to_finish(
        clip: Path, reference: Path, tmp_path: Path) -> None:
    """The job refuses to replace it (exit 6) and keeps its segments; it said "run the same
    command again to resume", which then skipped the output that was there and never named
    the segments again."""
    out = tmp_path / "out.mkv"
    work = work_dir(out)
    args = (str(clip), "-o", str(out), *FAST)
    proc = start(tmp_path, *args)
    wait_until(proc, lambda: finished_segments(work) >= 1, "a segment was finished")
    out.write_bytes(b"saved meanwhile")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 6, err
    assert err.strip().splitlines() == [
        f"upscale: error: {out}: appeared while encoding; not replaced ({SEGMENTS} of "
        f"{SEGMENTS} segments kept in {work}; move that file away, or add --overwrite, and "
        "run the same command again to finish)"]
    assert out.read_bytes() == b"saved meanwhile"
    again = upscale(tmp_path, *args)
    assert again.returncode == 0
    assert again.stderr.strip().splitlines() == [
        f"upscale: {out}: exists, skipped (--overwrite redoes it; an earlier run's segments "
        f"wait in {work})"]
    out.rename(tmp_path / "theirs.mkv")
    again = upscale(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    work_done = WORK_DONE.search(again.stderr)
    assert work_done and work_done.groups()[1:] == ("0", str(12 * SEGMENTS))  # all reused
    assert_same_video(out, reference)
    assert not work.exists()


def test_a_second_run_into_the_same_output_is_refused_whatever_its_work_folder(
        clip: Path, tmp_path: Path) -> None:
    """Each run locked its own work folder only: a second one with another --work-dir
    upscaled the whole video beside the first, to find the first's output at its join."""
    out = tmp_path / "out.mkv"
    first = start(tmp_path, str(clip), "-o", str(out), *FAST)
    wait_until(first, lambda: finished_segments(work_dir(out)) >= 1, "a segment was finished")
    # Held where it is: on a busy machine it could otherwise finish before the second starts.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = upscale(tmp_path, str(clip), "-o", str(tmp_path / "sub" / ".." / "out.mkv"),
                         *FAST, "--work-dir", str(tmp_path / "elsewhere"))
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert (second.returncode, second.stderr.strip()) == (
        5, f"upscale: error: {tmp_path / 'sub' / '..' / 'out.mkv'}: another upscale is writing "
           "this output")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert probe(out).frame_count == 12 * SEGMENTS
