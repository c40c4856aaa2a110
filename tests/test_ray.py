"""--ray: video segments and image files as Ray tasks on a local Ray the tests start.

One Ray for the module (starting it costs seconds), with two CPUs. Runs go through the CLI on
real clips, the real model and ffmpeg, and are compared with local runs of the same command.
A worker that dies is a real process ending mid-segment (the UPSCALER_RAY_CRASHES hook ends
it), a driver that dies is the CLI subprocess killed with SIGKILL.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from clips import decode_all, make_clip, packet_checksums
from conftest import INSTANT_MODEL, ROOT
from draw import draw_cel
from PIL import Image
from test_video_resume import (
    RESUMING,
    WORK_DONE,
    finished_segments,
    start,
    wait_until,
)
from test_writes import assert_stopped_at_a_full_disk, noise_pictures

from upscaler.cli import main
from upscaler.config import RaySettings, load_jobs, load_ray_settings
from upscaler.job.resume import work_dir
from upscaler.media.video.probe import probe
from upscaler.ray_runner import CRASHES, MAX_RETRIES

FAST = ["--model", "realesr-animevideov3", "--quiet", "--segment-seconds", "0.5"]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray with 2 CPUs for the module; its workers get the crash hook's folder."""
    ray = pytest.importorskip("ray")
    crashes = tmp_path_factory.mktemp("crashes")
    mp = pytest.MonkeyPatch()
    mp.setenv(CRASHES, str(crashes))  # workers inherit the environment Ray starts with
    sigterm = signal.getsignal(signal.SIGTERM)  # which ray.init replaces with its own
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["address"]
    ray.shutdown()
    signal.signal(signal.SIGTERM, sigterm)
    mp.undo()


@pytest.fixture
def crashes(ray_address: str) -> Iterator[Path]:
    """The hook's folder: each file put there ends one segment task's worker."""
    folder = Path(os.environ[CRASHES])
    yield folder
    for token in folder.iterdir():
        token.unlink()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s with audio and subtitles: 72 frames in 6 segments of 12, small."""
    return make_clip(tmp_path_factory.mktemp("clips") / "ep.mkv", size="32x18", seconds=3.0,
                     audio=True, subtitles=True)


@pytest.fixture(scope="module")
def local(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip upscaled on this machine alone."""
    out = tmp_path_factory.mktemp("local") / "local.mkv"
    assert main([str(clip), "-o", str(out), *FAST]) == 0
    return out


def assert_same_video(out: Path, ref: Path) -> None:
    """Frames, timestamps and streams as in `ref`; the encoder is deterministic here, so the
    pictures are too."""
    a, b = probe(out), probe(ref)
    assert a.frame_count == b.frame_count == 72
    assert [a.seconds(p) for p in a.frame_pts] == [b.seconds(p) for p in b.frame_pts]
    assert [(s.kind, s.codec) for s in a.streams] == [(s.kind, s.codec) for s in b.streams]
    for spec in ("a:0", "s:0"):
        assert packet_checksums(out, spec) == packet_checksums(ref, spec)
    for x, y in zip(decode_all(out), decode_all(ref), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_segments_on_ray_give_the_local_output(clip: Path, local: Path, tmp_path: Path,
                                               ray_address: str) -> None:
    out = tmp_path / "ray.mkv"
    assert main([str(clip), "-o", str(out), *FAST, "--ray"]) == 0
    assert_same_video(out, local)
    assert not work_dir(out).exists()


@pytest.mark.slow
def test_a_worker_killed_mid_segment_is_retried(clip: Path, local: Path, tmp_path: Path,
                                                crashes: Path) -> None:
    (crashes / "once").touch()
    out = tmp_path / "ray.mkv"
    assert main([str(clip), "-o", str(out), *FAST, "--ray"]) == 0
    assert not any(crashes.iterdir()), "no worker was killed"
    assert_same_video(out, local)


@pytest.mark.slow
@pytest.mark.parametrize("first", ["ray", "local"])
def test_a_killed_driver_resumes_on_ray(first: str, clip: Path, local: Path, tmp_path: Path,
                                        ray_address: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mkv"
    args = [str(clip), "-o", str(out), *FAST]
    # One segment at a time, so that the kill comes while most are left.
    on_ray = ["--ray", ray_address, "--ray-workers", "1"] if first == "ray" else []
    proc = start(tmp_path, *args, *on_ray)
    wait_until(proc, lambda: finished_segments(work_dir(out)) >= 1, "a segment was finished")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    kept = finished_segments(work_dir(out))
    assert 1 <= kept < 6

    assert main([*args, "--ray"]) == 0
    log = capsys.readouterr().err
    resumed = RESUMING.search(log)
    assert resumed, log
    assert int(resumed[2]) >= kept and resumed[3] == "6"
    work = WORK_DONE.search(log)
    assert work, log
    assert int(work[2]) == 72 - 12 * int(resumed[2]) and int(work[3]) == 12 * int(resumed[2])
    assert_same_video(out, local)


@pytest.mark.slow
def test_sigterm_stops_a_job_on_ray_and_keeps_its_segments(clip: Path, tmp_path: Path,
                                                           ray_address: str) -> None:
    out = tmp_path / "out.mkv"
    proc = start(tmp_path, str(clip), "-o", str(out), *FAST, "--ray", ray_address,
                 "--ray-workers", "1")
    wait_until(proc, lambda: finished_segments(work_dir(out)) >= 1, "a segment was finished")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    kept = finished_segments(work_dir(out))
    assert kept >= 1 and not out.exists()
    assert err.strip().splitlines()[-1] == (
        f"upscale: interrupted: {kept} of 6 segments kept in {work_dir(out)}; run the same "
        "command again to resume (--no-resume starts over)")


@pytest.mark.slow
def test_a_segment_that_keeps_failing_fails_its_job_and_the_batch_goes_on(
        clip: Path, tmp_path: Path, crashes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for n in range(MAX_RETRIES + 1):
        (crashes / f"crash{n}").touch()
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name, size in (("a.png", (40, 30)), ("b.png", (24, 36))):
        Image.open(ROOT / "samples" / "cel.png").convert("RGB").resize(size).save(
            pictures / name)
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"defaults: {{model: realesr-animevideov3, segment_seconds: 0.5}}\n"
                    f"ray: {{workers: 1}}\n"
                    f"jobs:\n  - {{input: {clip}, output: {tmp_path / 'out.mkv'}}}\n"
                    f"  - {{input: {pictures}, output: {tmp_path / 'big'}}}\n")
    assert main(["--config", str(jobs), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"error: {re.escape(str(jobs))}:4: segment 1 of \S*ep.mkv failed on each "
                     rf"of {MAX_RETRIES + 1} tries: .*(worker|died)", err), err
    assert "upscale: 2 done, 0 skipped, 1 failed" in err
    assert not (tmp_path / "out.mkv").exists()
    # The folder's images, made on Ray, are those of a local run.
    assert main([str(pictures), "-o", str(tmp_path / "here"), "--model",
                 "realesr-animevideov3", "--quiet"]) == 0
    for name in ("a.png", "b.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "big" / name)),
                                      np.asarray(Image.open(tmp_path / "here" / name)))


@pytest.mark.slow
def test_ray_none_starts_a_local_ray(clip: Path, local: Path, tmp_path: Path) -> None:
    """--help says `none` starts a local Ray; it was taken for an address ("Invalid address
    format: none", exit 1). In a process of its own, where no Ray runs yet."""
    pytest.importorskip("ray")
    out = tmp_path / "out.mkv"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "upscaler", str(clip), "-o", str(out),
                           *FAST, "--ray", "none"], capture_output=True, text=True,
                          check=False, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert_same_video(out, local)


def test_without_ray_the_option_says_how_to_install_it(clip: Path, tmp_path: Path) -> None:
    blocked = ("import sys; sys.modules['ray'] = None; from upscaler.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "out.mkv"
    done = subprocess.run([sys.executable, "-c", blocked, "--ray", str(clip), "-o", str(out)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        'upscale: error: --ray needs Ray, which is not installed: pip install "upscaler[ray]"']
    assert not out.exists() and not work_dir(out).exists()


def test_ray_settings_from_a_job_file_and_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("ray: {address: auto, workers: 8}\njobs:\n  - input: a.png\n")
    assert len(load_jobs(jobs)) == 1
    assert load_ray_settings(jobs) == RaySettings(address="auto", workers=8, cpus=1)
    jobs.write_text("ray:\n  adress: auto\njobs:\n  - input: a.png\n")
    assert main(["--config", str(jobs), "--ray"]) == 2
    assert "ray: unknown key 'adress'" in capsys.readouterr().err
    assert main([str(ROOT / "samples" / "cel.png"), "--ray-workers", "2"]) == 2
    assert "--ray-workers and --ray-cpus go with --ray" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_alone_starts_and_stops_a_local_ray_of_its_own(tmp_path: Path,
                                                           ray_address: str) -> None:
    """`upscale img --ray`, as on a laptop: a fresh process starts a local Ray of its own (its
    session folder appears under its RAY_TMPDIR), though `ray start` has left the address of
    another Ray (the module's) where ray.init would join it, runs the image on it as the local
    run does, and stops it."""
    src = tmp_path / "a.png"
    Image.fromarray(draw_cel(12, 16)).save(src)
    assert main([str(src), "-o", str(tmp_path / "local.png"), *FAST]) == 0
    # Short: Ray's socket paths under it must fit in 107 bytes.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["RAY_TMPDIR"] = str(ray_tmp)
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(ray_address)
        done = subprocess.run([sys.executable, "-m", "upscaler", str(src), "-o",
                               str(tmp_path / "ray.png"), *FAST, "--ray", "--ray-cpus", "1"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert list((ray_tmp / "ray").glob("session_2*")), "no local Ray was started"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    with Image.open(tmp_path / "ray.png") as ray, Image.open(tmp_path / "local.png") as local:
        assert ray.size == (64, 48)
        np.testing.assert_array_equal(np.asarray(ray), np.asarray(local))


def test_workers_start_with_one_heap_for_every_thread(ray_address: str) -> None:
    # Ray's own threads run in a worker before any of ours, so the heap settings that keep a
    # frame's buffers (heap.py) must be in its environment as it starts: set by our code in the
    # task, they would be too late for threads that allocated already.
    from upscaler.config import Options
    from upscaler.heap import environment
    from upscaler.ray_runner import RayRunner

    wanted = environment()
    with RayRunner(RaySettings(address=ray_address)) as runner:
        call = runner._call(lambda _options, names: {n: os.environ.get(n) for n in names},
                            Options(), list(wanted))
        ((_, seen),) = runner._each([call])
    assert seen == wanted


@pytest.mark.slow
def test_a_full_disk_ends_a_folder_on_ray_in_one_line(tmp_path: Path, ray_address: str,
                                                      small_disk: Callable[[str], Path],
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """As in a local run (test_writes.py): the workers' writes that find the disk full end the
    job with one line, the tasks still waiting are cancelled, no partial file is left."""
    src = tmp_path / "noise"
    noise_pictures(src, 12)
    out = small_disk("300k") / "out"
    assert main([str(src), "-o", str(out), *INSTANT_MODEL, "--ray", ray_address,
                 "--ray-workers", "2", "--quiet"]) == 5
    assert_stopped_at_a_full_disk(capsys.readouterr().err, out, 12)
